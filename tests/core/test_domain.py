"""core/domain.py: one name per domain (IDNA, UTS 46) and what an address needs of the hop."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qtoaster.core.domain import (
    ascii_address,
    domain_display,
    domain_key,
    local_key,
    needs_smtputf8,
    valid_utf8,
)
from qtoaster.core.envelope import split_address


@pytest.mark.parametrize(
    ("given_name", "key"),
    [
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.Example", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.example", "xn--bcher-kva.example"),
        ("Straße.de", "xn--strae-oqa.de"),  # UTS 46 non-transitional: ß is kept
        ("Example.COM", "example.com"),
        ("[192.0.2.1]", "[192.0.2.1]"),
        ("", ""),
        ("a..bü", "a..bü"),  # IDNA refuses it: kept, lower-cased, matching no A-label
        ("\udcff.example", "\udcff.example"),  # a byte that was not UTF-8
    ],
)
def test_domain_key(given_name: str, key: str) -> None:
    assert domain_key(given_name) == key


def test_split_address_names_the_domain_by_its_a_labels() -> None:
    assert split_address("Jörg@Bücher.Example") == ("Jörg", "xn--bcher-kva.example")


def test_display_and_local_key() -> None:
    assert domain_display("xn--bcher-kva.example") == "bücher.example"
    assert domain_display("xn--zz.example") == "xn--zz.example"  # not valid punycode: as is
    assert local_key("JO\u0308RG") == local_key("jörg") == "jörg"  # NFC after lower-casing


def test_needs_smtputf8_and_ascii_address() -> None:
    assert not needs_smtputf8(["a@bücher.example", "", "postmaster"])
    assert needs_smtputf8(["a@b.example", "jörg@b.example"])
    assert needs_smtputf8(["jörg"])
    assert ascii_address("a@bücher.example") == "a@xn--bcher-kva.example"
    assert ascii_address("jörg@bücher.example") == "jörg@xn--bcher-kva.example"
    assert ascii_address("a@a..bü") == "a@a..bü"  # no A-label form: unchanged
    assert ascii_address("") == ""


@given(st.text())
def test_total_and_idempotent(text: str) -> None:
    key = domain_key(text)
    assert domain_key(key) == key
    if key.isascii():
        assert key == key.lower()
    domain_display(text)
    local_key(text)
    ascii_address(text)
    needs_smtputf8([text])


@given(st.binary())
def test_any_wire_bytes(raw: bytes) -> None:
    text = raw.decode("utf-8", "surrogateescape")
    assert valid_utf8(text) == _strict(raw)
    key = domain_key(text)
    assert domain_key(key) == key
    assert ascii_address(f"a@{text}").encode("utf-8", "surrogateescape")  # still encodable


@given(st.from_regex(r"[a-z0-9]{1,10}(\.[a-zà-ÿ0-9]{1,10}){1,3}", fullmatch=True))
def test_u_label_and_its_a_label_are_one_domain(domain: str) -> None:
    key = domain_key(domain)
    assert domain_key(key.upper()) == key
    if key.isascii():
        assert domain_key(domain_display(key)) == key


def _strict(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
