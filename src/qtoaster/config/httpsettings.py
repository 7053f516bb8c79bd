"""[http] and [listen] http of qtoaster.toml: the http role (docs/http.md).

``[listen] http`` is one address (a bare ``PORT`` means 127.0.0.1, as for metrics);
``[http] admins`` are the addresses whose password login is a site administrator's;
``[http] plain = true`` serves plain HTTP instead of HTTPS, refused unless the listener
is on loopback (a password must not cross a network in clear).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from qtoaster.config.tables import Tables, is_bool


@dataclass(frozen=True, slots=True)
class HttpSettings:
    admins: tuple[str, ...] = ()
    plain: bool = False


def _is_admins(value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(v, str) and "@" in v for v in value):
        return 'must be a list of addresses, e.g. ["postmaster@example.com"]'
    return None


def http_settings(tables: Tables) -> HttpSettings:
    admins = tables.get("http", "admins", _is_admins, [])
    return HttpSettings(
        admins=tuple(a.lower() for a in admins),
        plain=tables.get("http", "plain", is_bool, False),
    )


def plain_allowed(host: str) -> bool:
    """Plain HTTP only on a loopback address."""
    return ipaddress.ip_address(host).is_loopback
