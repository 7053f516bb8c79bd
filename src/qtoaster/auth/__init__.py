"""qtoaster.auth: what SMTP AUTH and POP3 login share beyond the wire protocol.

``throttle`` slows brute force across connections; ``verify`` checks what a SASL exchange
(protocols.sasl) or a POP3 command proved against the directory.
"""
