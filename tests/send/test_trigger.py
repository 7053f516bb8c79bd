"""send/trigger.py: the words of the trigger FIFO."""

from __future__ import annotations

from qtoaster.send.trigger import Word, parse_word

QID = "0123456789abcdef-1a-2"


def test_words() -> None:
    assert parse_word(QID) == (Word.NEW, QID)
    assert parse_word(f"!{QID}") == (Word.RETRY, QID)
    assert parse_word("!*") == (Word.RETRY, "*")
    assert parse_word(f"~{QID}") == (Word.HOLD, QID)
    assert parse_word("^") == (Word.PAUSE, "")


def test_anything_else_is_ignored() -> None:
    for word in ("", "!", "~", "~*", "!nope", "../etc", f"?{QID}", "*", "^^", "^x"):
        assert parse_word(word) is None
