"""The send role (qmail-send with qmail-lspawn and qmail-rspawn): deliveries from the queue.

One job per module (docs/queue.md, "The send role"): :mod:`.manager` wires the others;
:mod:`.loader` reads the queue into :mod:`.entry` jobs; :mod:`.scheduler` says what is due;
:mod:`.trigger` reads the FIFO; :mod:`.lane` is the one interface of :mod:`.locallane` and
:mod:`.remotelane` (whose agent, :mod:`.remoteclient`, is the remote delivery process
the role starts); :mod:`.results` makes results final and durable; :mod:`.bouncer`
injects bounces written by :mod:`.bounce` (QSBMF) or :mod:`.dsn` (RFC 3464); :mod:`.role`
assembles the role.  It reads only the queue (``queue/``) and hands each recipient to an
agent (``delivery/``, ``remote/``).
"""
