"""The command line (``qtoaster ...``): thin commands over the same APIs the roles use.

The top layer: it may import every package; nothing imports it but ``__main__``.
"""
