"""SRS forward and reverse (mailauth/srs.py): the libsrs2/postsrsd scheme."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qtoaster.mailauth.srs import (
    BAD_HASH,
    EXPIRED,
    MALFORMED,
    Srs,
    SrsError,
    is_srs,
    read_keys,
    timestamp,
    write_keys,
)

DAY = 86400
NOW = 20000 * DAY + 3600.0  # a fixed day
SRS = Srs((b"secret",))


def _reason(srs: Srs, address: str, now: float = NOW) -> str:
    with pytest.raises(SrsError) as caught:
        srs.reverse(address, now)
    return caught.value.reason


def test_forward_is_the_libsrs2_form_and_reverses() -> None:
    address = SRS.forward("alice@example.org", "fwd.example", NOW)
    stamp = timestamp(NOW)
    # libsrs2 hashes the lowercased pieces: timestamp, domain, local part.
    data = f"{stamp}example.orgalice".lower().encode()
    mac = hmac.new(b"secret", data, hashlib.sha1).digest()
    digest = base64.b64encode(mac).decode()[:4]
    assert address == f"SRS0={digest}={stamp}=example.org=alice@fwd.example"
    assert SRS.reverse(address, NOW) == "alice@example.org"


def test_timestamp_is_days_mod_1024_in_base32() -> None:
    assert timestamp(0) == "AA"
    assert timestamp(33 * DAY) == "BB"
    assert timestamp(1024 * DAY + 5) == "AA"


def test_local_part_with_equals_signs_round_trips() -> None:
    address = SRS.forward("a=b=c@example.org", "fwd.example", NOW)
    assert SRS.reverse(address, NOW) == "a=b=c@example.org"


def test_srs1_when_rewriting_srs0_and_srs1_again() -> None:
    other = Srs((b"other forwarder",))
    first = other.forward("alice@example.org", "one.example", NOW)
    second = SRS.forward(first, "two.example", NOW)
    srs0_part = first.split("@")[0][4:]  # "=HHHH=TT=example.org=alice"
    assert second.startswith("SRS1=")
    assert second.endswith(f"=one.example={srs0_part}@two.example")
    assert SRS.reverse(second, NOW) == first
    # A third forwarder keeps the first forwarder and the SRS0 part: no growing chain.
    third = Srs((b"third",)).forward(second, "three.example", NOW)
    assert third.startswith("SRS1=") and "=one.example==" in third
    assert third.count("=one.example") == 1
    assert Srs((b"third",)).reverse(third, NOW) == first
    assert other.reverse(first, NOW) == "alice@example.org"


def test_hash_is_compared_without_case() -> None:
    address = SRS.forward("alice@example.org", "fwd.example", NOW)
    local, _, domain = address.rpartition("@")
    assert SRS.reverse(f"{local.upper()}@{domain}", NOW) == "ALICE@EXAMPLE.ORG"
    assert SRS.reverse(f"{local.lower()}@{domain}", NOW) == "alice@example.org"


def test_expiry_after_max_age_days() -> None:
    address = SRS.forward("alice@example.org", "fwd.example", NOW)
    assert SRS.reverse(address, NOW + 21 * DAY) == "alice@example.org"
    assert _reason(SRS, address, NOW + 22 * DAY) == EXPIRED
    assert _reason(Srs((b"secret",), max_age_days=3), address, NOW + 4 * DAY) == EXPIRED


def test_expiry_across_the_wrap_of_the_day_count() -> None:
    before_wrap = 1023 * DAY + 10.0
    address = SRS.forward("alice@example.org", "fwd.example", before_wrap)
    assert SRS.reverse(address, before_wrap + 5 * DAY) == "alice@example.org"
    assert _reason(SRS, address, before_wrap + 30 * DAY) == EXPIRED


def test_bad_hash() -> None:
    address = SRS.forward("alice@example.org", "fwd.example", NOW)
    assert _reason(Srs((b"another secret",)), address) == BAD_HASH
    forged = address.replace("=alice@", "=mallory@")
    assert _reason(SRS, forged) == BAD_HASH
    short = "SRS0=abc=" + address.split("=", 2)[2]
    assert _reason(SRS, short) == BAD_HASH


def test_several_keys_verify_the_first_signs() -> None:
    old = Srs((b"old",)).forward("alice@example.org", "fwd.example", NOW)
    rotated = Srs((b"new", b"old"))
    assert rotated.reverse(old, NOW) == "alice@example.org"
    new = rotated.forward("alice@example.org", "fwd.example", NOW)
    assert Srs((b"new",)).reverse(new, NOW) == "alice@example.org"
    assert _reason(Srs((b"old",)), new) == BAD_HASH


@pytest.mark.parametrize(
    "address",
    [
        "alice@example.org",
        "SRS0=abcd=AA=example.org@fwd.example",  # no local part
        "SRS0=abcd=A=example.org=alice@fwd.example",  # short timestamp
        "SRS0=abcd=A1=example.org=alice@fwd.example",  # not base32
        "SRS0=abcd=AA==alice@fwd.example",  # empty domain
        "SRS0=abcd=AA=example.org=alice",  # no @
        "SRS1=abcd=@fwd.example",
        "SRS1=abcd=host@fwd.example",
        "SRS2=abcd=AA=example.org=alice@fwd.example",
        "",
    ],
)
def test_malformed(address: str) -> None:
    assert _reason(SRS, address) == MALFORMED


def test_is_srs() -> None:
    assert is_srs("SRS0=x") and is_srs("srs1+y") and is_srs("Srs0-z")
    assert not is_srs("srs0") and not is_srs("alice") and not is_srs("SRS2=x")


def test_forward_needs_a_domain() -> None:
    with pytest.raises(ValueError):
        SRS.forward("alice", "fwd.example", NOW)


def test_key_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "secrets" / "srs.key"
    write_keys(path, ["new", "old"])
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_text("# rotated\nnew\n\nold\n")
    assert read_keys(path) == (b"new", b"old")
    path.write_text("# nothing\n")
    with pytest.raises(ValueError):
        read_keys(path)


@given(st.text())
def test_reverse_never_crashes(text: str) -> None:
    try:
        SRS.reverse(text, NOW)
    except SrsError as exc:
        assert exc.reason in (MALFORMED, BAD_HASH, EXPIRED)


@given(st.from_regex(r"\A(?i:srs[01])[=+-][^@]*@[^@]*\Z"))
def test_reverse_never_crashes_on_srs_shapes(text: str) -> None:
    try:
        SRS.reverse(text, NOW)
    except SrsError as exc:
        assert exc.reason in (MALFORMED, BAD_HASH, EXPIRED)
