"""Whatever header bytes a sender sends, mailauth gives a result and never crashes."""

from __future__ import annotations

import dns.resolver
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qtoaster.mailauth.dnsquery import Lookup
from qtoaster.mailauth.verifier import Verifier


class Empty(Lookup):
    """A DNS where no name has any record (no server: the verifier's own logic only)."""

    def __init__(self) -> None:
        super().__init__(dns.resolver.Resolver(configure=False))

    def _answer(self, name: str, rdtype: str) -> list[object]:
        return []


VERIFIER = Verifier(Empty(), "mx.example.net", workers=1)

header_line = st.one_of(
    st.binary(max_size=200),
    st.builds(
        lambda name, value: name + b": " + value,
        st.sampled_from(
            [
                b"DKIM-Signature",
                b"ARC-Seal",
                b"ARC-Message-Signature",
                b"ARC-Authentication-Results",
                b"Authentication-Results",
                b"From",
                b"X-Qtoaster-Quarantine",
            ]
        ),
        st.binary(max_size=200),
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(header_line, max_size=8), body=st.binary(max_size=200))
def test_any_header_gives_a_result(lines: list[bytes], body: bytes) -> None:
    message = b"\n".join(lines) + b"\n\n" + body
    evaluation = VERIFIER.evaluate_message("192.0.2.1", "client.example", "a@b.example", message)
    assert evaluation.header.startswith(b"Authentication-Results: mx.example.net;")
    assert evaluation.dmarc.result in ("pass", "fail", "none", "temperror", "permerror")
    for start, end in evaluation.drop:
        assert 0 <= start < end <= len(message)
