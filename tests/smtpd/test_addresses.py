import pytest

from qtoaster.smtpd.addresses import recipient_key, rewrite_localip


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("joe@[127.0.0.1]", "joe@mx.example"),
        ("joe@[0.0.0.0]", "joe@mx.example"),  # 0.0.0.0 is "this host" (spec 23.2)
        ("joe@[192.0.2.9]", "joe@[192.0.2.9]"),  # not us: left for rcpthosts to refuse
        ("joe@example.com", "joe@example.com"),
        ("joe", "joe"),
        ("a@b@[127.0.0.1]", "a@b@mx.example"),
    ],
)
def test_localiphost_rewrite(address: str, expected: str) -> None:
    assert rewrite_localip(address, "127.0.0.1", "mx.example") == expected


@pytest.mark.parametrize(
    ("one", "other", "same"),
    [
        ("joe@example.com", "joe@EXAMPLE.Com", True),  # domains compare case-insensitively
        ("joe@example.com", "Joe@example.com", False),  # local parts exactly (RFC 5321 2.4)
        ("a@b@Example.com", "a@b@example.COM", True),  # the domain after the last @
        ("a@B@example.com", "a@b@example.com", False),
        ("joe", "JOE", False),
    ],
)
def test_recipient_key(one: str, other: str, same: bool) -> None:
    assert (recipient_key(one) == recipient_key(other)) is same
