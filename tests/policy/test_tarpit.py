"""tarpit (spec 10): counts, reset at MAIL, control files and variables."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from qtoaster.policy.checks.tarpit import Tarpit
from qtoaster.policy.verdict import PASS, Facts, SessionState, Stage, Verdict


def facts(accepted: int, env: Mapping[str, str] | None = None) -> Facts:
    """The facts of a RCPT after *accepted* recipients of this transaction."""
    return Facts(
        remote_ip="192.0.2.1",
        local_ip="127.0.0.1",
        env=env or {},
        sender="s@example.com",
        recipient=f"r{accepted}@example.org",
        recipients=tuple(f"r{n}@example.org" for n in range(accepted)),
    )


def delays(check: Tarpit, rcpts: int, env: Mapping[str, str] | None = None) -> list[float]:
    return [check.check(Stage.RCPT, facts(n, env), SessionState()).delay for n in range(rcpts)]


def test_from_the_count_th_recipient_on_linear() -> None:
    # count=3, delay=5: RCPTs 1-2 immediate, the 3rd and every later one 5 s each.
    assert delays(Tarpit(3, 5), 6) == [0, 0, 5, 5, 5, 5]


def test_count_one_delays_every_recipient() -> None:
    assert delays(Tarpit(1, 2), 3) == [2, 2, 2]


def test_default_is_off() -> None:
    assert delays(Tarpit(), 100) == [0] * 100


def test_reset_at_mail() -> None:
    # A new transaction starts with no recipients, so its first RCPTs are not delayed.
    check = Tarpit(2, 5)
    assert check.check(Stage.RCPT, facts(5), SessionState()).delay == 5
    assert check.check(Stage.RCPT, facts(0), SessionState()).delay == 0


def test_control_files(tmp_path: Path) -> None:
    assert delays(Tarpit.from_control_dir(tmp_path), 60) == [0] * 60  # both missing
    (tmp_path / "tarpitcount").write_text("2\n")
    assert delays(Tarpit.from_control_dir(tmp_path), 3) == [0, 5, 5]  # tarpitdelay: 5
    (tmp_path / "tarpitdelay").write_text("1\n")
    assert delays(Tarpit.from_control_dir(tmp_path), 3) == [0, 1, 1]
    (tmp_path / "tarpitcount").write_text("-1\n")  # no leading digit: the default, 0
    assert delays(Tarpit.from_control_dir(tmp_path), 3) == [0, 0, 0]


def test_variables_override_the_control_files() -> None:
    check = Tarpit(50, 5)
    assert delays(check, 3, {"TARPITCOUNT": "2"}) == [0, 5, 5]
    assert delays(check, 3, {"TARPITCOUNT": "2", "TARPITDELAY": "1"}) == [0, 1, 1]
    assert delays(Tarpit(1, 5), 2, {"TARPITCOUNT": "0"}) == [0, 0]  # exempt a client
    assert delays(Tarpit(1, 5), 2, {"TARPITCOUNT": "-3"}) == [0, 0]  # negative: 0
    assert delays(Tarpit(1, 5), 2, {"TARPITDELAY": "-3"}) == [0, 0]
    assert delays(Tarpit(1, 5), 2, {"TARPITDELAY": " 7s"}) == [7, 7]  # atoi


def test_notarpit_disables() -> None:
    assert delays(Tarpit(1, 5), 3, {"NOTARPIT": ""}) == [0, 0, 0]
    assert delays(Tarpit(1, 5), 3, {"NOTARPIT": "1", "TARPITCOUNT": "1"}) == [0, 0, 0]


def test_never_rejects() -> None:
    verdict = Tarpit(1, 5).check(Stage.RCPT, facts(0), SessionState())
    assert verdict == Verdict(delay=5.0)
    assert verdict.reply is None and not verdict.rejects
    assert Tarpit(2, 5).check(Stage.RCPT, facts(0), SessionState()) == PASS
