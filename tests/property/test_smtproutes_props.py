"""SmtpRoutes.parse on arbitrary lines: a table or ConfigError, never another exception."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from qtoaster.core.errors import ConfigError
from qtoaster.remote.routes import SmtpRoutes

ALPHABET = st.sampled_from(list("0123456789abcdefxyz.:[]-_ \t#IPv6%/\\\x00é"))
LINE = st.one_of(
    st.text(ALPHABET, max_size=40),
    st.builds(
        lambda key, relay, port: f"{key}:{relay}{port}",
        st.text(ALPHABET, max_size=15),
        st.one_of(
            st.text(ALPHABET, max_size=20),
            st.ip_addresses().map(lambda ip: f"[{ip}]"),
            st.ip_addresses(v=4).map(str),
        ),
        st.one_of(st.just(""), st.integers(-5, 70000).map(lambda n: f":{n}")),
    ),
    st.text(max_size=30),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(LINE, max_size=6), st.text(ALPHABET, max_size=30))
def test_parse_never_raises_anything_else(lines: list[str], domain: str) -> None:
    try:
        routes = SmtpRoutes.parse(lines)
    except ConfigError as exc:
        assert exc.problems
        return
    route = routes.lookup(domain)
    if route is not None:
        assert route.relay
        assert route.port is None or 0 < route.port < 65536


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"[a-z0-9-]{1,10}(\.[a-z0-9-]{1,10}){0,3}", fullmatch=True))
def test_default_route_catches_every_domain(domain: str) -> None:
    routes = SmtpRoutes.parse([":smarthost:2525"])
    route = routes.lookup(domain)
    assert route is not None and (route.relay, route.port) == ("smarthost", 2525)
