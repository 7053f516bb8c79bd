"""The Received header qmail-smtpd writes first in every message (spec 3.7).

    Received: from <remotehost> (HELO <helo>) (<remoteinfo>@<remoteip>)
      by <local> with <protocol>; <date>

``(HELO x)`` appears only when x differs (case-insensitively) from the remote host;
``<remoteinfo>@`` only when ident information is known.  Every inserted value has
each byte outside ``[A-Za-z0-9.@%+/=:-]`` replaced by ``?`` (qmail's safe_put),
which is also what keeps header injection out.
"""

from __future__ import annotations

import re
import time

_UNSAFE = re.compile(rb"[^A-Za-z0-9.@%+/=:\-]")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def safe(value: str) -> bytes:
    return _UNSAFE.sub(b"?", value.encode("utf-8", "surrogateescape"))


def qmail_date(when: float) -> str:
    """``26 Sep 1995 04:46:54 -0000``: always UTC, as qmail's date822fmt writes it."""
    t = time.gmtime(when)
    return (
        f"{t.tm_mday} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} -0000"
    )


def received_header(
    *,
    remotehost: str,
    helo: str | None,
    remoteip: str,
    local: str,
    when: float,
    remoteinfo: str | None = None,
    protocol: str = "SMTP",
) -> bytes:
    parts = [b"Received: from ", safe(remotehost)]
    if helo is not None and helo.lower() != remotehost.lower():
        parts += [b" (HELO ", safe(helo), b")"]
    parts.append(b" (")
    if remoteinfo:
        parts += [safe(remoteinfo), b"@"]
    parts += [safe(remoteip), b")\n  by ", safe(local), b" with ", protocol.encode("ascii")]
    parts += [b"; ", qmail_date(when).encode("ascii"), b"\n"]
    return b"".join(parts)
