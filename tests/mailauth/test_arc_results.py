"""ARC chain validation, the Authentication-Results line, forged lines, and the spool
removing them."""

from __future__ import annotations

from pathlib import Path

import dkim

from qtoaster.core.envelope import Envelope
from qtoaster.mailauth.arc import verify_arc
from qtoaster.mailauth.dkimverify import DkimResult
from qtoaster.mailauth.dmarc import DmarcResult
from qtoaster.mailauth.results import authentication_results, forged_lines
from qtoaster.mailauth.spf import SpfResult
from qtoaster.queue.store import QueueStore

from .conftest import DOWN, dnsfunc

MESSAGE = (
    b"Authentication-Results: lists.example; spf=pass smtp.mailfrom=example.org\n"
    b"From: alice@example.org\n"
    b"To: list@lists.example\n"
    b"Subject: hi\n"
    b"\n"
    b"body\n"
)


def sealed(pem: bytes) -> bytes:
    lines = dkim.arc_sign(MESSAGE, b"arc", b"lists.example", pem, b"lists.example")
    return b"".join(lines) + MESSAGE


def test_arc_chain_pass_and_fail(rsa_key: tuple[Path, bytes, bytes]) -> None:
    _path, pem, record = rsa_key
    table = {"arc._domainkey.lists.example": record}
    message = sealed(pem).replace(b"\r\n", b"\n")
    assert verify_arc(message, dnsfunc(table)).result == "pass"
    assert verify_arc(message.replace(b"body", b"evil"), dnsfunc(table)).result == "fail"
    assert verify_arc(MESSAGE, dnsfunc(table)).result == "none"
    down = {"arc._domainkey.lists.example": DOWN}
    assert verify_arc(message, dnsfunc(down)).result == "temperror"  # type: ignore[arg-type]


def test_the_header_names_every_result() -> None:
    header = authentication_results(
        "mx.example.net",
        spf=SpfResult("pass", "bounce@example.org"),
        helo=SpfResult("none", "client.example.org"),
        dkim=[
            DkimResult("pass", "example.org", "s1", "abcd1234"),
            DkimResult("fail", "example.org", "s2", "zzzz"),
        ],
        dmarc=DmarcResult("pass", "example.org", "reject"),
        arc=None,
        iprev=("pass", "192.0.2.1"),
    )
    assert header == (
        b"Authentication-Results: mx.example.net;\n"
        b"\tspf=pass smtp.mailfrom=bounce@example.org;\n"
        b"\tdkim=pass header.d=example.org header.s=s1 header.b=abcd1234;\n"
        b"\tdkim=fail header.d=example.org header.s=s2 header.b=zzzz;\n"
        b"\tdmarc=pass header.from=example.org policy.dmarc=reject;\n"
        b"\tiprev=pass policy.iprev=192.0.2.1\n"
    )


def test_a_sender_cannot_break_the_header() -> None:
    header = authentication_results(
        "mx.example.net",
        spf=SpfResult("fail", 'x;"dkim=pass\n\t(@evil.example'),
        helo=None,
        dkim=[],
        dmarc=None,
        arc=None,
        iprev=None,
    )
    assert header.count(b"\n") == 3  # first line, spf, dkim=none: nothing injected
    methods = [part.split()[0].split("=")[0] for part in header.decode().split(";")[1:]]
    assert methods == ["spf", "dkim"]


def test_forged_lines_are_ours_only() -> None:
    message = (
        b"Received: from x\n"
        b"Authentication-Results: mx.example.net; spf=pass\n"
        b"\tsmtp.mailfrom=a@b\n"
        b"Authentication-Results: (comment) MX.EXAMPLE.NET; dkim=pass\n"
        b"Authentication-Results: other.example; spf=fail\n"
        b"Authentication-Results: mx.example.net.evil; spf=fail\n"
        b"x-qtoaster-quarantine: junk\n"
        b"\n"
        b"Authentication-Results: mx.example.net; in the body\n"
    )
    found = [message[a:b] for a, b in forged_lines(message, "mx.example.net")]
    assert found == [
        b"Authentication-Results: mx.example.net; spf=pass\n\tsmtp.mailfrom=a@b\n",
        b"Authentication-Results: (comment) MX.EXAMPLE.NET; dkim=pass\n",
        b"x-qtoaster-quarantine: junk\n",
    ]
    assert forged_lines(b"Subject: x\n\nbody\n", "mx.example.net") == ()


def test_the_spool_adds_and_removes_in_one_copy(tmp_path: Path) -> None:
    QueueStore.create(tmp_path / "queue")
    store = QueueStore(tmp_path / "queue", fsync=False)
    message = b"Received: x\nAuthentication-Results: me; spf=pass\nSubject: s\n\nbody\n"
    spool = store.open_spool(Envelope("a@b.example", ("c@d.example",)), "test")
    spool.write(message)
    drop = forged_lines(message, "me")
    spool.insert_before_message(b"Authentication-Results: me; spf=fail\n", drop)
    qid = spool.commit()
    stored = store.load(qid)
    data = Path(store.mess_path(qid)).read_bytes()
    assert data.endswith(b"Authentication-Results: me; spf=fail\nReceived: x\nSubject: s\n\nbody\n")
    assert stored is not None
