"""parse_tcprules on arbitrary text: rules or ConfigError, never another exception."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from qtoaster.config.tcprules import TcpRules, parse_tcprules
from qtoaster.core.errors import ConfigError

# Characters that steer the parser into its interesting branches, plus anything at all.
RULE_ALPHABET = st.sampled_from(list("0123456789abcdef.:-/=@,\"' \t\r#xyzADNOWLE%[]"))
RULE_LINE = st.one_of(
    st.text(RULE_ALPHABET, max_size=40),
    st.builds(
        lambda address, verb, rest: f"{address}:{verb}{rest}",
        st.text(RULE_ALPHABET, max_size=20),
        st.sampled_from(["allow", "deny", "al", ""]),
        st.text(RULE_ALPHABET, max_size=20),
    ),
    st.text(max_size=30),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(RULE_LINE, max_size=6))
def test_parse_never_raises_anything_else(lines: list[str]) -> None:
    try:
        rules = parse_tcprules("\n".join(lines))
    except ConfigError as exc:
        assert exc.problems
        assert all(p.startswith("tcp.smtp:") for p in exc.problems)
        return
    assert isinstance(rules, TcpRules)
    for ip in ("127.0.0.1", "::1", "10.1.2.3", "2001:db8::1", "not-an-ip"):
        decision = rules.match(ip, "host.example", "joe")
        assert isinstance(decision.allow, bool)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text(text: str) -> None:
    try:
        parse_tcprules(text)
    except ConfigError:
        pass


FIXED = parse_tcprules("127.:allow\n10.0.0.0/8:deny\n2001:db8::/32:deny\n=.x.test:deny\n:allow\n")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=45), st.none() | st.text(max_size=20), st.none() | st.text(max_size=8))
def test_match_any_client_text(ip: str, host: str | None, info: str | None) -> None:
    assert isinstance(FIXED.match(ip, host, info).allow, bool)
