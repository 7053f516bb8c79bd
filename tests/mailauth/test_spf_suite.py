"""The RFC 7208 test suite (tests/data/README.rfc7208.md) through our SPF adapter: each
case's zone data served by a lookup function in pyspf's form, as pyspf's own runner
(test/testspf.py) serves it."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import spf as pyspf

from qtoaster.mailauth.spf import spf_query

SUITE = json.loads((Path(__file__).parent.parent / "data" / "rfc7208-tests.json").read_text())


def _records(rrs: list[Any], name: str) -> list[Any]:
    """The zone entries of ``name`` as (type, value, name), or "TIMEOUT" (testspf.py's
    getrdata: an SPF record also serves as TXT when no TXT is given)."""
    out: list[Any] = []
    txt: list[Any] = []
    generated = True
    for rr in rrs:
        if not isinstance(rr, dict):
            out.append(rr)
            continue
        for rtype, value in rr.items():
            if rtype in ("TXT", "SPF") and isinstance(value, str):
                value = (value,)
            if rtype == "TXT":
                generated = False
            elif rtype == "SPF" and generated:
                txt.append(("TXT", value, name))
            if value != ("NONE",) and value != ["NONE"]:
                out.append((rtype, tuple(value) if isinstance(value, list) else value, name))
    return out + (txt if generated else [])


def _zone(scenario: dict[str, Any]) -> dict[str, list[Any]]:
    return {name.lower(): _records(rrs, name) for name, rrs in scenario["zonedata"].items()}


def _lookup(zone: dict[str, list[Any]]):  # type: ignore[no-untyped-def]
    def lookup(
        name: str, qtype: str, strict: object = True, timeout: object = None, level: int = 0
    ) -> Iterator[tuple[tuple[str, str], Any]]:
        labels = []
        for label in name.split("."):
            if label:
                if len(label) > 63:
                    raise pyspf.TempError("DNS label too long")
                labels.append(label)
        name = ".".join(labels)
        if name.lower() not in zone:
            if name.startswith("error."):
                raise pyspf.TempError("DNS timeout")
            return
        timeout_seen = True
        for entry in zone[name.lower()]:
            if entry == "TIMEOUT":
                if timeout_seen:
                    raise pyspf.TempError("DNS timeout")
                return
            rtype, value, owner = entry
            if rtype == qtype:
                timeout_seen = False
            if value == "TIMEOUT":
                if rtype == qtype:
                    raise pyspf.TempError("DNS timeout")
                continue
            if rtype == "AAAA":
                value = socket.inet_pton(socket.AF_INET6, value)
            elif rtype in ("TXT", "SPF"):
                value = tuple(s.encode("utf-8") for s in value)
            elif rtype == "MX":
                value = tuple(value)
            yield ((owner, rtype), value)
            if not level and rtype == "CNAME":
                yield from lookup(value, qtype, strict, timeout, 1)

    return lookup


CASES = [
    pytest.param(scenario, case, id=name)
    for scenario in SUITE
    for name, case in sorted(scenario["tests"].items())
]


@pytest.mark.parametrize(("scenario", "case"), CASES)
def test_rfc7208_case(scenario: dict[str, Any], case: dict[str, Any]) -> None:
    result, explanation = spf_query(
        case["host"],
        case["mailfrom"],
        case["helo"],
        _lookup(_zone(scenario)),
        default_explanation="DEFAULT",
    )
    expected = case["result"]
    allowed = expected if isinstance(expected, list) else [expected]
    assert result in allowed, case.get("description", "")
    if "explanation" in case:
        assert explanation == case["explanation"]


def test_the_whole_suite_is_there() -> None:
    assert len(CASES) == 203
