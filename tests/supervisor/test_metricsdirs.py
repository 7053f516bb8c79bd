"""The supervisor's side of the metrics files (supervisor/metricsdirs.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qtoaster.core.home import Home
from qtoaster.supervisor.metricsdirs import metrics_environment, prepare


def test_prepare_wipes_and_makes_one_directory_per_counting_role(tmp_path: Path) -> None:
    home = Home(tmp_path)
    home.run_dir.mkdir()
    old = home.run_dir / "metrics" / "smtpd"
    old.mkdir(parents=True)
    (old / "counter_1.db").write_bytes(b"x" * 16)
    prepare(home, None)
    assert sorted(p.name for p in (home.run_dir / "metrics").iterdir()) == [
        "imapd",
        "pop3d",
        "send",
        "smtpd",
    ]
    assert list(old.iterdir()) == []


def test_environment_points_counting_roles_at_their_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/elsewhere")
    home = Home(tmp_path)
    env = metrics_environment(home, "smtpd#1")
    assert env is not None
    assert env["PROMETHEUS_MULTIPROC_DIR"] == str(home.run_dir / "metrics" / "smtpd")
    for role in ("auth", "mailbox", "metrics"):
        other = metrics_environment(home, role)
        assert other is not None and "PROMETHEUS_MULTIPROC_DIR" not in other
