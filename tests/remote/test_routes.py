"""control/smtproutes parsing and lookup (spec 17.2, qmail-remote.c)."""

from __future__ import annotations

import pytest

from qtoaster.core.errors import ConfigError
from qtoaster.core.literal import ip_literal, literal_address
from qtoaster.remote.routes import Route, SmtpRoutes


def test_full_domain_then_suffixes_then_default() -> None:
    routes = SmtpRoutes.parse(
        [
            "example.com:exact.relay",
            ".example.com:sub.relay",
            "deep.sub.example.com:deep.relay",
            ":smarthost",
        ]
    )
    assert routes.lookup("example.com") == Route("exact.relay", None)
    assert routes.lookup("a.example.com") == Route("sub.relay", None)
    assert routes.lookup("x.y.example.com") == Route("sub.relay", None)
    assert routes.lookup("deep.sub.example.com") == Route("deep.relay", None)
    assert routes.lookup("other.sub.example.com") == Route("sub.relay", None)
    assert routes.lookup("example.org") == Route("smarthost", None)
    # "example.com" is not a suffix key: it does not match "notexample.com"
    assert routes.lookup("notexample.com") == Route("smarthost", None)


def test_no_match_and_no_default_means_mx() -> None:
    routes = SmtpRoutes.parse(["example.com:relay"])
    assert routes.lookup("example.org") is None
    assert routes.lookup("sub.example.com") is None
    assert SmtpRoutes.parse([]).lookup("anything") is None


def test_empty_relay_is_an_exception_that_means_mx() -> None:
    routes = SmtpRoutes.parse(["direct.example.com:", ":smarthost"])
    assert routes.lookup("direct.example.com") is None
    assert routes.lookup("other.example.com") == Route("smarthost", None)


def test_nearest_key_wins_even_if_it_is_an_exception() -> None:
    routes = SmtpRoutes.parse([".example.com:", ":smarthost"])
    assert routes.lookup("a.example.com") is None
    assert routes.lookup("example.com") == Route("smarthost", None)


def test_lookup_is_case_insensitive() -> None:
    routes = SmtpRoutes.parse(["Example.COM:Relay.Example.net:2525"])
    assert routes.lookup("EXAMPLE.com") == Route("Relay.Example.net", 2525)
    assert routes.lookup("example.com") == Route("Relay.Example.net", 2525)


def test_later_duplicate_wins_like_constmap() -> None:
    routes = SmtpRoutes.parse(["example.com:first", "EXAMPLE.com:second"])
    assert routes.lookup("example.com") == Route("second", None)
    assert len(routes) == 1


@pytest.mark.parametrize(
    ("line", "route"),
    [
        ("d:relay.example.net", Route("relay.example.net", None)),
        ("d:relay.example.net:587", Route("relay.example.net", 587)),
        ("d:[192.0.2.7]", Route("[192.0.2.7]", None)),
        ("d:[192.0.2.7]:2525", Route("[192.0.2.7]", 2525)),
        ("d:192.0.2.7", Route("192.0.2.7", None)),
        ("d:192.0.2.7:465", Route("192.0.2.7", 465)),
        ("d:[2001:db8::7]", Route("[2001:db8::7]", None)),
        ("d:[2001:db8::7]:25", Route("[2001:db8::7]", 25)),
        ("d:[IPv6:2001:db8::7]:26", Route("[IPv6:2001:db8::7]", 26)),
        ("d:relay_1.example.net.", Route("relay_1.example.net.", None)),
        ("d:relay:65535", Route("relay", 65535)),
    ],
)
def test_relay_forms_and_ports(line: str, route: Route) -> None:
    assert SmtpRoutes.parse([line]).lookup("d") == route


def test_blank_and_comment_lines_are_ignored() -> None:
    routes = SmtpRoutes.parse(["", "# a comment", "d:relay"])
    assert routes.lookup("d") == Route("relay", None)


@pytest.mark.parametrize(
    "line",
    [
        "no colon here",
        "d:relay:port",
        "d:relay:0",
        "d:relay:65536",
        "d:relay:-1",
        "d:relay:25:26",
        "d::25",
        "d:[192.0.2.1",
        "d:[192.0.2.1]x",
        "d:[not.an.ip]",
        "d:[IPv6:192.0.2.1]",
        "d:300.1.1.1",
        "d:bad host",
        "d:bad/host",
        "d o:relay",
    ],
)
def test_bad_lines_raise_config_error(line: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SmtpRoutes.parse([line])
    assert len(caught.value.problems) == 1
    assert "line 1" in caught.value.problems[0]


def test_every_bad_line_is_reported() -> None:
    with pytest.raises(ConfigError) as caught:
        SmtpRoutes.parse(["a:ok", "b:x:y", "c", "d:ok:25"])
    assert [p.split(":")[0] for p in caught.value.problems] == [
        "smtproutes line 2",
        "smtproutes line 3",
    ]


def test_ip_literal_helpers() -> None:
    assert ip_literal("[192.0.2.1]") == "192.0.2.1"
    assert ip_literal("192.0.2.1") == "192.0.2.1"
    assert ip_literal("[IPv6:2001:DB8:0::1]") == "2001:db8::1"
    assert ip_literal("[2001:db8::1]") == "2001:db8::1"
    assert ip_literal("example.com") is None
    assert ip_literal("[example.com]") is None
    assert ip_literal("1.2.3") is None
    assert ip_literal("999.1.1.1") is None
    with pytest.raises(ValueError):
        literal_address("192.0.2.1")
