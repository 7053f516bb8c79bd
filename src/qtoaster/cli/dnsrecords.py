"""What a hosted domain must publish in DNS, computed from the home (docs/dns.md): shared
by ``qtoaster dns records`` / ``check`` (cli/dns.py) and the http role's executor
(``GET /api/v1/domains/DOMAIN/dns``, cli/adminops.py).

Invariants: nothing here prints or exits; a domain this home does not host is the caller's
to refuse (:func:`hosted`); the DKIM records are those of every key in ``HOME/dkim/``,
pending, active and retiring (a retiring key stays published through its grace period).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from qtoaster.config.loader import Config
from qtoaster.core.home import Home
from qtoaster.mailauth.dkimkeys import dkim_dir, load_keys
from qtoaster.mailauth.records import DkimRecord, Published, build_records


def dkim_records(home: Home, domain: str) -> list[DkimRecord]:
    """The DKIM keys of *domain* to publish: pending, active and retiring ones (a retiring
    key stays published through its grace period, docs/dkim.md)."""
    keys = load_keys(dkim_dir(home.root), domain)
    return [DkimRecord(key.record_name(), key.txt(), str(key.state)) for key in keys]


def hosted(config: Config, in_directory: Callable[[str], bool], domain: str) -> bool:
    """*domain* (lowercase, no final dot) is in control/locals, control/virtualdomains or
    else the directory (``in_directory``, asked only then)."""
    controls = config.controls
    if domain in controls.locals or domain in controls.virtualdomains:
        return True
    return in_directory(domain)


def published(home: Home, config: Config, domain: str) -> tuple[Published, list[DkimRecord]]:
    """Every record *domain* should publish, and its DKIM keys' records among them."""
    settings = config.settings
    host = settings.publish.host or config.controls.me
    # a listener on loopback serves this machine only: nothing to tell the world about
    listeners = [
        (str(listener.kind), listener.port)
        for listener in settings.listeners
        if not ipaddress.ip_address(listener.host).is_loopback
    ]
    dkim = dkim_records(home, domain)
    found = build_records(
        domain, host, settings.publish.addresses, dkim, listeners, settings.publish
    )
    return found, dkim


def published_json(found: Published) -> dict[str, Any]:
    """The API's shape: ``records`` as ``{name, type, value, ttl, section}`` (a TXT value
    unsplit, names absolute), the MTA-STS policy text, and the notes of what was left out."""
    return {
        "domain": found.domain,
        "host": found.host,
        "records": [
            {
                "name": record.name,
                "type": record.type,
                "value": record.data,
                "ttl": record.ttl,
                "section": section.title,
            }
            for section in found.sections
            for record in section.records
        ],
        "mta_sts_policy": found.mta_sts_policy,
        "notes": list(found.notes),
    }
