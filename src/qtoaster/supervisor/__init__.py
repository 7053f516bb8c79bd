"""The supervisor (``qtoaster run``): binds the listeners, starts and restarts the roles.

:mod:`.runner` is the process tree (bind, spawn, restart, pass on SIGTERM and SIGHUP);
:mod:`.check` is the whole-home configuration check it runs before starting anything,
which ``qtoaster config check`` prints.  It reads no network input.
"""
