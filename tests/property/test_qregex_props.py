"""Properties of qregex: any pattern line and subject is handled (compiles or never fires),
and the translation agrees with glibc's regcomp/regexec where both are defined."""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qtoaster.policy.checks.qregex import Qregex, parse_rule, problems
from qtoaster.policy.ere import EreError, compile_ere
from qtoaster.policy.verdict import Facts, SessionState, Stage

# Control files for the check, shared by the examples (hypothesis cannot use tmp_path).
_CONTROL = tempfile.TemporaryDirectory(prefix="qregex-props-")
SPECIAL = list("ab.^$*+?{}()[]|\\-:=,1209!%#@AZ<>w`'s")
patterns = st.one_of(
    st.lists(st.sampled_from(SPECIAL), max_size=12).map("".join),
    st.text(max_size=20),
)
subjects = st.one_of(
    st.lists(st.sampled_from(list("abAB.$*{}[]-!@#:1w'` ")), max_size=12).map("".join),
    st.text(max_size=30),
)


@given(patterns, subjects)
@settings(max_examples=400, deadline=None)
def test_any_line_compiles_or_never_fires(line: str, subject: str) -> None:
    rule = parse_rule("badmailto", 1, line)
    assert (rule.pattern is None) == (rule.error is not None)
    if rule.pattern is not None:
        rule.pattern.search(subject, timeout=0.05)


@given(st.lists(patterns, max_size=5), subjects, subjects)
@settings(max_examples=100, deadline=None)
def test_the_check_never_crashes(lines: list[str], sender: str, recipient: str) -> None:
    directory = Path(_CONTROL.name)
    text = "\n".join(lines) + "\n"
    for name in ("badhelo", "badmailfrom", "badmailto"):
        (directory / name).write_text(text, errors="surrogateescape")
    check = Qregex.from_control_dir(directory, timeout=0.05)
    facts = Facts("192.0.2.1", "127.0.0.1", {}, helo=sender, sender=sender, recipient=recipient)
    verdict = check.check(Stage.RCPT, facts, SessionState())
    assert verdict.reply is None or verdict.reply.code == 553
    assert all("line" in problem for problem in problems(directory))


# -- against glibc ---------------------------------------------------------------------------

_LIBC_PATH = ctypes.util.find_library("c")
_LIBC = ctypes.CDLL(_LIBC_PATH) if _LIBC_PATH else None
REG_EXTENDED, REG_ICASE, REG_NOSUB = 1, 2, 8
# Where glibc is known to differ (and we follow POSIX instead): an escaped lower-case
# letter under REG_ICASE matches nothing; range ends between a letter and a non-letter
# are case-folded first; backslashes inside an interval are skipped.
_GLIBC_QUIRKS = re.compile(r"[A-Za-z]-|-[A-Za-z]|\\[a-z]|\{[^}]*\\")


def _glibc(pattern: str, subject: str) -> bool | None:
    """glibc's answer: matched or not, None if regcomp refuses the pattern."""
    libc = _LIBC
    assert libc is not None
    compiled = ctypes.create_string_buffer(256)  # >= sizeof(regex_t)
    if libc.regcomp(compiled, pattern.encode(), REG_EXTENDED | REG_ICASE | REG_NOSUB):
        return None
    try:
        return bool(libc.regexec(compiled, subject.encode(), 0, None, 0) == 0)
    finally:
        libc.regfree(compiled)


def _ours(pattern: str, subject: str) -> bool | None:
    try:
        return compile_ere(pattern).search(subject) is not None
    except EreError:
        return None


@pytest.mark.skipif(_LIBC is None, reason="no C library to compare with")
@given(
    st.lists(st.sampled_from(SPECIAL), min_size=1, max_size=10).map("".join),
    st.lists(st.sampled_from(list("abAB.$*{}[]-!@#:1w'` ")), max_size=10).map("".join),
)
@settings(max_examples=500, deadline=None)
def test_agrees_with_glibc(pattern: str, subject: str) -> None:
    if _GLIBC_QUIRKS.search(pattern.replace("\\\\", "")):
        return
    assert _ours(pattern, subject) == _glibc(pattern, subject)


@given(st.lists(patterns, min_size=1, max_size=8), subjects)
@settings(max_examples=300, deadline=None)
def test_the_combined_search_names_the_same_first_firing_line(
    lines: list[str], subject: str
) -> None:
    """RuleFile's one-alternation fast path never changes which line fires first."""
    from qtoaster.policy.checks.qregex import RuleFile

    rules = tuple(parse_rule("badmailto", n, line) for n, line in enumerate(lines, 1))
    fast = RuleFile("badmailto", rules, 0.05)
    walk = RuleFile("badmailto", rules, 0.05)
    walk._combined = None  # the line-by-line walk only
    expected = walk.first_firing(subject)
    assert fast.first_firing(subject) == expected
