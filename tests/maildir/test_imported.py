"""Dovecot/Courier UID list and keyword parsers (maildir/imported.py), golden inputs
written by hand after the documented formats, and any bytes never crash."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from qtoaster.maildir.imported import (
    read_courier_keywords,
    read_courier_uidlist,
    read_dovecot_keywords,
    read_dovecot_uidlist,
)

DOVECOT_V3 = (
    b"3 V1275660208 N25022 G3085f01b7f11094c501100008c4a11c1\n"
    b"25006 :1276528487.M364837P9451.kurkku,S=1355,W=1394:2,\n"
    b"25017 W2481 :1276533073.M242911P3632.kurkku:2,F\n"
)


def test_dovecot_v3() -> None:
    found = read_dovecot_uidlist(DOVECOT_V3)
    assert found is not None
    assert (found.uidvalidity, found.nextuid) == (1275660208, 25022)
    assert found.uids == {
        "1276528487.M364837P9451.kurkku,S=1355,W=1394": 25006,
        "1276533073.M242911P3632.kurkku": 25017,
    }


def test_dovecot_v1_and_courier() -> None:
    data = b"1 1100000000 7\n3 1100000001.M1P1.h:2,S\n5 1100000002.M1P1.h\n"
    for parser in (read_dovecot_uidlist, read_courier_uidlist):
        found = parser(data)
        assert found is not None
        assert (found.uidvalidity, found.nextuid) == (1100000000, 7)
        assert found.uids == {"1100000001.M1P1.h": 3, "1100000002.M1P1.h": 5}


def test_nextuid_not_below_uids() -> None:
    found = read_dovecot_uidlist(b"3 V5 N2\n9 :a\n")
    assert found is not None and found.nextuid == 10


def test_bad_headers() -> None:
    assert read_dovecot_uidlist(b"") is None
    assert read_dovecot_uidlist(b"3 N5\n") is None
    assert read_courier_uidlist(b"x y z\n") is None


def test_keywords() -> None:
    assert read_dovecot_keywords(b"0 $Junk\n1 Work\n30 Far\nbad\n") == {0: "$Junk", 1: "Work"}
    data = b"Work\n$Label1\n\n1100.M1P1.h:0 1\n1200.M1P1.h:1\n"
    assert read_courier_keywords(data) == {
        "1100.M1P1.h": ("Work", "$Label1"),
        "1200.M1P1.h": ("$Label1",),
    }


def test_fed_byte_by_byte_prefixes() -> None:
    for end in range(len(DOVECOT_V3) + 1):
        read_dovecot_uidlist(DOVECOT_V3[:end])
        read_courier_uidlist(DOVECOT_V3[:end])


@given(st.binary(max_size=400))
def test_any_bytes(data: bytes) -> None:
    for parser in (read_dovecot_uidlist, read_courier_uidlist):
        found = parser(data)
        if found is not None:
            assert 0 < found.uidvalidity < 2**32
            assert all(uid < found.nextuid for uid in found.uids.values())
    read_dovecot_keywords(data)
    read_courier_keywords(data)
