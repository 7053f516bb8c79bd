"""Properties of the .qmail parser: it only ever raises DotQmailError, on any bytes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from qtoaster.core.envelope import encode
from qtoaster.delivery.dotqmail import DotQmail, DotQmailError, parse

# Bytes that matter to the parser, mixed with anything at all.
interesting = st.sampled_from([b"\n", b" ", b"\t", b"\r", b"\0", b"|", b"&", b"#", b"+list"])
chunks = st.lists(st.one_of(interesting, st.binary(max_size=8)), max_size=30)
files = chunks.map(b"".join)


def parse_or_error(data: bytes, executable: bool = False) -> DotQmail | DotQmailError:
    try:
        return parse(data, executable=executable)
    except DotQmailError as exc:
        return exc


@given(st.one_of(files, st.binary()), st.booleans())
def test_parse_raises_only_dotqmailerror(data: bytes, executable: bool) -> None:
    result = parse_or_error(data, executable)
    if isinstance(result, DotQmailError):
        assert result.temporary
        return
    assert result.forward_only or not executable
    for instruction in result.instructions:
        raw = encode(instruction.value)  # surrogateescape gives the file's bytes back
        assert b"\n" not in raw and b"\0" not in raw
        if b"\0" not in data:  # else a NUL may hide stripped blanks, as in qmail-local
            assert not raw.endswith((b" ", b"\t"))


@given(files)
def test_final_newline_is_optional(data: bytes) -> None:
    if data and not data.endswith(b"\n"):
        a, b = parse_or_error(data), parse_or_error(data + b"\n")
        assert repr(a) == repr(b)


@given(files, st.lists(st.sampled_from([b"", b" ", b"\t", b" \t "]), min_size=1))
def test_trailing_blanks_do_not_matter(data: bytes, blanks: list[bytes]) -> None:
    lines = data.split(b"\n")
    padded = b"\n".join(line + blanks[n % len(blanks)] for n, line in enumerate(lines))
    if data:  # b"" has no lines, while a lone blank would be a (blank) first line
        assert repr(parse_or_error(data)) == repr(parse_or_error(padded))
