"""The http role's DKIM and DNS operations (docs/http.md), run by its executor
(cli/adminops.py registers them): the code of ``qtoaster dkim`` (mailauth.dkimkeys) and
``qtoaster dns records`` (cli/dnsrecords.py), answered as JSON.

The executor runs them as root because the private keys under ``HOME/dkim/`` are the
send role's alone (0700): the http role never reads them, it only sees the public half
in the TXT records these answers carry.

Invariants: a domain this home does not host is a 404 before anything is read or
written; a refused selector or algorithm is a 422, a selector in use a 409, a key that
is not there a 404; a key made here is written exactly as ``qtoaster dkim keygen`` writes
it (the executor then gives ``dkim/`` its owner, the send role's user).
"""

from __future__ import annotations

import time
from typing import Any

from qtoaster.cli.dkim import RELOAD, zone_record
from qtoaster.cli.dnsrecords import hosted, published, published_json
from qtoaster.config.loader import load_config
from qtoaster.config.settings import load_settings
from qtoaster.core.errors import ConfigError
from qtoaster.core.home import Home
from qtoaster.directory.store import Directory
from qtoaster.httpd.channel import OpError
from qtoaster.mailauth import dkimkeys
from qtoaster.mailauth.dkimkeys import DkimKey, KeyStoreError


def key_json(key: DkimKey) -> dict[str, Any]:
    """One key as ``qtoaster dkim list`` and ``show`` give it, with its record."""
    return {
        "selector": key.selector,
        "algorithm": key.algorithm,
        "state": key.state,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(key.created)),
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(key.since)),
        "record": {"name": key.record_name(), "type": "TXT", "value": key.txt()},
        "zone": zone_record(key),
    }


def _domain(directory: Directory, name: str) -> str:
    """The hosted domain's name, lowercased (as ``qtoaster dkim keygen``: an alias domain
    counts, it signs with its own keys); 404 otherwise."""
    try:
        domain = dkimkeys.check_domain(name)
    except ConfigError as exc:
        raise OpError(404, str(exc)) from None
    if directory.domain(domain) is None:
        raise OpError(404, f"unknown domain: {domain}")
    return domain


def dkim_list(home: Home, directory: Directory, name: str) -> dict[str, Any]:
    domain = _domain(directory, name)
    keys = dkimkeys.load_keys(dkimkeys.dkim_dir(home.root), domain)
    return {"domain": domain, "keys": [key_json(key) for key in keys]}


def dkim_add(home: Home, directory: Directory, name: str, args: dict[str, Any]) -> Any:
    """New keys as ``qtoaster dkim keygen DOMAIN [--algorithm A] [--selector S]
    [--active]``: ``algorithm`` absent makes one of each of ``[dkim] algorithms``."""
    domain = _domain(directory, name)
    algorithm, selector, active = args.get("algorithm"), args.get("selector"), args.get("active")
    if algorithm is not None and algorithm not in dkimkeys.ALGORITHMS:
        raise OpError(422, "algorithm: rsa or ed25519")
    if selector is not None and not isinstance(selector, str):
        raise OpError(422, "selector: a string")
    if active is not None and not isinstance(active, bool):
        raise OpError(422, "active: true or false")
    if algorithm is None:
        algorithms = list(load_settings(home.settings_file).dkim.algorithms)
    else:
        algorithms = [algorithm]
    try:
        made = dkimkeys.keygen(
            dkimkeys.dkim_dir(home.root), domain, algorithms, selector, active=bool(active)
        )
    except ConfigError as exc:
        status = 409 if "already has" in str(exc) else 422
        raise OpError(status, str(exc)) from None
    answer: dict[str, Any] = {"domain": domain, "keys": [key_json(key) for key in made]}
    if active:
        answer["note"] = RELOAD
    return answer


def dkim_delete(home: Home, directory: Directory, name: str, selector: str) -> Any:
    """As ``qtoaster dkim delete DOMAIN SELECTOR``: the key's state entry, then its file."""
    domain = _domain(directory, name)
    try:
        key = dkimkeys.delete(dkimkeys.dkim_dir(home.root), domain, selector)
    except ConfigError as exc:
        raise OpError(422, str(exc)) from None
    except KeyStoreError as exc:
        raise OpError(404 if "has no key" in str(exc) else 503, str(exc)) from None
    answer: dict[str, Any] = {"domain": domain, "deleted": key_json(key)}
    if key.state == "active":
        answer["note"] = RELOAD
    return answer


def dns_records(home: Home, directory: Directory, name: str) -> Any:
    """As ``qtoaster dns records DOMAIN``, one JSON object per record."""
    domain = name.rstrip(".").lower()
    config = load_config(home)
    if not domain or not hosted(config, directory.hosts_domain, domain):
        raise OpError(404, f"{domain or '(empty)'} is not hosted here")
    found, _dkim = published(home, config, domain)
    return published_json(found)
