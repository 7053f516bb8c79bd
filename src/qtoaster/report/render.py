"""``qtoaster report``'s text output (the JSON output is Summary.as_dict as is)."""

from __future__ import annotations

from typing import Any


def _share(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100 * part / whole:.0f}%)" if whole else f"{part}/0"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def render(d: dict[str, Any]) -> str:
    out = [
        "Grand totals",
        f"  received       {d['received']:>8}  ({d['received_bytes']} bytes)",
        f"  delivered      {d['delivered']:>8}",
        f"  failed         {d['failed']:>8}",
        f"  bounced        {d['bounced']:>8}",
        f"  deferred       {d['deferred_messages']:>8}  ({d['deferrals']} deferrals)",
        f"  rejected       {d['rejected']:>8}",
        "",
        f"Delays (queued to delivered): median {_seconds(d['delay_median'])},"
        f" 95th percentile {_seconds(d['delay_p95'])}",
        f"TLS: sessions {_share(d['tls_sessions'], d['sessions'])},"
        f" messages received {_share(d['tls_received'], d['received'])}",
    ]
    services = sorted(set(d["logins_ok"]) | set(d["logins_failed"]))
    logins = ", ".join(
        f"{s} {d['logins_ok'].get(s, 0)} ok / {d['logins_failed'].get(s, 0)} failed"
        for s in services
    )
    out.append(f"Logins: {logins or 'none'}")
    out += ["", "Rejected by reason"]
    out += [f"  {r['count']:>8}  {r['reason']} ({r['code']})" for r in d["rejected_by_reason"]]
    for title, key in (
        ("Top senders", "top_senders"),
        ("Top recipients", "top_recipients"),
        ("Top client addresses", "top_clients"),
    ):
        out += ["", title]
        out += [f"  {p['count']:>8}  {p['name']}" for p in d[key]]
    out += ["", f"Lines read: {d['lines']}, not understood (skipped): {d['unparsed']}"]
    return "\n".join(out) + "\n"
