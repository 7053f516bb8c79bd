"""The CONNECT and DATA checks (rblsmtpd, databytes, hops, signatures) and what the
pipeline does with every stage: one log line per rejection, headers, the session state."""

from __future__ import annotations

import dataclasses
import inspect
import logging
from dataclasses import dataclass

import pytest

from qtoaster.core.reply import DATABYTES, TOO_MANY_HOPS, Reply
from qtoaster.policy.checks.databytes import Databytes
from qtoaster.policy.checks.hops import MAX_HOPS, Hops
from qtoaster.policy.checks.rblsmtpd import Rblsmtpd
from qtoaster.policy.checks.signatures import Signatures
from qtoaster.policy.pipeline import Pipeline
from qtoaster.policy.signatures import EXECUTABLE, TOO_DEEP
from qtoaster.policy.verdict import PASS, Facts, MessageFacts, SessionState, Stage, Verdict


def message(size: int = 10, hops: int = 0, executable: bool = False) -> MessageFacts:
    return MessageFacts("/nonexistent", 0, size, hops, executable)


def data_facts(env: dict[str, str] | None = None, **kw: object) -> Facts:
    return Facts(
        remote_ip="192.0.2.7",
        local_ip="127.0.0.1",
        env=env or {},
        helo="client.test",
        sender="s@far.test",
        recipients=("a@ours.test", "b@ours.test"),
        message=message(**kw),  # type: ignore[arg-type]
    )


def test_facts_carry_no_mutable_scratch() -> None:
    facts = data_facts()
    assert not hasattr(facts, "session")
    with pytest.raises(dataclasses.FrozenInstanceError):
        facts.sender = "x@y"  # type: ignore[misc]
    assert facts.message is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        facts.message.size = 0  # type: ignore[misc]


# -- databytes at DATA, hops, signatures ---------------------------------------------------


@pytest.mark.parametrize(
    ("size", "env", "refused"),
    [
        (1000, {}, False),  # the limit itself is accepted
        (1001, {}, True),
        (1001, {"DATABYTES": "0"}, False),  # the variable wins: unlimited
        (1001, {"DATABYTES": "2000"}, False),
        (50, {"DATABYTES": "40"}, True),
    ],
)
def test_databytes_counts_the_bytes_received(size: int, env: dict[str, str], refused: bool) -> None:
    verdict = Databytes(1000).check(Stage.DATA, data_facts(env, size=size), SessionState())
    assert verdict == (Verdict(reply=DATABYTES) if refused else PASS)


def test_hops_refuses_at_maxhops() -> None:
    check = Hops()
    assert check.check(Stage.DATA, data_facts(hops=MAX_HOPS - 1), SessionState()) == PASS
    refused = check.check(Stage.DATA, data_facts(hops=MAX_HOPS), SessionState())
    assert refused.reply == TOO_MANY_HOPS


def test_signatures_reads_the_intakes_result_and_executableok() -> None:
    check = Signatures()
    assert check.check(Stage.DATA, data_facts(), SessionState()) == PASS
    hit = check.check(Stage.DATA, data_facts(executable=True), SessionState())
    assert hit.reply == EXECUTABLE
    ok = data_facts({"EXECUTABLEOK": ""}, executable=True)
    assert check.check(Stage.DATA, ok, SessionState()) == PASS


def test_signatures_refuses_what_was_nested_too_deep_to_scan() -> None:
    # issue 12 item 4: parts past DEPTH_MAX were passed unscanned (250).
    check = Signatures()
    facts = data_facts()
    deep = dataclasses.replace(facts, message=dataclasses.replace(message(), too_deep=True))
    verdict = check.check(Stage.DATA, deep, SessionState())
    assert verdict.reply == TOO_DEEP
    assert verdict.reply.text == "we don't accept email nested deeper than 64 MIME levels (#5.3.4)"
    assert verdict.why == "mime nested too deep"
    ok = dataclasses.replace(deep, env={"EXECUTABLEOK": ""})
    assert check.check(Stage.DATA, ok, SessionState()) == PASS


def test_data_stage_order_first_refusal_wins(caplog: pytest.LogCaptureFixture) -> None:
    pipe = Pipeline([Databytes(1000), Hops(), Signatures()])
    assert pipe.names(Stage.DATA) == ["databytes", "hops", "signatures"]
    assert pipe.names(Stage.MAIL) == ["databytes"]
    facts = data_facts(size=5000, hops=MAX_HOPS, executable=True)
    with caplog.at_level(logging.INFO, logger="qtoaster.policy"):
        verdict = pipe.run(Stage.DATA, facts, "c9")
    assert verdict == Verdict(reply=DATABYTES)
    assert caplog.messages == [
        'refused session=c9 stage=data reason=databytes code=552 reply="552 sorry, that message'
        ' size exceeds my databytes limit (#5.3.4)" client=192.0.2.7 helo=client.test'
        " sender=s@far.test to=a@ours.test,b@ours.test"
    ]


# -- rblsmtpd at CONNECT -------------------------------------------------------------------


def connect_facts(env: dict[str, str], listener: str = "smtp") -> Facts:
    return Facts(remote_ip="192.0.2.7", local_ip="127.0.0.1", env=env, listener=listener)


@pytest.mark.parametrize(
    ("value", "reply"),
    [
        ("", None),
        ("go away", Reply(451, "go away")),
        ("-go away", Reply(553, "go away")),
    ],
)
def test_rblsmtpd_variable_decides_at_once(value: str, reply: Reply | None) -> None:
    verdict = Rblsmtpd(None).check(
        Stage.CONNECT, connect_facts({"RBLSMTPD": value}), SessionState()
    )
    assert isinstance(verdict, Verdict)
    assert verdict.reply == reply


def test_rblsmtpd_screens_the_smtp_listener_only() -> None:
    for listener in ("submission", "smtps"):
        facts = connect_facts({"RBLSMTPD": "blocked"}, listener)
        assert Rblsmtpd(None).check(Stage.CONNECT, facts, SessionState()) == PASS


def test_connect_rejection_is_logged_by_the_pipeline(caplog: pytest.LogCaptureFixture) -> None:
    pipe = Pipeline([Rblsmtpd(None)])
    with caplog.at_level(logging.INFO, logger="qtoaster.policy"):
        verdict = pipe.run(Stage.CONNECT, connect_facts({"RBLSMTPD": "-spam"}), "c1")
    assert isinstance(verdict, Verdict) and verdict.reply == Reply(553, "spam")
    assert caplog.messages == [
        'refused session=c1 stage=connect reason=rblsmtpd code=553 reply="553 spam"'
        ' client=192.0.2.7 why="listed by RBLSMTPD"'
    ]


# -- what passing checks give the session --------------------------------------------------


@dataclass
class Gives:
    name: str
    verdict: Verdict
    later: bool = False
    stages: frozenset[Stage] = frozenset({Stage.DATA})

    def check(self, stage: Stage, facts: Facts, state: SessionState) -> object:
        state.chkuser.recipients += 1  # the only mutable thing a check is handed
        return self._later() if self.later else self.verdict

    async def _later(self) -> Verdict:
        return self.verdict


async def test_headers_are_collected_in_order_and_state_is_the_callers() -> None:
    state = SessionState()
    pipe = Pipeline(
        [
            Gives("one", Verdict(headers=b"X-One: 1\n")),
            Gives("two", Verdict(headers=b"X-Two: 2\n", delay=1.0), later=True),
            Gives("three", PASS),
        ]
    )
    answer = pipe.run(Stage.DATA, data_facts(), "c1", state)
    assert inspect.isawaitable(answer)
    assert await answer == Verdict(headers=b"X-One: 1\nX-Two: 2\n", delay=1.0)
    assert state.chkuser.recipients == 3


def test_a_stage_without_checks_passes_at_once() -> None:
    assert Pipeline([Hops()]).run(Stage.HELO, connect_facts({})) is PASS
