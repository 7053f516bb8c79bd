"""[mailauth] and [mailauth.domains."D"]: typed, validated, every problem named."""

from __future__ import annotations

import pytest

from qtoaster.config.mailsettings import DmarcQuarantine, DmarcReject, Fcrdns, SpfFail
from qtoaster.config.settings import settings_from_toml
from qtoaster.core.errors import ConfigError


def test_defaults() -> None:
    auth = settings_from_toml({}).mailauth
    assert auth.policy.enabled
    assert auth.policy.spf_fail is SpfFail.RECORD
    assert auth.policy.dmarc_reject is DmarcReject.REJECT
    assert auth.policy.dmarc_quarantine is DmarcQuarantine.JUNK
    assert auth.policy.fcrdns is Fcrdns.RECORD
    assert (auth.timeout, auth.max_bytes, auth.workers) == (10.0, 10 << 20, 2)


def test_a_domain_overrides_what_it_names_and_inherits_the_rest() -> None:
    auth = settings_from_toml(
        {
            "mailauth": {
                "spf_fail": "reject",
                "domains": {"Example.COM": {"dmarc_reject": "quarantine"}},
            }
        }
    ).mailauth
    example = auth.for_domain("example.com")
    assert example.dmarc_reject is DmarcReject.QUARANTINE
    assert example.spf_fail is SpfFail.REJECT
    assert auth.for_domain("other.example") is auth.policy


def test_every_problem_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_toml(
            {
                "mailauth": {
                    "spf_fail": "bounce",
                    "timeout": 0,
                    "domains": {"a.example": {"fcrdns": "yes", "colour": 1}, "b.example": 3},
                }
            }
        )
    text = str(info.value)
    assert '[mailauth] spf_fail: must be "reject" or "record", not \'bounce\'' in text
    assert "[mailauth] timeout" in text
    assert '[mailauth.domains."a.example"] fcrdns: must be "record" or "require"' in text
    assert "[mailauth.domains.\"a.example\"] unknown key 'colour'" in text
    assert '[mailauth.domains."b.example"] must be a table' in text
