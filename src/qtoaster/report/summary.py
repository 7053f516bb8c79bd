"""The figures of ``qtoaster report``, summed over parsed log lines (pflogsumm's and
qmailanalog's, from the events of docs/logging.md).

- received: ``accepted`` lines (one per message queued by smtpd);
- delivered / failed / deferred: ``delivery`` lines by ``result`` (one per recipient and
  attempt); deferred messages: distinct ``msg`` with a deferral;
- bounced: ``bounce`` lines (one per bounce message made);
- rejected: ``refused`` lines, by ``reason`` (the check) and ``code``;
- delays: ``delay`` of successful deliveries (seconds from queued to delivered);
- TLS share: ``session.close`` and ``accepted`` lines with a ``tls`` field;
- logins: ``login.ok`` / ``login.failed`` by ``service``.

A line is *unparsed* when it is no log line of ours, or when an event this summary
reads lacks the fields it needs; it is counted and skipped.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from qtoaster.report.parse import Line, parse_line

_NEEDS = {
    "accepted": ("msg",),
    "delivery": ("msg", "to", "result"),
    "refused": ("reason",),
    "bounce": ("msg",),
    "login.ok": ("service",),
    "login.failed": ("service",),
}


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile of an ascending list (None if empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class Summary:
    since: datetime | None = None
    until: datetime | None = None
    lines: int = 0
    unparsed: int = 0
    received: int = 0
    received_bytes: int = 0
    delivered: int = 0
    failed: int = 0
    deferrals: int = 0
    bounced: int = 0
    deferred_msgs: set[str] = field(default_factory=set)
    rejected: Counter[tuple[str, str]] = field(default_factory=Counter)
    senders: Counter[str] = field(default_factory=Counter)
    recipients: Counter[str] = field(default_factory=Counter)
    clients: Counter[str] = field(default_factory=Counter)
    delays: list[float] = field(default_factory=list)
    sessions: int = 0
    tls_sessions: int = 0
    tls_received: int = 0
    logins_ok: Counter[str] = field(default_factory=Counter)
    logins_failed: Counter[str] = field(default_factory=Counter)

    def wants(self, line: Line) -> bool:
        """In the time range (a line without time, journald's, always is)."""
        if line.time is None:
            return True
        when = line.time
        if self.since is not None and when < self.since:
            return False
        return self.until is None or when < self.until

    def add_text(self, text: str) -> None:
        self.lines += 1
        line = parse_line(text)
        if line is None or any(k not in line.fields for k in _NEEDS.get(line.event, ())):
            self.unparsed += 1
            return
        if self.wants(line):
            self.add(line)

    def add(self, line: Line) -> None:
        f = line.fields
        event = line.event
        if event == "accepted":
            self.received += 1
            self.received_bytes += _int(f.get("size"))
            self.senders[f.get("sender") or "<>"] += 1
            self.clients[f.get("client", "?")] += 1
            self.tls_received += "tls" in f
        elif event == "delivery":
            result = f["result"]
            if result == "success":
                self.delivered += 1
                self.recipients[f["to"]] += 1
                delay = _float(f.get("delay"))
                if delay is not None:
                    self.delays.append(delay)
            elif result == "failure":
                self.failed += 1
            elif result == "deferral":
                self.deferrals += 1
                self.deferred_msgs.add(f["msg"])
        elif event == "bounce":
            self.bounced += 1
        elif event == "refused":
            self.rejected[(f["reason"], f.get("code", "-"))] += 1
        elif event == "session.close":
            self.sessions += 1
            self.tls_sessions += "tls" in f
        elif event == "login.ok":
            self.logins_ok[f["service"]] += 1
        elif event == "login.failed":
            self.logins_failed[f["service"]] += 1

    def as_dict(self, top: int) -> dict[str, Any]:
        delays = sorted(self.delays)
        return {
            "lines": self.lines,
            "unparsed": self.unparsed,
            "received": self.received,
            "received_bytes": self.received_bytes,
            "delivered": self.delivered,
            "failed": self.failed,
            "bounced": self.bounced,
            "deferrals": self.deferrals,
            "deferred_messages": len(self.deferred_msgs),
            "rejected": sum(self.rejected.values()),
            "rejected_by_reason": [
                {"reason": r, "code": c, "count": n} for (r, c), n in _top(self.rejected, None)
            ],
            "top_senders": _pairs(self.senders, top),
            "top_recipients": _pairs(self.recipients, top),
            "top_clients": _pairs(self.clients, top),
            "delay_median": percentile(delays, 0.5),
            "delay_p95": percentile(delays, 0.95),
            "sessions": self.sessions,
            "tls_sessions": self.tls_sessions,
            "tls_received": self.tls_received,
            "logins_ok": dict(sorted(self.logins_ok.items())),
            "logins_failed": dict(sorted(self.logins_failed.items())),
        }


def _top(counter: Counter[Any], n: int | None) -> list[tuple[Any, int]]:
    """Most common first, ties in name order (a stable report)."""
    return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def _pairs(counter: Counter[str], n: int) -> list[dict[str, Any]]:
    return [{"name": k, "count": v} for k, v in _top(counter, n)]


def _int(text: str | None) -> int:
    return int(text) if text is not None and text.isdigit() else 0


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None
