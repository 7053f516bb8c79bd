""".qmail parsing (spec 16.3, qmail-local.c) and reading with the safety rules (spec 16.2)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qtoaster.delivery.dotqmail import (
    BLANK_FIRST_LINE,
    FILE_IN_FORWARD_ONLY,
    PROGRAM_IN_FORWARD_ONLY,
    WRITABLE,
    DotQmail,
    DotQmailError,
    Instruction,
    Kind,
    parse,
    read_dotqmail,
)

F, P, M, B = Kind.FORWARD, Kind.PROGRAM, Kind.MAILDIR, Kind.MBOX


def kinds(data: bytes, **kw: bool) -> list[tuple[Kind, str]]:
    return [(i.kind, i.value) for i in parse(data, **kw).instructions]


GOLDEN = [
    (b"./Maildir/\n", [(M, "./Maildir/")]),
    (b"/home/a/Maildir/\n", [(M, "/home/a/Maildir/")]),
    (b"./mbox\n", [(B, "./mbox")]),
    (b"/var/mail/alice\n", [(B, "/var/mail/alice")]),
    (b"|preline procmail\n", [(P, "preline procmail")]),
    (b"| cat > x\n", [(P, " cat > x")]),  # leading space of the command kept
    (b"&bob@example.com\n", [(F, "bob@example.com")]),
    (b"bob@example.com\n", [(F, "bob@example.com")]),
    (b"bob\n", [(F, "bob")]),
    (b"# a comment\n./Maildir/\n", [(M, "./Maildir/")]),
    (b"+ignored\n+lis\n+listx\n./Maildir/\n", [(M, "./Maildir/")]),
    (b"./Maildir/  \t \n", [(M, "./Maildir/")]),  # trailing blanks stripped
    (b"./Maildir/\n\n\n&bob\n", [(M, "./Maildir/"), (F, "bob")]),  # later blank lines
    (b"./Maildir/", [(M, "./Maildir/")]),  # last line without newline
    (b"./Maildir/\n&bob", [(M, "./Maildir/"), (F, "bob")]),
    (b"  leading\n", [(F, "  leading")]),  # only TRAILING blanks go
    # qmail-local treats '\r' as data: a CRLF file gives paths and commands ending in \r,
    # and "./Maildir/\r" does not end with '/', so it is an mbox.
    (b"./Maildir/\r\n|cmd\r\n", [(B, "./Maildir/\r"), (P, "cmd\r")]),
    # A line is a C string to qmail-local: it ends at NUL; the Maildir test still looks
    # at the stripped line's last byte.
    (b"|cmd\0junk\n", [(P, "cmd")]),
    (b"./mb\0x/\n", [(M, "./mb")]),
    (b"./Maildir/\n\0ignored\n", [(M, "./Maildir/")]),  # starts with NUL: blank
    (b"&\n", [(F, "")]),  # qmail forwards to the empty address: the caller decides
    (b"\xffbad@example.com\n", [(F, "\udcffbad@example.com")]),  # surrogateescape
]


@pytest.mark.parametrize(("data", "expected"), GOLDEN)
def test_golden(data: bytes, expected: list[tuple[Kind, str]]) -> None:
    assert kinds(data) == expected


def test_result_types() -> None:
    assert parse(b"./Maildir/\n&bob\n") == DotQmail(
        (Instruction(Kind.MAILDIR, "./Maildir/"), Instruction(Kind.FORWARD, "bob")), False
    )


def test_empty_data_has_no_instructions() -> None:
    assert parse(b"") == DotQmail((), False)


@pytest.mark.parametrize("data", [b"\n", b"\n./Maildir/\n", b"  \t\n&bob\n", b"\t", b"\0x\n"])
def test_blank_first_line_is_temporary_error(data: bytes) -> None:
    with pytest.raises(DotQmailError) as info:
        parse(data)
    assert info.value.report == BLANK_FIRST_LINE
    assert info.value.temporary
    assert str(info.value) == BLANK_FIRST_LINE


def test_tabs_only_line_does_not_eat_the_previous_line() -> None:
    # Vanilla qmail-local's precedence bug stripped backwards past the line start,
    # destroying "|prog" here; the fix stops at the start of each line.
    assert kinds(b"|prog\n\t\t\n&bob\n") == [(P, "prog"), (F, "bob")]
    assert kinds(b"./Maildir/\n \t \n") == [(M, "./Maildir/")]


def test_trailing_tab_stripped_but_maildir_detected_after_strip() -> None:
    assert kinds(b"./Maildir/\t\n./mbox \t\n") == [(M, "./Maildir/"), (B, "./mbox")]


def test_plus_list_sets_forward_only_for_following_lines() -> None:
    result = parse(b"|before\n+list\n&bob\nalice\n")
    assert result.forward_only
    assert [i.kind for i in result.instructions] == [P, F, F]
    assert parse(b"+list  \n&bob\n").forward_only  # trailing blanks stripped first
    assert not parse(b"+List\n&bob\n").forward_only


@pytest.mark.parametrize(
    ("data", "report"),
    [
        (b"+list\n|prog\n", PROGRAM_IN_FORWARD_ONLY),
        (b"+list\n./Maildir/\n", FILE_IN_FORWARD_ONLY),
        (b"+list\n/var/mail/x\n", FILE_IN_FORWARD_ONLY),
    ],
)
def test_forward_only_refuses_programs_and_files(data: bytes, report: str) -> None:
    with pytest.raises(DotQmailError) as info:
        parse(data)
    assert (info.value.report, info.value.temporary) == (report, True)


def test_executable_file_is_forward_only() -> None:
    assert parse(b"&bob\n# c\n", executable=True) == DotQmail((Instruction(F, "bob"),), True)
    with pytest.raises(DotQmailError, match="prog delivery"):
        parse(b"&bob\n|prog\n", executable=True)
    with pytest.raises(DotQmailError, match="file delivery"):
        parse(b"./Maildir/\n", executable=True)


def test_thousand_line_file() -> None:
    data = b"".join(b"&user%d@example.com\n" % n for n in range(1000))
    result = parse(data)
    assert len(result.instructions) == 1000
    assert result.instructions[999] == Instruction(F, "user999@example.com")


# read_dotqmail -----------------------------------------------------------------------


def write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


def test_missing_file_is_none(tmp_path: Path) -> None:
    assert read_dotqmail(tmp_path / ".qmail-nobody") is None
    assert read_dotqmail(tmp_path / "notadir" / ".qmail") is None


def test_empty_file_is_none(tmp_path: Path) -> None:
    assert read_dotqmail(write(tmp_path / ".qmail", b"")) is None


def test_directory_is_none(tmp_path: Path) -> None:
    (tmp_path / ".qmail").mkdir()
    assert read_dotqmail(tmp_path / ".qmail") is None


def test_fifo_is_none_and_does_not_hang(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / ".qmail")
    assert read_dotqmail(tmp_path / ".qmail") is None


def test_reads_and_parses(tmp_path: Path) -> None:
    result = read_dotqmail(write(tmp_path / ".qmail", b"./Maildir/\n", 0o644))
    assert result == DotQmail((Instruction(M, "./Maildir/"),), False)


@pytest.mark.parametrize("mode", [0o602, 0o620, 0o666])
def test_writable_file_is_refused(tmp_path: Path, mode: int) -> None:
    with pytest.raises(DotQmailError) as info:
        read_dotqmail(write(tmp_path / ".qmail", b"./Maildir/\n", mode))
    assert (info.value.report, info.value.temporary) == (WRITABLE, True)


def test_writable_mask_is_adjustable(tmp_path: Path) -> None:
    path = write(tmp_path / ".qmail", b"&bob\n", 0o620)
    assert read_dotqmail(path, patrn=0o002) == DotQmail((Instruction(F, "bob"),), False)


def test_writable_empty_file_is_still_refused(tmp_path: Path) -> None:
    # qmail-local checks the mode before it reads the contents.
    with pytest.raises(DotQmailError, match="writable"):
        read_dotqmail(write(tmp_path / ".qmail", b"", 0o666))


def test_executable_file_is_forward_only_when_read(tmp_path: Path) -> None:
    path = write(tmp_path / ".qmail-list", b"&a@example.com\n&b@example.com\n", 0o700)
    result = read_dotqmail(path)
    assert result is not None and result.forward_only
    write(path, b"|prog\n", 0o700)
    with pytest.raises(DotQmailError, match="x bit set"):
        read_dotqmail(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads unreadable files")
def test_unreadable_file_is_temporary(tmp_path: Path) -> None:
    with pytest.raises(DotQmailError) as info:
        read_dotqmail(write(tmp_path / ".qmail-x", b"&bob\n", 0o000))
    assert info.value.temporary
    assert info.value.report.startswith("Unable to open .qmail-x: ")
    assert info.value.report.endswith(". (#4.3.0)")


def test_open_error_is_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Works as root too: EACCES is what a non-root user gets for a 000 file.
    def refuse(*args: object, **kwargs: object) -> int:
        raise PermissionError(13, "Permission denied", str(tmp_path / ".qmail-x"))

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(DotQmailError) as info:
        read_dotqmail(tmp_path / ".qmail-x")
    assert info.value.report == "Unable to open .qmail-x: Permission denied. (#4.3.0)"
    assert info.value.temporary
