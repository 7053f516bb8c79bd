"""The send role (qmail-send with qmail-lspawn and qmail-rspawn): deliveries from the queue.

:mod:`.manager` schedules what is on disk, :mod:`.lspawn` and :mod:`.remote` are the local
and remote delivery lanes, :mod:`.bounce` and :mod:`.dsn` write bounces.  It reads only the
queue (``queue/``) and hands each recipient to an agent (``delivery/``, ``remote/``).
"""
