"""TLS without sockets: server SSL contexts from qmail's control files (``server``),
certificates and keys (``certs``).  The listeners in ``net/`` wrap streams with them.
"""
