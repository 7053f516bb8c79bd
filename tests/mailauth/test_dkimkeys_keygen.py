"""mailauth.dkimkeys.keygen: what ``qtoaster dkim keygen`` and the http role's
``POST /domains/DOMAIN/dkim`` share."""

from __future__ import annotations

from pathlib import Path

import pytest

from qtoaster.core.errors import ConfigError
from qtoaster.mailauth import dkimkeys


def test_one_key_per_algorithm_pending_or_active(tmp_path: Path) -> None:
    made = dkimkeys.keygen(tmp_path, "Ex.Test", ["rsa", "ed25519"])
    assert [(k.domain, k.algorithm, k.state) for k in made] == [
        ("ex.test", "rsa-sha256", "pending"),
        ("ex.test", "ed25519-sha256", "pending"),
    ]
    (key,) = dkimkeys.keygen(tmp_path, "ex.test", ["ed25519"], "s1", active=True)
    assert key.selector == "s1" and key.state == "active"
    states = {k.selector: k.state for k in dkimkeys.load_keys(tmp_path, "ex.test")}
    assert states["s1"] == "active" and len(states) == 3


@pytest.mark.parametrize(
    ("algorithms", "selector", "active", "says"),
    [
        (["rsa", "ed25519"], "s1", False, "a selector names one key"),
        (["dsa"], None, False, "algorithm 'dsa'"),
        ([], None, False, "algorithm ''"),
        (["rsa"], "bad_one", False, "selector 'bad_one'"),
        (["ed25519"], None, True, "already has an active ed25519 key"),
        (["rsa"], "taken", False, "already has a key with selector taken"),
    ],
)
def test_refusals_write_nothing(
    tmp_path: Path, algorithms: list[str], selector: str | None, active: bool, says: str
) -> None:
    dkimkeys.keygen(tmp_path, "ex.test", ["ed25519"], active=True)
    dkimkeys.keygen(tmp_path, "ex.test", ["rsa"], "taken")
    before = sorted(p.name for p in (tmp_path / "ex.test").iterdir())
    with pytest.raises(ConfigError, match=says):
        dkimkeys.keygen(tmp_path, "ex.test", algorithms, selector, active=active)
    assert sorted(p.name for p in (tmp_path / "ex.test").iterdir()) == before
