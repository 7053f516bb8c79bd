"""``[pregreet]`` and ``[dnsbl]`` settings, and postscreen_dnsbl_sites' syntax."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qtoaster.config.screensettings import (
    DnsblSettings,
    PregreetSettings,
    SiteError,
    dnsbl_settings,
    parse_site,
    pregreet_settings,
)
from qtoaster.config.tables import Tables


def test_sites_with_weights_and_filters() -> None:
    site = parse_site("zen.spamhaus.org=127.0.0.[2..11]*3")
    assert (site.zone, site.weight) == ("zen.spamhaus.org", 3)
    assert site.matches("127.0.0.2") and site.matches("127.0.0.11")
    assert not site.matches("127.0.0.12") and not site.matches("127.0.1.2")
    assert parse_site("bl.example").weight == 1 and parse_site("bl.example").filter is None
    allow = parse_site("list.dnswl.org=127.0.[0..255].[1;2;3]*-5")
    assert allow.weight == -5 and allow.matches("127.0.15.3") and not allow.matches("127.0.15.0")
    assert parse_site("BL.Example.*2").zone == "bl.example"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "nodot",
        "bl.example*x",
        "bl.example*",
        "bl.example=127.0.0",
        "bl.example=127.0.0.256",
        "bl.example=127.0.0.[5..2]",
        "bl.example=127.0.0.[2..]",
        "bl.example=127.0.0.[]",
        "bad zone.example",
    ],
)
def test_malformed_sites(text: str) -> None:
    with pytest.raises(SiteError):
        parse_site(text)


@given(
    st.lists(st.integers(0, 255), min_size=4, max_size=4),
    st.integers(-100, 100),
)
def test_a_written_filter_matches_its_own_address(octets: list[int], weight: int) -> None:
    address = ".".join(map(str, octets))
    site = parse_site(f"bl.example={address}*{weight}")
    assert site.weight == weight and site.matches(address)
    assert not site.matches(".".join(map(str, [*octets[:3], (octets[3] + 1) % 256])))


@given(st.text(max_size=60))
def test_any_text_parses_or_says_why(text: str) -> None:
    try:
        site = parse_site(text)
    except SiteError as exc:
        assert str(exc)
    else:
        assert site.zone and "." in site.zone


def test_defaults_and_problems() -> None:
    assert pregreet_settings(Tables({}, "t")) == PregreetSettings()
    assert dnsbl_settings(Tables({}, "t")) == DnsblSettings()
    tables = Tables(
        {
            "pregreet": {"enabled": True, "wait": 0, "multiline": True},
            "dnsbl": {"sites": ["a.example*2", "w.example*-3"], "threshold": 2},
        },
        "t",
    )
    assert pregreet_settings(tables) == PregreetSettings(True, 0.0, True)
    dnsbl = dnsbl_settings(tables)
    assert [s.weight for s in dnsbl.sites] == [2, -3] and dnsbl.threshold == 2
    assert tables.problems == []
    bad = Tables({"pregreet": {"wait": 60}, "dnsbl": {"sites": ["x=1.2.3"], "timeout": 0}}, "t")
    pregreet_settings(bad)
    assert dnsbl_settings(bad).sites == ()
    assert len(bad.problems) == 3 and "[dnsbl] sites" in bad.problems[1]
