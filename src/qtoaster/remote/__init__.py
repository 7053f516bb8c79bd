"""qtoaster.remote: where remote mail goes (control/smtproutes, MX and address lookups).

`routes` is pure (parse and look up smtproutes); `dns` asks DNS for mail hosts and
their addresses with qmail-remote's error texts; `ipme` lists this machine's addresses.
"""
