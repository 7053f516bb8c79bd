"""Sans-IO protocol engines (SMTP server and client, POP3 server, SASL): bytes in, events out.

They import no asyncio, socket, ssl, os or time (``tests/test_sansio_imports.py`` checks).
"""
