"""qregex (spec 8): control files, negation, ordering at RCPT, NOBADHELO, norelay, bounds."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from qtoaster.core.errors import ConfigError
from qtoaster.policy.checks.qregex import (
    BAD_HELO,
    BAD_MAILFROM,
    BAD_MAILTO,
    Qregex,
    RuleFile,
    parse_rule,
    problems,
    read_rules,
)
from qtoaster.policy.pipeline import Pipeline
from qtoaster.policy.verdict import PASS, Facts, SessionState, Stage, Verdict


def controls(tmp_path: Path, **files: str) -> Path:
    directory = tmp_path / "control"
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def facts(
    *,
    helo: str | None = "mail.example.com",
    sender: str | None = "someone@example.com",
    recipient: str = "user@example.org",
    env: Mapping[str, str] | None = None,
) -> Facts:
    return Facts(
        remote_ip="192.0.2.1",
        local_ip="127.0.0.1",
        env=env or {},
        helo=helo,
        sender=sender,
        recipient=recipient,
    )


def run(check: Qregex, **kwargs: object) -> Verdict:
    return check.check(Stage.RCPT, facts(**kwargs), SessionState())  # type: ignore[arg-type]


# -- the seed's examples -------------------------------------------------------------


def test_seed_badhelo_rejects_helo_without_a_dot(tmp_path: Path) -> None:
    check = Qregex.from_control_dir(controls(tmp_path, badhelo="!\\.\n"))
    assert run(check, helo="localhost").reply == BAD_HELO
    assert run(check, helo="mail.example.com") == PASS
    assert run(check, helo=None) == PASS  # no HELO: no badhelo test


def test_seed_badmailfrom(tmp_path: Path) -> None:
    check = Qregex.from_control_dir(controls(tmp_path, badmailfrom=".*spam.*\n!@\n"))
    assert run(check, sender="bigSPAMmer@example.com").reply == BAD_MAILFROM
    assert run(check, sender="unqualified").reply == BAD_MAILFROM
    assert run(check, sender="fine@example.com") == PASS
    assert run(check, sender="") == PASS  # the null sender is never tested


def test_seed_badmailto(tmp_path: Path) -> None:
    check = Qregex.from_control_dir(controls(tmp_path, badmailto="[!%#:*^(){}]\n@.*@\n"))
    for bad in ("a%b@example.org", "x!y@example.org", "a@b@example.org", "{x}@example.org"):
        assert run(check, recipient=bad).reply == BAD_MAILTO, bad
    assert run(check, recipient="user@example.org") == PASS


def test_replies_are_the_originals() -> None:
    assert BAD_HELO.render() == b"553 sorry, your HELO host name has been denied (#5.7.1)\r\n"
    assert BAD_MAILFROM.render() == b"553 sorry, your envelope sender has been denied (#5.7.1)\r\n"
    assert BAD_MAILTO.render() == b"553 sorry, your envelope recipient has been denied (#5.7.1)\r\n"


# -- file syntax and evaluation ---------------------------------------------------------


def test_comments_blank_lines_trailing_blanks_and_line_numbers(tmp_path: Path) -> None:
    path = controls(tmp_path, badmailfrom="# comment\n\n  spaced \t\n^x@\n") / "badmailfrom"
    rules = read_rules(path, "badmailfrom")
    assert [(r.line, r.text) for r in rules.rules] == [(3, "  spaced"), (4, "^x@")]
    assert rules.first_firing("a  spaced@x") is rules.rules[0]  # leading blanks are kept
    assert rules.first_firing("spaced@x") is None


def test_case_insensitive_unanchored(tmp_path: Path) -> None:
    check = Qregex.from_control_dir(controls(tmp_path, badmailfrom="@yahoo\\.com\n"))
    assert run(check, sender="x@YAHOO.COM").reply == BAD_MAILFROM
    assert run(check, sender="x@yahoo.com.au").reply == BAD_MAILFROM  # the spec's pitfall


def test_negation_only_at_the_start() -> None:
    negated = parse_rule("badmailto", 1, "!example")
    assert negated.negated
    rules = RuleFile("badmailto", (negated,))
    assert rules.first_firing("a@other.test") is negated
    assert rules.first_firing("a@example.test") is None
    literal = RuleFile("badmailto", (parse_rule("badmailto", 1, "a!b"),))
    assert literal.first_firing("xa!by") is not None


def test_first_firing_line_wins() -> None:
    rules = RuleFile(
        "badmailfrom", tuple(parse_rule("badmailfrom", n, t) for n, t in enumerate(["^a", "a"]))
    )
    fired = rules.first_firing("abc")
    assert fired is not None and fired.line == 0


def test_a_pattern_that_does_not_compile_never_fires(tmp_path: Path) -> None:
    check = Qregex.from_control_dir(controls(tmp_path, badmailfrom="(spam\n!(spam\n[z-a]\n"))
    assert run(check, sender="spam@example.com") == PASS
    assert run(check, sender="other@example.com") == PASS


def test_problems_name_file_line_and_error(tmp_path: Path) -> None:
    directory = controls(
        tmp_path,
        badhelo="!\\.\n",
        badmailfrom="# c\nok\n(spam\n",
        badmailtonorelay="[[:nope:]]\n",
    )
    found = problems(directory)
    assert len(found) == 2
    assert found[0].startswith("control/badmailfrom line 3: '(spam'")
    assert "Unmatched ( or \\(" in found[0]
    assert found[1].startswith("control/badmailtonorelay line 1:")
    assert problems(controls(tmp_path / "empty")) == []


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    directory = controls(tmp_path)
    (directory / "badmailto").mkdir()  # EISDIR: not "missing"
    with pytest.raises(ConfigError):
        Qregex.from_control_dir(directory)
    assert problems(directory)[0].startswith("control/badmailto: unable to read")


def test_no_files_is_inactive(tmp_path: Path) -> None:
    check = Qregex.from_control_dir(controls(tmp_path))
    assert not check.active
    assert run(check) == PASS
    assert Qregex.from_control_dir(controls(tmp_path, badmailto="x\n")).active


# -- where and in which order the verdicts are reported ------------------------------------


def all_bad(tmp_path: Path) -> Qregex:
    return Qregex.from_control_dir(
        controls(tmp_path, badhelo="^evil$\n", badmailfrom="^spam@\n", badmailto="^victim@\n")
    )


def test_order_helo_then_sender_then_recipient(tmp_path: Path) -> None:
    check = all_bad(tmp_path)
    assert run(check, helo="evil", sender="spam@x", recipient="victim@y").reply == BAD_HELO
    assert run(check, helo="good.x", sender="spam@x", recipient="victim@y").reply == BAD_MAILFROM
    assert run(check, helo="good.x", sender="ok@x", recipient="victim@y").reply == BAD_MAILTO
    assert run(check, helo="good.x", sender="ok@x", recipient="ok@y") == PASS


def test_every_rcpt_gets_the_same_answer(tmp_path: Path) -> None:
    check = all_bad(tmp_path)
    for recipient in ("a@y", "b@y", "victim@y"):
        verdict = run(check, sender="spam@x", recipient=recipient)
        assert verdict.reply == BAD_MAILFROM


def test_cached_verdicts_follow_a_new_helo_and_sender(tmp_path: Path) -> None:
    check = all_bad(tmp_path)
    assert run(check, helo="evil").reply == BAD_HELO
    assert run(check, helo="good.x") == PASS  # latest HELO wins
    assert run(check, helo="good.x", sender="spam@x").reply == BAD_MAILFROM
    assert run(check, helo="good.x", sender="ok@x") == PASS


def test_nobadhelo_disables_badhelo_only(tmp_path: Path) -> None:
    check = all_bad(tmp_path)
    env = {"NOBADHELO": ""}
    assert run(check, helo="evil", env=env) == PASS
    assert run(check, helo="evil", sender="spam@x", env=env).reply == BAD_MAILFROM


def test_norelay_files_only_without_relayclient(tmp_path: Path) -> None:
    check = Qregex.from_control_dir(
        controls(tmp_path, badmailfromnorelay="@dynamic\\.\n", badmailtonorelay="^postmaster@\n")
    )
    assert run(check, sender="x@dynamic.isp").reply == BAD_MAILFROM
    assert run(check, sender="x@dynamic.isp", env={"RELAYCLIENT": ""}) == PASS
    assert run(check, recipient="postmaster@x").reply == BAD_MAILTO
    assert run(check, recipient="postmaster@x", env={"RELAYCLIENT": ""}) == PASS
    # the same session gaining RELAYCLIENT (AUTH) is re-evaluated
    assert run(check, sender="x@dynamic.isp").reply == BAD_MAILFROM
    assert run(check, sender="x@dynamic.isp", env={"RELAYCLIENT": ""}) == PASS


def test_badmailto_applies_to_relay_clients(tmp_path: Path) -> None:
    check = Qregex.from_control_dir(controls(tmp_path, badmailto="@.*@\n"))
    assert run(check, recipient="a@b@c", env={"RELAYCLIENT": ""}).reply == BAD_MAILTO


def test_log_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    check = all_bad(tmp_path)
    with caplog.at_level(logging.INFO, logger="qtoaster.policy"):
        run(check, helo="evil")
        run(check, helo="ok.x", sender="spam@x")
        run(check, helo="ok.x", recipient="victim@y", env={"LOGREGEX": ""})
    assert caplog.messages == [
        "qregex badhelo: <evil> at 192.0.2.1",
        "qregex badmailfrom: <spam@x> at 192.0.2.1",
        "qregex badmailto: <victim@y> at 192.0.2.1 matches pattern: ^victim@",
    ]


def test_through_the_pipeline(tmp_path: Path) -> None:
    pipeline = Pipeline([all_bad(tmp_path)])
    verdict = pipeline.run(Stage.RCPT, facts(recipient="victim@y"))
    assert isinstance(verdict, Verdict) and verdict.reply == BAD_MAILTO


# -- the time bound ------------------------------------------------------------------------


def test_catastrophic_pattern_returns_within_the_bound(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    check = Qregex.from_control_dir(
        controls(tmp_path, badmailto="(a+)+$\n!(a|aa)+$\n^victim@\n"), timeout=0.02
    )
    subject = "a" * 5000 + "!@example.org"
    with caplog.at_level(logging.WARNING, logger="qtoaster.policy"):
        started = time.monotonic()
        assert run(check, recipient=subject) == PASS  # out of time: does not fire
        assert run(check, recipient=subject) == PASS
        elapsed = time.monotonic() - started
        assert run(check, recipient="victim@" + "a" * 5000).reply == BAD_MAILTO
    assert elapsed < 3  # 2 patterns x 2 runs, each bounded (regex checks coarsely)
    timeouts = [m for m in caplog.messages if "ran out of time" in m]
    assert len(timeouts) == 2  # once per pattern, not per match
