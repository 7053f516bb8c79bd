"""qtoaster.remote: where remote mail goes (control/smtproutes, MX and address lookups).

`routes` is pure (parse and look up smtproutes); `dns` asks DNS for mail hosts and
their addresses with qmail-remote's error texts; `ipme` lists this machine's addresses.
`agent` and `session` speak SMTP to them; `child` runs the agent in the remote delivery
process, which the send role reaches through `channel` (the frames, sans-IO) and `link`
(frames and descriptors on a Unix socket).
"""
