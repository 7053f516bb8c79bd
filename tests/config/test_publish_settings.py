"""[publish] of qtoaster.toml: what ``qtoaster dns records`` prints (docs/dns.md)."""

from __future__ import annotations

import pytest

from qtoaster.config.mailsettings import DmarcPolicy, MtaStsMode, PublishSettings
from qtoaster.config.settings import settings_from_toml
from qtoaster.core.errors import ConfigError


def test_defaults() -> None:
    publish = settings_from_toml({}).publish
    assert publish == PublishSettings()
    assert publish.host is None and publish.addresses == () and publish.spf is None
    assert publish.dmarc_policy == DmarcPolicy.QUARANTINE == "quarantine"
    assert publish.mta_sts_mode == MtaStsMode.TESTING and publish.mta_sts_max_age == 604800
    assert publish.dmarc_rua == publish.tlsrpt_rua == "postmaster@{domain}"


def test_all_values() -> None:
    publish = settings_from_toml(
        {
            "publish": {
                "host": "MX.Example.COM.",
                "addresses": ["192.0.2.1", "2001:DB8:0::1"],
                "spf": "v=spf1 a -all",
                "dmarc_policy": "reject",
                "dmarc_rua": "dmarc@reports.example.net",
                "tlsrpt_rua": "",
                "mta_sts_mode": "enforce",
                "mta_sts_max_age": 86400,
            }
        }
    ).publish
    assert publish.host == "mx.example.com"
    assert publish.addresses == ("192.0.2.1", "2001:db8::1")
    assert (publish.spf, publish.dmarc_policy, publish.mta_sts_mode) == (
        "v=spf1 a -all",
        "reject",
        "enforce",
    )
    assert (publish.dmarc_rua, publish.tlsrpt_rua, publish.mta_sts_max_age) == (
        "dmarc@reports.example.net",
        "",
        86400,
    )


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("host", "mail", "must be a fully qualified host name"),
        ("host", "-bad.example.com", "must be a fully qualified host name"),
        ("addresses", "192.0.2.1", "must be a list"),
        ("addresses", ["mail.example.com"], "is not an IP address"),
        ("addresses", ["127.0.0.1"], "127.0.0.1 is not reachable from elsewhere"),
        ("addresses", ["fe80::1"], "is not reachable from elsewhere"),
        ("addresses", ["0.0.0.0"], "0.0.0.0 is not one address"),
        ("spf", "mx -all", 'must be an SPF record, "v=spf1 ..."'),
        ("dmarc_policy", "block", "must be one of none, quarantine, reject"),
        ("dmarc_rua", "a@x.test,b@y.test", 'must be a mail address ("{domain}" for the domain)'),
        ("dmarc_rua", "mailto:x", "must be a mail address"),
        ("tlsrpt_rua", "x@{domain};", "must be a mail address"),
        ("mta_sts_mode", "strict", "must be one of enforce, testing, none"),
        ("mta_sts_max_age", 60, "must be an integer from 86400 to 31557600"),
        ("mta_sts_maxage", 86400, "[publish] unknown key 'mta_sts_maxage'"),
    ],
)
def test_problems_name_the_key(key: str, value: object, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_toml({"publish": {key: value}})
    text = "\n".join(caught.value.problems)
    assert problem in text
    assert "[publish]" in text
