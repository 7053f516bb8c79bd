"""The head (DKIM-Signature fields) goes out before the queued message, through the real
remote agent, and counts for SIZE= (RFC 1870): a message that fits the peer's limit only
without its head is refused before DATA."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tests.smtppeer import PeerBehaviour, SmtpPeer

from qtoaster.cli.newhome import init_home
from qtoaster.config.loader import load_config
from qtoaster.core.home import Home
from qtoaster.core.outcome import Outcome
from qtoaster.remote.body import Body
from qtoaster.remote.child import remote_agent

MESSAGE = b"From: a@example.org\nSubject: x\n\n" + b"body line\n" * 10
HEAD = b"DKIM-Signature: v=1; a=ed25519-sha256; d=example.org; s=s1;\n\tb=" + b"A" * 60 + b"\n"


def _deliver(tmp_path: Path, peer: SmtpPeer) -> Outcome:
    home = Home(tmp_path / "home")
    init_home(home, "mx.example.org", smtp=["127.0.0.1:0"])
    (home.control / "smtproutes").write_text(f"far.test:127.0.0.1:{peer.port}\n")
    path = tmp_path / "mess"
    path.write_bytes(b"QUEUE HEADER\n" + MESSAGE)
    fd = os.open(path, os.O_RDONLY)

    async def run() -> Outcome:
        agent = remote_agent(load_config(home))
        try:
            body = Body(fd, len(b"QUEUE HEADER\n"), len(MESSAGE), HEAD)
            attempt = await agent.deliver(body, "a@example.org", ["x@far.test"], "far.test")
            return attempt.results[0].outcome
        finally:
            await agent.close()

    try:
        return asyncio.run(run())
    finally:
        os.close(fd)


def test_head_goes_first(tmp_path: Path) -> None:
    with SmtpPeer("127.0.0.1") as peer:
        assert _deliver(tmp_path, peer) is Outcome.SUCCESS
        (received,) = peer.wait_for(1, timeout=10)
    assert received.data == (HEAD + MESSAGE).replace(b"\n", b"\r\n")


def test_head_counts_for_size(tmp_path: Path) -> None:
    limit = len(MESSAGE) + len(HEAD) // 2  # the message alone fits; with its head it does not
    behaviour = PeerBehaviour(extensions=("PIPELINING", f"SIZE {limit}", "8BITMIME"))
    with SmtpPeer("127.0.0.1", behaviour=behaviour) as peer:
        assert _deliver(tmp_path, peer) is Outcome.PERMANENT
        assert peer.messages == []
