"""[dkim] settings: defaults, values, and errors that name the key."""

from __future__ import annotations

import pytest

from qtoaster.config.mailsettings import DkimSettings
from qtoaster.config.settings import settings_from_toml
from qtoaster.core.errors import ConfigError


def test_defaults() -> None:
    assert settings_from_toml({}).dkim == DkimSettings()
    assert DkimSettings().grace == 7 * 86400 and DkimSettings().sign is True
    assert DkimSettings().algorithms == ("rsa", "ed25519") and DkimSettings().expiry == 0


def test_values() -> None:
    data = {
        "dkim": {
            "sign": False,
            "expiry": 86400,
            "grace": 0,
            "rotate_after": 86400,
            "algorithms": ["ed25519"],
        }
    }
    assert settings_from_toml(data).dkim == DkimSettings(False, 86400, 0, 86400, ("ed25519",))


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("sign", "yes", "[dkim] sign: must be true or false"),
        ("expiry", -1, "[dkim] expiry: must be an integer from 0 to"),
        ("grace", 1.5, "[dkim] grace: must be an integer"),
        ("rotate_after", 60, "[dkim] rotate_after: must be an integer from 86400"),
        ("algorithms", ["dsa"], '[dkim] algorithms: must be a list of "rsa", "ed25519"'),
        ("algorithms", [], '[dkim] algorithms: must be a list of "rsa", "ed25519"'),
        ("algorithms", ["rsa", "rsa"], '[dkim] algorithms: must be a list of "rsa", "ed25519"'),
        ("selector", "x", "[dkim] unknown key 'selector'"),
    ],
)
def test_errors_name_the_key(key: str, value: object, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_toml({"dkim": {key: value}})
    assert problem in str(caught.value)
