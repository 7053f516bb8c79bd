"""Maildir++ quota parsers: only QuotaSyntaxError, definitions round-trip, reads never fail."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from qtoaster.maildir.quota import (
    MAX_LIMIT,
    Quota,
    QuotaSyntaxError,
    Usage,
    parse_definition,
    parse_quota,
    read_maildirsize,
    record,
)

QUOTA_ALPHABET = st.sampled_from(list("0123456789SCBKMGkmgsc, -+.NOQUTAnoe\t"))
QUOTA_TEXT = st.one_of(st.text(QUOTA_ALPHABET, max_size=30), st.text(max_size=20))
LIMIT = st.one_of(st.none(), st.integers(1, MAX_LIMIT))


@settings(max_examples=500, deadline=None)
@given(QUOTA_TEXT)
def test_parse_quota_raises_only_syntax_errors(text: str) -> None:
    try:
        parsed = parse_quota(text)
    except QuotaSyntaxError:
        return
    assert parse_quota(parsed.definition()) == parsed


@settings(max_examples=500, deadline=None)
@given(QUOTA_TEXT)
def test_parse_definition_raises_only_syntax_errors(text: str) -> None:
    try:
        parsed = parse_definition(text)
    except QuotaSyntaxError:
        return
    assert parse_definition(parsed.definition()) == parsed


@settings(max_examples=300, deadline=None)
@given(LIMIT, LIMIT)
def test_definition_round_trips(size: int | None, count: int | None) -> None:
    quota = Quota(size, count)
    assert parse_definition(quota.definition()) == quota
    assert parse_quota(quota.definition()) == quota


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_reading_any_file_never_fails(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "maildirsize").write_bytes(data)
        read = read_maildirsize(Path(tmp))
    assert read is not None


@settings(max_examples=100, deadline=None)
@given(LIMIT, LIMIT, st.lists(st.tuples(st.integers(-(10**12), 10**12), st.integers(-9, 9))))
def test_recorded_deltas_sum_up(
    size: int | None, count: int | None, deltas: list[tuple[int, int]]
) -> None:
    quota = Quota(size, count)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "maildirsize"
        path.write_text(quota.definition() + "\n")
        for nbytes, ncount in deltas:
            record(Path(tmp), nbytes, ncount)
        read = read_maildirsize(Path(tmp))
        mtime = os.stat(path).st_mtime
    expected = Usage(sum(d[0] for d in deltas), sum(d[1] for d in deltas))
    assert read == (quota, expected, len(deltas), mtime)
