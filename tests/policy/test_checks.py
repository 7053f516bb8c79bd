from dataclasses import dataclass

import pytest

from qtoaster.core.reply import DATABYTES, NOT_RCPTHOSTS
from qtoaster.policy.checks.databytes import Databytes, effective_databytes
from qtoaster.policy.checks.rcpthosts import Rcpthosts
from qtoaster.policy.pipeline import Pipeline
from qtoaster.policy.verdict import Facts, Stage


@dataclass
class FakeControls:
    allowed: frozenset[str]

    def rcpthosts_allows(self, domain: str) -> bool:
        return domain == "" or domain in self.allowed


def facts(**kw: object) -> Facts:
    base: dict[str, object] = {"remote_ip": "192.0.2.1", "local_ip": "127.0.0.1", "env": {}}
    base.update(kw)
    return Facts(**base)  # type: ignore[arg-type]


PIPE = Pipeline([Databytes(1000), Rcpthosts(FakeControls(frozenset({"ours.test"})))])


@pytest.mark.parametrize(
    ("recipient", "env", "reply", "rewritten"),
    [
        ("a@ours.test", {}, None, None),
        ("a@far.test", {}, NOT_RCPTHOSTS, None),
        ("a@far.test", {"RELAYCLIENT": ""}, None, None),
        ("a", {}, None, None),
        ("a@far.test", {"RELAYCLIENT": "@fix.me"}, None, "a@far.test@fix.me"),
    ],
)
def test_rcpthosts_and_relayclient(
    recipient: str, env: dict[str, str], reply: object, rewritten: str | None
) -> None:
    verdict = PIPE.run(Stage.RCPT, facts(recipient=recipient, env=env))
    assert verdict.reply == reply
    assert verdict.rewritten == rewritten


@pytest.mark.parametrize(
    ("size", "env", "rejected"),
    [
        (None, {}, False),
        (1000, {}, False),
        (1001, {}, True),
        (5000, {"DATABYTES": "0"}, False),
        (50, {"DATABYTES": "10x"}, True),
    ],
)
def test_databytes_at_mail(size: int | None, env: dict[str, str], rejected: bool) -> None:
    verdict = PIPE.run(Stage.MAIL, facts(sender="s@x", size=size, env=env))
    assert (verdict.reply == DATABYTES) is rejected


def test_databytes_variable_parsed_like_scan_ulong() -> None:
    assert effective_databytes({}, 7) == 7
    assert effective_databytes({"DATABYTES": "123abc"}, 7) == 123
    assert effective_databytes({"DATABYTES": "junk"}, 7) == 0
