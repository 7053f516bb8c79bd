"""verify() against a real SQLite directory: PLAIN/LOGIN passwords, CRAM-MD5 with opted-in
secrets (RFC 2195's example), default domain, flags per service; mechanisms_for()."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from pathlib import Path

import pytest

from qtoaster.auth.verify import AuthResult, login_address, mechanisms_for, verify
from qtoaster.core.errors import TemporaryFailure
from qtoaster.core.home import Home
from qtoaster.directory.model import UserInfo
from qtoaster.directory.schema import UserFlag
from qtoaster.directory.store import Directory, DirectoryUnavailable, create_directory
from qtoaster.protocols.sasl import CramCredentials, Mechanism, PlainCredentials

CHALLENGE = b"<1896.697170952@postoffice.reston.mci.net>"
TIM_DIGEST = "b913a602c7eda7a495b4e6e7334d3890"  # RFC 2195 section 2


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[Directory]:
    home = Home(tmp_path / "home")
    create_directory(home)
    directory = Directory.open(home)
    directory.add_domain("example.com")
    directory.add_user("tim@example.com", "tanstaaftanstaaf")
    directory.set_user("tim@example.com", secrets=True)
    directory.set_password("tim@example.com", "tanstaaftanstaaf")  # now with secrets
    directory.add_user("plain@example.com", "pw1")
    yield directory
    directory.close()


def cram(user: str, digest: str = TIM_DIGEST) -> CramCredentials:
    return CramCredentials(user, digest, CHALLENGE)


def test_plain_password(directory: Directory) -> None:
    ok = verify(directory, PlainCredentials("tim@example.com", "tanstaaftanstaaf"), service="smtp")
    assert ok == AuthResult(True, "tim@example.com", "password ok")
    bad = verify(directory, PlainCredentials("tim@example.com", "wrong"), service="smtp")
    assert not bad.ok and bad.user == "tim@example.com"
    unknown = verify(directory, PlainCredentials("nobody@example.com", "pw1"), service="pop3")
    assert not unknown.ok


def test_user_name_is_case_insensitive_and_canonical(directory: Directory) -> None:
    result = verify(directory, PlainCredentials("PLAIN@Example.COM", "pw1"), service="pop3")
    assert result.ok and result.user == "plain@example.com"


def test_default_domain(directory: Directory) -> None:
    creds = PlainCredentials("plain", "pw1")
    assert verify(directory, creds, service="smtp", default_domain="example.com").ok
    refused = verify(directory, creds, service="smtp")
    assert refused == AuthResult(False, "plain", "no domain and no default domain")
    assert login_address("a@b", "c") == "a@b"
    assert login_address("a", "c") == "a@c"
    assert login_address("a", "") is None


def test_cram_md5_rfc2195_example(directory: Directory) -> None:
    result = verify(directory, cram("tim@example.com"), service="smtp")
    assert result == AuthResult(True, "tim@example.com", "CRAM-MD5 digest ok")
    assert verify(directory, cram("tim@example.com", TIM_DIGEST.upper()), service="pop3").ok
    assert verify(
        directory, cram("tim", TIM_DIGEST), service="smtp", default_domain="example.com"
    ).ok


@pytest.mark.parametrize("digest", ["0" * 32, TIM_DIGEST[:-1], "", "zz" * 16, TIM_DIGEST + "0"])
def test_cram_md5_wrong_digest(directory: Directory, digest: str) -> None:
    assert not verify(directory, cram("tim@example.com", digest), service="smtp").ok


def test_cram_md5_needs_opted_in_secrets(directory: Directory) -> None:
    digest = hmac.new(b"pw1", CHALLENGE, "md5").hexdigest()
    result = verify(directory, cram("plain@example.com", digest), service="smtp")
    assert not result.ok and "no CRAM-MD5 secret" in result.reason
    assert not verify(directory, cram("nobody@example.com"), service="smtp").ok


def test_secrets_on_the_domain_give_cram(directory: Directory) -> None:
    directory.add_domain("cram.example", secrets=True)
    directory.add_user("ann@cram.example", "annpw")
    digest = hmac.new(b"annpw", CHALLENGE, "md5").hexdigest()
    assert verify(directory, cram("ann@cram.example", digest), service="pop3").ok


@pytest.mark.parametrize(
    ("flag", "service", "ok"),
    [
        (UserFlag.NO_SMTP_AUTH, "smtp", False),
        (UserFlag.NO_SMTP_AUTH, "pop3", True),
        (UserFlag.NO_POP, "pop3", False),
        (UserFlag.NO_POP, "smtp", True),
        (UserFlag.NO_IMAP, "imap", False),
        (UserFlag.NO_IMAP, "pop3", True),
        (UserFlag.NO_POP, "imap", True),
        (UserFlag.DISABLED, "imap", False),
        (UserFlag.DISABLED, "smtp", False),
        (UserFlag.DISABLED, "pop3", False),
        (UserFlag.NO_RELAY, "smtp", True),
    ],
)
def test_flags(directory: Directory, flag: UserFlag, service: str, ok: bool) -> None:
    directory.set_user("tim@example.com", add_flags=flag)
    plain = PlainCredentials("tim@example.com", "tanstaaftanstaaf")
    assert verify(directory, plain, service=service).ok is ok
    assert verify(directory, cram("tim@example.com"), service=service).ok is ok


def test_flag_reason_is_logged(directory: Directory) -> None:
    directory.set_user("plain@example.com", add_flags=UserFlag.NO_POP)
    result = verify(directory, PlainCredentials("plain@example.com", "pw1"), service="pop3")
    assert result == AuthResult(False, "plain@example.com", "NO_POP set for this user")


def test_unknown_service(directory: Directory) -> None:
    with pytest.raises(ValueError):
        verify(directory, PlainCredentials("a@b", "c"), service="nntp")
    imap = verify(directory, PlainCredentials("plain@example.com", "pw1"), service="imap")
    assert imap.ok and imap.user == "plain@example.com"


class _Vanishing:
    """Proves the password, then the user is gone (deleted between two queries)."""

    def verify_password(self, address: str, password: str) -> bool:
        return True

    def auth_secrets(self, address: str) -> tuple[str | None, str | None]:
        return None, None

    def user(self, address: str) -> UserInfo | None:
        return None


class _Down(_Vanishing):
    def verify_password(self, address: str, password: str) -> bool:
        raise DirectoryUnavailable("database is down")


def test_user_deleted_between_queries() -> None:
    result = verify(_Vanishing(), PlainCredentials("a@b.example", "c"), service="smtp")
    assert result == AuthResult(False, "a@b.example", "unknown user")


def test_directory_outage_propagates_as_temporary() -> None:
    with pytest.raises(TemporaryFailure):
        verify(_Down(), PlainCredentials("a@b.example", "c"), service="smtp")


@pytest.mark.parametrize(
    ("tls", "allow", "cram_ok", "expected"),
    [
        (True, False, True, [Mechanism.LOGIN, Mechanism.CRAM_MD5, Mechanism.PLAIN]),
        (False, True, True, [Mechanism.LOGIN, Mechanism.CRAM_MD5, Mechanism.PLAIN]),
        (False, False, True, [Mechanism.CRAM_MD5]),
        (True, False, False, [Mechanism.LOGIN, Mechanism.PLAIN]),
        (False, False, False, []),
    ],
)
def test_mechanisms_for(tls: bool, allow: bool, cram_ok: bool, expected: list[Mechanism]) -> None:
    assert mechanisms_for(tls=tls, allow_plaintext=allow, cram_available=cram_ok) == expected
