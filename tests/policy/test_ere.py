"""POSIX ERE -> regex translation: glibc regcomp's answers (REG_EXTENDED|REG_ICASE).

The expected values were taken from glibc 2.36's regcomp/regexec; the property test
(tests/property/test_qregex_props.py) compares against the live libc as well.
"""

from __future__ import annotations

import time

import pytest

from qtoaster.policy.ere import (
    BAD_BACKREF,
    BAD_CLASS,
    BAD_COLLATION,
    BAD_INTERVAL,
    BAD_PRECEDING,
    BAD_RANGE,
    TOO_BIG,
    TRAILING_BACKSLASH,
    UNMATCHED_BRACE,
    UNMATCHED_BRACKET,
    UNMATCHED_PAREN,
    EreError,
    compile_ere,
    translate,
)


def matches(pattern: str, subject: str) -> bool:
    return compile_ere(pattern).search(subject) is not None


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        # the seed's examples (spec 8)
        ("\\.", "mail.example.com", True),
        ("\\.", "localhost", False),
        (".*spam.*", "SPAMMER@example.com", True),
        ("@", "user", False),
        ("[!%#:*^(){}]", "a%b@example.com", True),
        ("[!%#:*^(){}]", "x^y", True),
        ("[!%#:*^(){}]", "plain@example.com", False),
        ("@.*@", "a@b@c", True),
        ("@.*@", "a@b", False),
        # case-insensitive, unanchored search; anchors
        ("AOL\\.COM$", "x@aol.com", True),
        ("^user@", "xuser@example.com", False),
        ("a^b", "a^b", False),
        ("a$b", "a$b", False),
        ("aol.com", "aolxcom", True),  # the spec's pitfall: "." is any character
        # stacked quantifiers repeat (never Python's lazy/possessive forms)
        ("a**", "aaa", True),
        ("a*?b", "b", True),
        ("a+?", "a", True),
        ("a?*", "aa", True),
        ("a{1}{2}", "aa", True),
        ("x*{2}", "x", True),
        # intervals
        ("a{,2}", "aa", True),
        ("a{,}", "b", True),
        ("a{1,}", "aa", True),
        ("x{0}", "y", True),
        ("a{2,3}b", "xaab", True),
        ("a{2,3}b", "xab", False),
        # empty alternatives and groups
        ("()", "x", True),
        ("a|", "x", True),
        ("(|a)", "x", True),
        ("a||b", "x", True),
        # literal ) and } and escaped specials
        ("a)", "a)", True),
        (")", "x)", True),
        ("}", "}", True),
        ("\\{", "{", True),
        ("\\(", "(", True),
        ("\\-", "-", True),
        # brackets
        ("[]a]", "]", True),
        ("[^]a]", "b", True),
        ("[^]a]", "]", False),
        ("[a-]", "-", True),
        ("[\\]]", "\\]", True),  # "\" is literal inside brackets: [\] then "]"
        ("[\\d]", "\\", True),
        ("[\\d]", "d", True),
        ("[a[]", "[", True),
        ("[[:alpha:]]", "Q", True),
        ("[[:alpha:]]", "5", False),
        ("[[:digit:][:alpha:]]", "5", True),
        ("[^[:alpha:]]", "1", True),
        ("[[:alpha:]!]", "!", True),
        ("[[:upper:]]", "a", True),  # REG_ICASE
        ("[[:space:]]", "a b", True),
        ("[[:punct:]]", "abc", False),
        ("[[:punct:]]", "a~", True),
        ("[[:xdigit:]]+$", "DEADbeef", True),
        ("^[[:alnum:]_.-]+@", "john.doe-1@x", True),
        ("[[.a.]]", "a", True),
        ("[[.-.]]", "-", True),
        ("[[=a=]]", "A", True),
        ("[%--]", "+", True),
        ("[--/]", ".", True),
        ("[a-a]", "a", True),
        # GNU escapes and back references
        ("\\w", "_", True),
        ("\\s", " ", True),
        ("\\S", "a", True),
        ("\\W", "!", True),
        ("\\bfoo", "a foo", True),
        ("\\Bfoo", "afoo", True),
        ("\\<a", "ba", False),
        ("\\<a", "b a", True),
        ("a\\>", "ab", False),
        ("\\`a", "a", True),
        ("a\\'", "a", True),
        ("(a)\\1", "aa", True),
        ("(a)\\1", "ab", False),
        ("(a){0}\\1", "x", False),
        ("\\.com$", "AOL.COM", True),
        # Python syntax means nothing here
        ("a\\d", "ad", True),  # an escaped letter is that letter (not a digit class)
        ("a#b c", "A#B C", True),  # not verbose mode
    ],
)
def test_matches_like_glibc(pattern: str, subject: str, expected: bool) -> None:
    assert matches(pattern, subject) is expected


@pytest.mark.parametrize(
    ("pattern", "error"),
    [
        ("a{", UNMATCHED_BRACE),
        ("a{x", UNMATCHED_BRACE),
        ("a{1", UNMATCHED_BRACE),
        ("{1}", BAD_PRECEDING),
        ("{", BAD_PRECEDING),
        ("*a", BAD_PRECEDING),
        ("+a", BAD_PRECEDING),
        ("(*a)", BAD_PRECEDING),
        ("a|*b", BAD_PRECEDING),
        ("^*a", BAD_PRECEDING),
        ("$*", BAD_PRECEDING),
        ("(?:x)", BAD_PRECEDING),
        ("(+)", BAD_PRECEDING),
        ("a|{1}", BAD_PRECEDING),
        ("a{2,1}", BAD_INTERVAL),
        ("a{}", BAD_INTERVAL),
        ("a{ 1}", BAD_INTERVAL),
        ("a{1,2,3}", BAD_INTERVAL),
        ("a{x}", BAD_INTERVAL),
        ("a{32768}", TOO_BIG),
        ("[z-a]", BAD_RANGE),
        ("[a-z-9]", BAD_RANGE),
        ("[[:alpha:]-z]", BAD_RANGE),
        ("[[:foo:]]", BAD_CLASS),
        ("[[.hyphen.]]", BAD_COLLATION),
        ("a\\", TRAILING_BACKSLASH),
        ("\\", TRAILING_BACKSLASH),
        ("\\1", BAD_BACKREF),
        ("(a\\1)", BAD_BACKREF),
        ("[a", UNMATCHED_BRACKET),
        ("[]", UNMATCHED_BRACKET),
        ("[^]", UNMATCHED_BRACKET),
        ("[[:alpha:]", UNMATCHED_BRACKET),
        ("[[=]", UNMATCHED_BRACKET),
        ("[[:]", UNMATCHED_BRACKET),
        ("(a", UNMATCHED_PAREN),
        ("((a)", UNMATCHED_PAREN),
    ],
)
def test_refuses_what_glibc_refuses(pattern: str, error: str) -> None:
    with pytest.raises(EreError, match=None) as caught:
        compile_ere(pattern)
    assert str(caught.value) == error


def test_a_32767_interval_is_the_largest() -> None:
    assert matches("^a{32767}$", "a" * 32767)


def test_repeats_that_would_unroll_too_far_are_refused_fast() -> None:
    # regex unrolls bounded repeats: this one would take all memory to compile.
    started = time.monotonic()
    for pattern in ("(a{32767}){32767}", "((ab|cd){200}){200}", "(a{1000}){1000}"):
        with pytest.raises(EreError, match="too big"):
            compile_ere(pattern)
    assert time.monotonic() - started < 1
    assert matches("(a{49}){10}", "a" * 490)


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    with pytest.raises(EreError):
        compile_ere("(" * 5000 + "a" + ")" * 5000)


def test_dot_and_negated_brackets_match_newline_dollar_is_the_very_end() -> None:
    assert matches("a.b", "a\nb")
    assert matches("a[^x]b", "a\nb")
    assert not matches("a$", "a\n")


def test_literals_are_escaped_for_python() -> None:
    assert translate("a.b") == "a.b"
    with pytest.raises(EreError):
        translate("(?P<x>y)")  # "?" has nothing to repeat in an ERE
    assert translate("$") == "\\Z"
    assert translate("a**") == "(?:a*)*"


def test_non_ascii_is_matched_literally() -> None:
    assert matches("gr\u00fc\u00dfe", "GR\u00fc\u00dfE@example.com")  # ASCII folding only
    assert matches("\udcff", "x\udcffy")  # a surrogate-escaped byte
