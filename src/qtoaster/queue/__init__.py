"""The durable queue: the on-disk contract between smtpd (commit) and send (deliver).

``store`` commits and recovers messages, ``format`` and ``state`` are the files on disk,
``schedule`` is qmail's retry schedule (pure), ``exitcodes`` qmail-queue's exit codes.
See docs/queue.md for every on-disk state and its crash clean-up.
"""
