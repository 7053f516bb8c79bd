"""tcprules text format and tcpserver's first-hit order (spec 1, tcprules(1))."""

from __future__ import annotations

from pathlib import Path

import pytest

from qtoaster.config.tcprules import NO_RULE, load_tcprules, parse_tcprules
from qtoaster.core.errors import ConfigError


def rule_for(text: str, ip: str, host: str | None = None, info: str | None = None) -> str:
    return parse_tcprules(text).match(ip, host, info).rule


# -- instructions -----------------------------------------------------------------------


def test_allow_with_variables_any_quote_character() -> None:
    rules = parse_tcprules('10.0.:allow,RELAYCLIENT=/@fix.me/,QMAILQUEUE="/bin/x",E=""\n')
    decision = rules.match("10.0.1.2")
    assert decision.allow
    assert dict(decision.env) == {"RELAYCLIENT": "@fix.me", "QMAILQUEUE": "/bin/x", "E": ""}
    assert decision.rule == "10.0."


def test_values_may_contain_spaces_commas_colons_and_other_quotes() -> None:
    text = ':allow,RBLSMTPD="-blocked, see http://x.test/?a=b",Q=\'say "hi"\'\n'
    env = dict(parse_tcprules(text).match("1.2.3.4").env)
    assert env == {"RBLSMTPD": "-blocked, see http://x.test/?a=b", "Q": 'say "hi"'}


def test_deny_and_deny_with_variables() -> None:
    rules = parse_tcprules('1.2.3.4:deny\n5.6.7.8:deny,WHY="x"\n')
    assert not rules.match("1.2.3.4").allow
    decision = rules.match("5.6.7.8")
    assert not decision.allow and dict(decision.env) == {"WHY": "x"}


def test_later_assignment_of_same_variable_wins() -> None:
    assert dict(parse_tcprules(':allow,A="1",A="2"').match("1.1.1.1").env) == {"A": "2"}


def test_comments_blank_lines_and_trailing_blanks_ignored() -> None:
    text = '# comment\n\n   \n\t\n127.:allow,RELAYCLIENT=""  \t\n#:deny\n'
    rules = parse_tcprules(text)
    assert len(rules) == 1
    assert rules.match("127.0.0.1").env == {"RELAYCLIENT": ""}


def test_no_rule_matched_is_tcpserver_default() -> None:
    assert parse_tcprules("127.:deny\n").match("10.0.0.1") == NO_RULE
    assert NO_RULE.allow and NO_RULE.rule == "<none>" and dict(NO_RULE.env) == {}


def test_first_rule_for_same_address_wins() -> None:
    rules = parse_tcprules('127.:allow,N="1"\n127.:deny\n')
    assert rules.match("127.0.0.1").allow


# -- address forms and order ------------------------------------------------------------

ORDER_RULES = """\
:allow,R="empty"
=:allow,R="="
=.example.com:allow,R="=.example.com"
=.mail.example.com:allow,R="=.mail.example.com"
1.:allow,R="1."
1.2.:allow,R="1.2."
1.2.3.:allow,R="1.2.3."
1.0.0.0/8:allow,R="/8"
1.2.0.0/16:allow,R="/16"
=mx.mail.example.com:allow,R="=host"
1.2.3.4:allow,R="ip"
joe@=mx.mail.example.com:allow,R="info@=host"
joe@1.2.3.4:allow,R="info@ip"
"""


@pytest.mark.parametrize(
    ("drop_until", "expected"),
    [
        (0, "info@ip"),
        (1, "info@=host"),
        (2, "ip"),
        (3, "=host"),
        (4, "1.2.3."),
        (5, "1.2."),
        (6, "1."),
        (7, "/16"),
        (8, "/8"),
        (9, "=.mail.example.com"),
        (10, "=.example.com"),
        (11, "="),
        (12, "empty"),
    ],
)
def test_first_hit_order(drop_until: int, expected: str) -> None:
    order = [
        "joe@1.2.3.4:",
        "joe@=mx",
        "1.2.3.4:",
        "=mx.mail",
        "1.2.3.:",
        "1.2.:",
        "1.:",
        "1.2.0.0/16",
        "1.0.0.0/8",
        "=.mail.",
        "=.example",
        "=:",
    ]
    lines = [
        line
        for line in ORDER_RULES.splitlines()
        if not any(line.startswith(prefix) for prefix in order[:drop_until])
    ]
    rules = parse_tcprules("\n".join(lines))
    decision = rules.match("1.2.3.4", "mx.mail.example.com", "joe")
    assert decision.env["R"] == expected


def test_info_rules_need_remote_info_and_host_rules_need_host() -> None:
    text = 'joe@1.2.3.4:deny\n=:deny\n=h.example:deny\n:allow,R="empty"\n'
    assert parse_tcprules(text).match("1.2.3.4").env == {"R": "empty"}
    assert not parse_tcprules(text).match("1.2.3.4", remote_info="joe").allow
    assert parse_tcprules(text).match("1.2.3.4", remote_info="bob").allow
    assert not parse_tcprules(text).match("1.2.3.4", remote_host="other.test").allow


def test_host_rules_case_insensitive() -> None:
    assert rule_for("=.Example.COM:deny\n", "9.9.9.9", "MX.example.com") == "=.Example.COM"


def test_ipv4_prefix_is_whole_octets() -> None:
    rules = parse_tcprules("12.:deny\n")
    assert not rules.match("12.0.0.1").allow
    assert rules.match("120.0.0.1").allow


@pytest.mark.parametrize(
    ("ip", "expected"),
    [("18.23.0.1", False), ("18.23.0.22", False), ("18.23.0.23", True), ("18.23.0.0", True)],
)
def test_range_in_last_octet(ip: str, expected: bool) -> None:
    assert parse_tcprules("18.23.0.1-22:deny\n").match(ip).allow is expected


@pytest.mark.parametrize(
    ("ip", "expected"), [("10.1.9.9", False), ("10.5.0.1", False), ("10.6.0.1", True)]
)
def test_range_in_prefix(ip: str, expected: bool) -> None:
    assert parse_tcprules("10.1-5.:deny\n").match(ip).allow is expected


def test_cidr_ipv4_including_partial_address() -> None:
    rules = parse_tcprules("127.0/8:deny\n192.168.0.0/23:deny\n")
    assert not rules.match("127.200.1.1").allow
    assert not rules.match("192.168.1.255").allow
    assert rules.match("192.168.2.0").allow


def test_ipv6_exact_normalised() -> None:
    rules = parse_tcprules('::1:allow,RELAYCLIENT=""\n2001:DB8:0:0::25:deny\n')
    assert rules.match("::1").env == {"RELAYCLIENT": ""}
    assert rules.match("0:0:0:0:0:0:0:1").env == {"RELAYCLIENT": ""}
    assert not rules.match("2001:db8::25").allow
    assert rules.match("2001:db8::26").allow


def test_ipv6_group_prefix_and_cidr_longest_first() -> None:
    rules = parse_tcprules('2001:db8::/32:allow,R="/32"\n2001:db8:1::allow,R="3 groups"\n')
    assert rules.match("2001:db8:1::9").env == {"R": "3 groups"}
    assert rules.match("2001:db8:2::9").env == {"R": "/32"}
    assert rules.match("2001:db9::1") == NO_RULE


def test_ipv6_group_prefix_is_whole_groups() -> None:
    rules = parse_tcprules("2001:db8::deny\n")
    assert not rules.match("2001:0db8::1").allow
    assert rules.match("2001:db80::1").allow


def test_ipv4_mapped_client_matches_ipv4_rules() -> None:
    assert rule_for("127.:allow\n", "::ffff:127.0.0.1") == "127."


def test_info_at_ipv6() -> None:
    assert rule_for("joe@::1:deny\n", "0::1", info="joe") == "joe@::1"


def test_canonical_toaster_rules() -> None:
    rules = parse_tcprules(
        '127.:allow,RELAYCLIENT=""\n'
        ':allow,CHKUSER_RCPTLIMIT="50",CHKUSER_WRONGRCPTLIMIT="10",'
        'QMAILQUEUE="/var/qmail/bin/simscan"\n'
    )
    assert rules.match("127.0.0.1").env == {"RELAYCLIENT": ""}
    outside = rules.match("203.0.113.5")
    assert outside.rule == "" and "RELAYCLIENT" not in outside.env
    assert outside.env["QMAILQUEUE"] == "/var/qmail/bin/simscan"


# -- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("127.", "missing ':'"),
        ("127.:permit", "must begin with allow or deny"),
        ("127.:allowed", "expected ',VAR"),
        ("127.:allow,RELAYCLIENT", "has no value"),
        ("127.:allow,RELAYCLIENT=", "has no value"),
        ('127.:allow,RELAYCLIENT="x', "not closed"),
        ('127.:allow,-RELAYCLIENT=""', "bad variable name"),
        ('127.:allow RELAYCLIENT=""', "expected ',VAR"),
        ("127. :allow", "spaces in address"),
        ("localhost:allow", "is not an IPv4 address"),
        ("127.0.0:allow", "is not an IPv4 address"),
        ("1.2.3.256:allow", "is not an IPv4 address"),
        ("1.2.3.4-300:allow", "bad address range"),
        ("1.2.3.9-4:allow", "bad address range"),
        ("1.2-3.4-5:allow", "bad address range"),
        ("10.0.0.0/33:allow", "prefix length"),
        ("10/16:allow", "prefix length"),
        ("10.0.0.0/x:allow", "bad prefix length"),
        ("::1/0:allow", "prefix length"),
        ("2001:zz8::allow", "bad IPv6"),
        ("::ffff:1.2.3.4:allow", "write the IPv4 address"),
        ("joe@1.2.3.:allow", "not an exact IP address"),
        ("a=b:allow", "misplaced '='"),
        ("127.:allow\r", "carriage return"),
    ],
)
def test_bad_lines(line: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_tcprules(f"# header\n{line}\n")
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith("tcp.smtp:2: ")
    assert message in info.value.problems[0]


def test_every_bad_line_reported_with_source() -> None:
    with pytest.raises(ConfigError) as info:
        parse_tcprules("bad\n127.:allow\nworse:allow\n:nope\n", source="tcp.test")
    assert [p.split(" ")[0] for p in info.value.problems] == [
        "tcp.test:1:",
        "tcp.test:3:",
        "tcp.test:4:",
    ]


# -- files ------------------------------------------------------------------------------


def test_missing_file_allows_everyone(tmp_path: Path) -> None:
    rules = load_tcprules(tmp_path / "tcp.smtp")
    assert rules.match("192.0.2.1") == NO_RULE


def test_load_file_reports_file_name(tmp_path: Path) -> None:
    path = tmp_path / "tcp.smtp"
    path.write_text('127.:allow,RELAYCLIENT=""\nnonsense\n')
    with pytest.raises(ConfigError, match=r"^tcp\.smtp:2: missing ':'"):
        load_tcprules(path)


def test_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "tcp.smtp").mkdir()
    with pytest.raises(ConfigError, match=r"tcp\.smtp: unable to read"):
        load_tcprules(tmp_path / "tcp.smtp")
