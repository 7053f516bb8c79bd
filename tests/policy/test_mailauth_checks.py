"""The spf, fcrdns and dmarc checks through the pipeline, against a dnsmasq zone: who is
judged, the per-domain settings, the replies and the log line's check name."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.dnsserver import DnsServer, Zone

from qtoaster.config.settings import settings_from_toml
from qtoaster.mailauth.dnsquery import Lookup
from qtoaster.mailauth.verifier import Verifier
from qtoaster.policy.checks.mailauth import Dmarc, FcrdnsCheck, MailAuth, Spf
from qtoaster.policy.pipeline import Pipeline
from qtoaster.policy.verdict import Facts, MessageFacts, SessionState, Stage, Verdict

CLIENT = "127.0.0.20"  # PTR client.good.test, whose A is CLIENT: FCrDNS passes
NO_PTR = "127.0.0.30"  # PTR NXDOMAIN


@pytest.fixture(scope="module")
def verifier() -> Iterator[Verifier]:
    zone = Zone(
        domains=("test", "30.0.0.127.in-addr.arpa"),
        hosts=[("client.good.test", CLIENT)],
        txt=[
            ("good.test", "v=spf1 ip4:127.0.0.20 -all"),
            ("strict.test", "v=spf1 -all"),
            ("_dmarc.strict.test", "v=DMARC1; p=reject"),
            ("quar.test", "v=spf1 -all"),
            ("_dmarc.quar.test", "v=DMARC1; p=quarantine"),
        ],
        ttl=3600,
    )
    with DnsServer(zone) as address:
        verifier = Verifier(Lookup.build([address], 2.0), "mx.example.net", workers=1)
        yield verifier
        verifier.close()


def pipeline(verifier: Verifier, toml: str = "") -> Pipeline:
    import tomllib

    settings = settings_from_toml(tomllib.loads(toml)).mailauth
    shared = MailAuth(settings, verifier)
    return Pipeline([Spf(shared), FcrdnsCheck(shared), Dmarc(shared)])


def facts(
    tmp_path: Path,
    sender: str,
    from_: str,
    *,
    ip: str = CLIENT,
    recipients: tuple[str, ...] = ("alice@example.com",),
    env: dict[str, str] | None = None,
    listener: str = "smtp",
    authenticated: bool = False,
    extra: bytes = b"",
) -> Facts:
    path = tmp_path / "spool"
    head = b"queue-header\n"
    message = extra + f"From: {from_}\nSubject: s\n\nbody\n".encode()
    path.write_bytes(head + message)
    return Facts(
        remote_ip=ip,
        local_ip="127.0.0.1",
        env=env or {},
        helo="client.good.test",
        sender=sender,
        recipients=recipients,
        listener=listener,
        authenticated=authenticated,
        message=MessageFacts(str(path), len(head), len(message), 1, False),
    )


async def run(p: Pipeline, f: Facts) -> Verdict:
    result = p.run(Stage.DATA, f, "test", SessionState())
    return await result if inspect.isawaitable(result) else result


async def test_spf_fail_refused_only_when_asked(
    verifier: Verifier, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    f = facts(tmp_path, "x@strict.test", "x@good.test")
    recorded = await run(pipeline(verifier), f)
    assert recorded.reply is None
    assert b"spf=fail smtp.mailfrom=x@strict.test" in recorded.headers
    with caplog.at_level(logging.INFO, logger="qtoaster.policy"):
        refused = await run(pipeline(verifier, '[mailauth]\nspf_fail = "reject"\n'), f)
    assert refused.reply is not None
    assert refused.reply.render() == b"550 sorry, SPF check of the sender failed (#5.7.23)\r\n"
    assert "reason=spf" in caplog.text


async def test_fcrdns_require(verifier: Verifier, tmp_path: Path) -> None:
    require = pipeline(verifier, '[mailauth]\nfcrdns = "require"\n')
    good = await run(require, facts(tmp_path, "x@good.test", "x@good.test"))
    assert good.reply is None
    assert b"iprev=pass policy.iprev=127.0.0.20" in good.headers
    bad = await run(require, facts(tmp_path, "x@good.test", "x@good.test", ip=NO_PTR))
    assert bad.reply is not None
    assert bad.reply.render().startswith(b"450 sorry, no forward-confirmed reverse DNS")
    recorded = await run(
        pipeline(verifier), facts(tmp_path, "x@good.test", "x@good.test", ip=NO_PTR)
    )
    assert recorded.reply is None and b"iprev=fail" in recorded.headers


async def test_quarantine_junk_tag_and_record(verifier: Verifier, tmp_path: Path) -> None:
    f = facts(tmp_path, "x@quar.test", "boss@quar.test")
    junk = await run(pipeline(verifier), f)
    assert junk.headers.endswith(b"X-Qtoaster-Quarantine: junk\n")
    tag = await run(pipeline(verifier, '[mailauth]\ndmarc_quarantine = "tag"\n'), f)
    assert tag.headers.endswith(b"X-Qtoaster-Quarantine: tag\n")
    record = await run(pipeline(verifier, '[mailauth]\ndmarc_quarantine = "record"\n'), f)
    assert b"X-Qtoaster-Quarantine" not in record.headers
    assert b"dmarc=fail header.from=quar.test" in record.headers


async def test_mixed_recipients_get_the_mildest_action(verifier: Verifier, tmp_path: Path) -> None:
    toml = '[mailauth.domains."lenient.example"]\ndmarc_reject = "record"\n'
    both = ("a@example.com", "b@lenient.example")
    f = facts(tmp_path, "x@strict.test", "ceo@strict.test", recipients=both)
    verdict = await run(pipeline(verifier, toml), f)
    assert verdict.reply is None
    assert b"dmarc=fail" in verdict.headers
    alone = facts(tmp_path, "x@strict.test", "ceo@strict.test")
    refused = await run(pipeline(verifier, toml), alone)
    assert refused.reply is not None and refused.reply.code == 550


async def test_who_is_not_judged(verifier: Verifier, tmp_path: Path) -> None:
    forged = b"Authentication-Results: mx.example.net; dmarc=pass\n"
    p = pipeline(verifier)
    for f in (
        facts(tmp_path, "x@strict.test", "ceo@strict.test", env={"RELAYCLIENT": ""}, extra=forged),
        facts(tmp_path, "x@strict.test", "ceo@strict.test", env={"MAILAUTH": "0"}, extra=forged),
        facts(tmp_path, "x@strict.test", "ceo@strict.test", authenticated=True, extra=forged),
        facts(tmp_path, "x@strict.test", "ceo@strict.test", listener="submission", extra=forged),
    ):
        verdict = await run(p, f)
        assert verdict.reply is None and verdict.headers == b""
        assert verdict.drop == ((0, len(forged)),)  # our verdict cannot be brought in
    disabled = pipeline(verifier, "[mailauth]\nenabled = false\n")
    forced = facts(tmp_path, "x@strict.test", "ceo@strict.test", env={"MAILAUTH": "1"})
    assert (await run(disabled, forced)).reply is not None  # MAILAUTH=1 switches it on
