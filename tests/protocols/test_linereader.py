"""LineReader: the input side shared by the SMTP and POP3 engines."""

from __future__ import annotations

from qtoaster.protocols.linereader import TOO_LONG, LineReader


def test_lines_limits_and_skipping() -> None:
    reader = LineReader()
    reader.feed(b"ab\r\ncd")
    assert reader.take_line(8) == b"ab\r"
    assert reader.take_line(8) is None and reader.buffered == 2
    reader.feed(b"efghijkl\nok\n")
    assert reader.take_line(8) is TOO_LONG  # reported once, the rest skipped to its LF
    assert reader.take_line(8) == b"ok"
    assert reader.take_line(8) is None and reader.buffered == 0


def test_take_all_put_back_clear_and_eof() -> None:
    reader = LineReader()
    reader.feed(b"x\nyz")
    assert reader.take_line(8) == b"x"
    assert reader.take_all() == b"yz" and reader.buffered == 0
    reader.put_back(b"z")
    reader.feed(b"w\n")
    assert reader.take_line(8) == b"zw"
    reader.feed(b"partial")
    reader.clear()
    assert reader.buffered == 0 and not reader.eof
    reader.feed(b"")
    assert reader.eof
