"""Maildir++ quota: parsing, byte-exact maildirsize, scans, the recalculation rules, errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qtoaster.maildir import quota as quota_module
from qtoaster.maildir.quota import (
    Quota,
    QuotaSyntaxError,
    Usage,
    check,
    newsize_name,
    parse_definition,
    parse_quota,
    percent_used,
    quota_root,
    read_maildirsize,
    recalculate,
    record,
)

HOST = "mx.test"
T0 = 1_700_000_000.0
MB10 = Quota(10485760, None)


def make_maildir(path: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True)
    return path


def put(maildir: Path, sub: str, name: str, content: bytes = b"x") -> None:
    (maildir / sub / name).write_bytes(content)


def write_size(maildir: Path, text: str, mtime: float = T0) -> Path:
    path = maildir / "maildirsize"
    path.write_bytes(text.encode())
    os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    return make_maildir(tmp_path / "Maildir")


# --- Quota and the parsers ----------------------------------------------------------------


def test_definition_lines() -> None:
    assert Quota(10485760, None).definition() == "10485760S"
    assert Quota(5000000, 1000).definition() == "5000000S,1000C"
    assert Quota(None, 1000).definition() == "1000C"
    assert Quota(None, None).definition() == ""
    assert Quota(None, None).unlimited
    assert not Quota(None, 1).unlimited


@pytest.mark.parametrize("bad", [0, -1, 2**63])
def test_quota_limits_must_be_positive_and_fit_off_t(bad: int) -> None:
    with pytest.raises(ValueError):
        Quota(bad, None)
    with pytest.raises(ValueError):
        Quota(None, bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("NOQUOTA", Quota(None, None)),
        ("noquota", Quota(None, None)),
        ("none", Quota(None, None)),
        ("", Quota(None, None)),
        ("  ", Quota(None, None)),
        ("0", Quota(None, None)),
        ("5M", Quota(5 * 1048576, None)),
        ("50m", Quota(50 * 1048576, None)),
        ("1G", Quota(1073741824, None)),
        ("512K", Quota(524288, None)),
        ("5MB", Quota(5 * 1048576, None)),
        ("10485760", Quota(10485760, None)),
        ("10485760S", Quota(10485760, None)),
        ("10485760B", Quota(10485760, None)),
        ("10485760S,1000C", Quota(10485760, 1000)),
        ("1000C,5M", Quota(5 * 1048576, 1000)),
        (" 5M , 100c ", Quota(5 * 1048576, 100)),
        ("1000C", Quota(None, 1000)),
        ("0S,10C", Quota(None, 10)),
        (str(2**63 - 1), Quota(2**63 - 1, None)),
    ],
)
def test_parse_quota_forms(text: str, expected: Quota) -> None:
    assert parse_quota(text) == expected


@pytest.mark.parametrize(
    "text",
    ["-5M", "abc", "5T", "1.5G", "5M,6M", "10C,20C", "5M,", ",", "S", "5 M", "５M",
     str(2**63), "8589934592G", "10485760S;1000C"],
)  # fmt: skip
def test_parse_quota_rejects(text: str) -> None:
    with pytest.raises(QuotaSyntaxError) as info:
        parse_quota(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("10485760S", Quota(10485760, None)),
        ("5000000S,1000C", Quota(5000000, 1000)),
        ("10485760", Quota(10485760, None)),
        ("1000C", Quota(None, 1000)),
        ("", Quota(None, None)),
        ("0S", Quota(None, None)),
    ],
)
def test_parse_definition(line: str, expected: Quota) -> None:
    assert parse_definition(line) == expected


@pytest.mark.parametrize("line", ["5M", "abc", "-1S", "1S,2S", "1X", str(2**63) + "S"])
def test_parse_definition_rejects(line: str) -> None:
    with pytest.raises(QuotaSyntaxError):
        parse_definition(line)


# --- reading maildirsize ------------------------------------------------------------------


def test_read_missing_is_none(maildir: Path) -> None:
    assert read_maildirsize(maildir) is None


def test_read_sums_delta_lines(maildir: Path) -> None:
    write_size(maildir, "5000000S,1000C\n1523 1\n-20480 -3\n")
    assert read_maildirsize(maildir) == (Quota(5000000, 1000), Usage(-18957, -2), 2, T0)


def test_read_tolerates_junk_like_sscanf(maildir: Path) -> None:
    # junk -> 0 0 and still a line; "12 x" -> 12 0; blank line -> a line; no final newline ok
    write_size(maildir, "10485760S\njunk\n12 x\n\n  7   1\n+3-1\n5 1")
    assert read_maildirsize(maildir) == (MB10, Usage(27, 1), 6, T0)


def test_read_stops_at_nul(maildir: Path) -> None:
    write_size(maildir, "10485760S\n5 1\n\x0099 9\n")
    assert read_maildirsize(maildir) == (MB10, Usage(5, 1), 1, T0)


def test_read_quota_line_like_courier_qcalc(maildir: Path) -> None:
    write_size(maildir, "x100S, 5C 7\n")
    assert read_maildirsize(maildir) == (Quota(7, 5), Usage(0, 0), 0, T0)
    write_size(maildir, "")
    assert read_maildirsize(maildir) == (Quota(None, None), Usage(0, 0), 0, T0)


# --- recalculation ------------------------------------------------------------------------


def populate(maildir: Path) -> Usage:
    """A Maildir++ with every case the scan must get right; returns the expected usage."""
    put(maildir, "new", "1700000000.M1P2Q3.host,S=1234", b"ten bytes!")  # name beats stat
    put(maildir, "new", ".hidden,S=9999")
    put(maildir, "cur", "1700000001.M1P2Q3.host,S=100:2,S")
    put(maildir, "cur", "1700000002.M1P2Q3.host,S=5000:2,ST")  # trashed
    put(maildir, "cur", "1700000003.M1P2Q3.host:2,", b"y" * 77)  # no S=: stat size
    put(maildir, "cur", "1700000004.M1P2Q3.host,S=8:2,Sa")
    sent = make_maildir(maildir / ".Sent")
    (sent / "maildirfolder").write_bytes(b"")
    put(sent, "cur", "1700000005.M1P2Q3.host,S=50:2,S")
    trash = make_maildir(maildir / ".Trash")
    put(trash, "cur", "1700000006.M1P2Q3.host,S=999:2,S")
    (maildir / ".Empty").mkdir()  # a folder without new/ and cur/
    (maildir / ".qmail").write_bytes(b"./Maildir/\n")  # a dot-file, not a folder
    (maildir / "courierimapkeywords").mkdir()
    return Usage(1234 + 100 + 77 + 8 + 50, 5)


def test_recalculate_writes_byte_exact_file(maildir: Path) -> None:
    expected = populate(maildir)
    assert recalculate(maildir, Quota(5000000, 1000), hostname=HOST, now=T0) == expected
    assert (maildir / "maildirsize").read_bytes() == b"5000000S,1000C\n1469 5\n"
    assert os.listdir(maildir / "tmp") == []


def test_recalculate_replaces_old_file(maildir: Path) -> None:
    write_size(maildir, "5S\n99 9\n1 1\n")
    put(maildir, "new", "1.M1P1Q1.h,S=10")
    assert recalculate(maildir, MB10, hostname=HOST, now=T0) == Usage(10, 1)
    assert (maildir / "maildirsize").read_bytes() == b"10485760S\n10 1\n"


def test_newsize_name() -> None:
    assert newsize_name(T0 + 0.7, HOST) == f"1700000000.{os.getpid()}_NeWmAiLdIrSiZe.mx.test"
    assert newsize_name(T0, "a/b:c").endswith("_NeWmAiLdIrSiZe.a\\057b\\072c")


def test_recalculate_steps_past_a_taken_tmp_name(maildir: Path) -> None:
    (maildir / "tmp" / newsize_name(T0, HOST)).write_bytes(b"someone else's")
    assert recalculate(maildir, MB10, hostname=HOST, now=T0) == Usage(0, 0)
    assert os.listdir(maildir / "tmp") == [newsize_name(T0, HOST)]
    assert (maildir / "maildirsize").read_bytes() == b"10485760S\n0 0\n"


def racing_scan(monkeypatch: pytest.MonkeyPatch, maildir: Path) -> None:
    """A delivery lands in new/ while the scan runs (after it has read the directories)."""
    real_scan = quota_module._scan

    def scan(root: Path) -> tuple[Usage, dict[str, int]]:
        result = real_scan(root)
        put(maildir, "new", "1700000009.M1P2Q3.host,S=7")
        stamp = os.stat(maildir / "new").st_mtime_ns + 10**9
        os.utime(maildir / "new", ns=(stamp, stamp))
        return result

    monkeypatch.setattr(quota_module, "_scan", scan)


def test_recalculate_race_returns_none(maildir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    put(maildir, "cur", "1.M1P1Q1.h,S=10:2,S")
    racing_scan(monkeypatch, maildir)
    assert recalculate(maildir, MB10, hostname=HOST, now=T0) is None
    # Courier installs the file anyway: it is as good an estimate as any.
    assert (maildir / "maildirsize").read_bytes() == b"10485760S\n10 1\n"


def test_check_allows_when_the_scan_races(maildir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    put(maildir, "cur", "1.M1P1Q1.h,S=5000:2,S")
    racing_scan(monkeypatch, maildir)
    assert check(maildir, Quota(100, None), 10, hostname=HOST, now=T0) is True


# --- check ---------------------------------------------------------------------------------


def test_unlimited_never_touches_the_disk(tmp_path: Path) -> None:
    assert check(tmp_path / "nowhere", Quota(None, None), 10**12, hostname=HOST) is True
    assert percent_used(tmp_path / "nowhere", Quota(None, None), hostname=HOST) == 0
    assert not (tmp_path / "nowhere").exists()


def test_check_creates_missing_file(maildir: Path) -> None:
    expected = populate(maildir)
    assert check(maildir, MB10, 1000, hostname=HOST, now=T0) is True
    text = f"10485760S\n{expected.bytes} {expected.messages}\n"
    assert (maildir / "maildirsize").read_text() == text


def test_exactly_equal_is_allowed(maildir: Path) -> None:
    put(maildir, "cur", "1.M1P1Q1.h,S=1000:2,S")
    assert check(maildir, Quota(2000, None), 1000, hostname=HOST, now=T0) is True
    assert check(maildir, Quota(2000, None), 1001, hostname=HOST, now=T0) is False


def test_count_limit(maildir: Path) -> None:
    put(maildir, "cur", "1.M1P1Q1.h,S=1:2,S")
    put(maildir, "new", "2.M1P1Q1.h,S=1")
    assert check(maildir, Quota(None, 3), 1, hostname=HOST, now=T0) is True
    assert check(maildir, Quota(None, 2), 1, hostname=HOST, now=T0) is False
    assert check(maildir, Quota(10**9, 2), 1, hostname=HOST, now=T0) is False


def test_a_different_quota_line_rebuilds(maildir: Path) -> None:
    put(maildir, "new", "1.M1P1Q1.h,S=10")
    write_size(maildir, "5000S\n0 0\n")
    assert check(maildir, Quota(5000, 10), 1, hostname=HOST, now=T0) is True
    assert (maildir / "maildirsize").read_bytes() == b"5000S,10C\n10 1\n"


def test_under_quota_trusts_the_file(maildir: Path) -> None:
    put(maildir, "new", "1.M1P1Q1.h,S=10")
    path = write_size(maildir, "10485760S\n0 0\n5 1\n", mtime=T0 - 86400)
    assert check(maildir, MB10, 100, hostname=HOST, now=T0) is True
    assert path.read_bytes() == b"10485760S\n0 0\n5 1\n"


@pytest.mark.parametrize(("age", "rebuilt"), [(0, False), (899, False), (900, True)])
def test_over_quota_one_fresh_line_is_trusted(maildir: Path, age: int, rebuilt: bool) -> None:
    put(maildir, "new", "1.M1P1Q1.h,S=10")
    path = write_size(maildir, "1000S\n995 1\n")
    assert check(maildir, Quota(1000, None), 10, hostname=HOST, now=T0 + age) is rebuilt
    assert path.read_bytes() == (b"1000S\n10 1\n" if rebuilt else b"1000S\n995 1\n")


def test_over_quota_two_fresh_lines_rebuild(maildir: Path) -> None:
    put(maildir, "new", "1.M1P1Q1.h,S=10")
    path = write_size(maildir, "1000S\n990 1\n5 1\n")
    assert check(maildir, Quota(1000, None), 10, hostname=HOST, now=T0) is True
    assert path.read_bytes() == b"1000S\n10 1\n"


def test_really_over_quota_after_rebuild(maildir: Path) -> None:
    put(maildir, "new", "1.M1P1Q1.h,S=995")
    write_size(maildir, "1000S\n995 1\n5 1\n")
    assert check(maildir, Quota(1000, None), 10, hostname=HOST, now=T0) is False


@pytest.mark.parametrize(("size", "rebuilt"), [(5119, False), (5120, True)])
def test_big_file_rebuilds(maildir: Path, size: int, rebuilt: bool) -> None:
    head = "10485760S\n"
    body = "0 0\n" * ((size - len(head)) // 4)
    text = head + body + "0" * (size - len(head) - len(body))
    assert len(text) == size
    path = write_size(maildir, text)
    put(maildir, "new", "1.M1P1Q1.h,S=10")
    assert check(maildir, MB10, 1, hostname=HOST, now=T0) is True
    assert (path.read_bytes() == b"10485760S\n10 1\n") is rebuilt


def test_subfolder_is_charged_to_the_parent(maildir: Path) -> None:
    sub = make_maildir(maildir / ".Sub")
    (sub / "maildirfolder").write_bytes(b"")
    assert quota_root(sub) == maildir
    assert quota_root(maildir) == maildir
    put(sub, "cur", "1.M1P1Q1.h,S=600:2,S")
    assert check(sub, Quota(1000, None), 400, hostname=HOST, now=T0) is True
    assert not (sub / "maildirsize").exists()
    put(sub, "new", "2.M1P1Q1.h,S=400")
    record(sub, 400)
    assert (maildir / "maildirsize").read_bytes() == b"1000S\n600 1\n400 1\n"
    mtime = os.stat(maildir / "maildirsize").st_mtime
    assert read_maildirsize(sub) == (Quota(1000, None), Usage(1000, 2), 2, mtime)
    assert check(sub, Quota(1000, None), 1, hostname=HOST, now=T0) is False


# --- record --------------------------------------------------------------------------------


def test_record_appends_lines(maildir: Path) -> None:
    path = write_size(maildir, "10485760S\n0 0\n")
    record(maildir, 1523)
    record(maildir, -20480, -3)
    assert path.read_bytes() == b"10485760S\n0 0\n1523 1\n-20480 -3\n"
    mtime = os.stat(path).st_mtime
    assert read_maildirsize(maildir) == (MB10, Usage(-18957, -2), 3, mtime)


def test_record_without_file_is_a_no_op(maildir: Path) -> None:
    record(maildir, 1523)
    assert not (maildir / "maildirsize").exists()


# --- I/O errors propagate, never "over quota" ---------------------------------------------


def test_maildir_under_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    bogus = tmp_path / "file" / "Maildir"
    with pytest.raises(NotADirectoryError):
        check(bogus, MB10, 1, hostname=HOST, now=T0)
    with pytest.raises(NotADirectoryError):
        record(bogus, 1)
    with pytest.raises(NotADirectoryError):
        percent_used(bogus, MB10, hostname=HOST, now=T0)


def test_maildirsize_is_a_directory(maildir: Path) -> None:
    (maildir / "maildirsize").mkdir()
    with pytest.raises(IsADirectoryError):
        check(maildir, MB10, 1, hostname=HOST, now=T0)
    with pytest.raises(IsADirectoryError):
        record(maildir, 1)


def test_missing_tmp_is_an_error_not_over_quota(maildir: Path) -> None:
    (maildir / "tmp").rmdir()
    with pytest.raises(FileNotFoundError):
        check(maildir, MB10, 1, hostname=HOST, now=T0)


def test_missing_maildir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        check(tmp_path / "absent", MB10, 1, hostname=HOST, now=T0)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_maildirsize_propagates(maildir: Path) -> None:
    path = write_size(maildir, "10485760S\n0 0\n")
    path.chmod(0)
    try:
        with pytest.raises(PermissionError):
            check(maildir, MB10, 1, hostname=HOST, now=T0)
    finally:
        path.chmod(0o600)


# --- percent_used --------------------------------------------------------------------------


def test_percent_used(maildir: Path) -> None:
    put(maildir, "new", "1.M1P1Q1.h,S=250")
    assert percent_used(maildir, Quota(1000, None), hostname=HOST, now=T0) == 25
    assert (maildir / "maildirsize").read_bytes() == b"1000S\n250 1\n"
    assert percent_used(maildir, Quota(1000, 2), hostname=HOST, now=T0) == 50
    assert percent_used(maildir, Quota(None, 3), hostname=HOST, now=T0) == 33
    assert percent_used(maildir, Quota(100, None), hostname=HOST, now=T0) == 100


def test_percent_used_over_is_capped_at_100(maildir: Path) -> None:
    write_size(maildir, "100S\n500 1\n")  # one fresh line: trusted though over
    assert percent_used(maildir, Quota(100, None), hostname=HOST, now=T0 + 1) == 100
