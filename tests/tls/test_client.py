"""Client TLS policy and contexts for remote delivery (spec 17.5), with real handshakes."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

import pytest

from qtoaster.core.errors import ConfigError
from qtoaster.tls.certs import self_signed
from qtoaster.tls.client import (
    ClientTls,
    ClientTlsMode,
    ClientTlsPolicy,
    check_name,
    describe,
    verify_failure_text,
)

from .pki import PrivateCA, handshake

HOST = "mx.example.test"


@pytest.fixture(scope="module")
def ca() -> PrivateCA:
    return PrivateCA()


@pytest.fixture
def control(tmp_path: Path) -> Path:
    control = tmp_path / "control"
    (control / "tlshosts").mkdir(parents=True)
    (control / "notlshosts").mkdir()
    return control


def server_ctx(
    tmp_path: Path, pem: bytes, *, client_ca: PrivateCA | None = None, tls12: bool = False
) -> ssl.SSLContext:
    path = tmp_path / "server.pem"
    path.write_bytes(pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(path)
    if client_ca is not None:
        ctx.load_verify_locations(cadata=client_ca.cert_pem.decode())
        ctx.verify_mode = ssl.CERT_OPTIONAL
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def connect(server: ssl.SSLContext, policy: ClientTlsPolicy) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """An in-memory handshake with the policy's SNI; returns (server, client) objects."""
    assert policy.context is not None
    sni: list[str | None] = []
    server.sni_callback = lambda obj, name, ctx: sni.append(name)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = policy.context.wrap_bio(c_in, c_out, server_hostname=policy.server_hostname)
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(20):
        for obj in (client, srv):
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
            s_in.write(c_out.read())
            c_in.write(s_out.read())
        try:
            client.write(b"x")
            s_in.write(c_out.read())
            if srv.read(1) == b"x":
                assert sni == [policy.server_hostname]
                return srv, client
        except ssl.SSLWantReadError:
            continue
    raise AssertionError("handshake did not finish")


def required(control: Path, ca: PrivateCA, host: str = HOST) -> ClientTlsPolicy:
    (control / "tlshosts" / f"{host}.pem").write_bytes(ca.cert_pem)
    return ClientTls(control).policy_for(host)


# -- policy order (qmail-remote tls_init) ----------------------------------------------


def test_opportunistic_by_default(control: Path) -> None:
    policy = ClientTls(control).policy_for(HOST)
    assert policy.mode is ClientTlsMode.OPPORTUNISTIC
    assert policy.context is not None and policy.context.verify_mode == ssl.CERT_NONE
    assert not policy.context.check_hostname
    assert policy.context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert (policy.file, policy.server_hostname) == ("", None)


def test_missing_control_dirs_mean_opportunistic(tmp_path: Path) -> None:
    tmp_path.joinpath("control").mkdir()
    assert ClientTls(tmp_path / "control").policy_for(HOST).mode is ClientTlsMode.OPPORTUNISTIC


def test_notlshosts(control: Path) -> None:
    (control / "notlshosts" / HOST).touch()
    tls = ClientTls(control)
    assert tls.policy_for(HOST) == ClientTlsPolicy(ClientTlsMode.NONE, None, "", None)
    assert tls.policy_for("other.example.test").mode is ClientTlsMode.OPPORTUNISTIC


def test_tlshosts_file_wins_over_notlshosts(control: Path, ca: PrivateCA) -> None:
    # qmail-remote stats tlshosts/<host>.pem first and looks no further when it exists.
    (control / "notlshosts" / HOST).touch()
    policy = required(control, ca)
    assert policy.mode is ClientTlsMode.REQUIRED
    assert policy.file == str(control / "tlshosts" / f"{HOST}.pem")
    assert policy.server_hostname == HOST
    assert policy.context is not None and policy.context.verify_mode == ssl.CERT_REQUIRED
    assert not policy.context.check_hostname


def test_empty_exhaustivelist_allows_tls_only_to_tlshosts(control: Path, ca: PrivateCA) -> None:
    (control / "tlshosts" / "exhaustivelist").touch()
    (control / "tlshosts" / "secure.example.test.pem").write_bytes(ca.cert_pem)
    tls = ClientTls(control)
    assert tls.policy_for(HOST).mode is ClientTlsMode.NONE
    assert tls.policy_for("secure.example.test").mode is ClientTlsMode.REQUIRED


def test_exhaustivelist_names_opportunistic_hosts(control: Path) -> None:
    (control / "tlshosts" / "exhaustivelist").write_text("# ours\nMX.Example.Test\n")
    tls = ClientTls(control)
    assert tls.policy_for(HOST).mode is ClientTlsMode.OPPORTUNISTIC
    assert tls.policy_for("other.example.test").mode is ClientTlsMode.NONE


def test_overlong_host_name(control: Path) -> None:
    host = ".".join(["a" * 63] * 4)[:253]
    assert ClientTls(control).policy_for(host).mode is ClientTlsMode.OPPORTUNISTIC


@pytest.mark.parametrize("host", ["../evil", "a/b", ".hidden", ""])
def test_host_names_never_walk_the_tree(control: Path, ca: PrivateCA, host: str) -> None:
    (control / "evil.pem").write_bytes(ca.cert_pem)
    (control / "tlshosts" / "a").mkdir()
    (control / "tlshosts" / "a" / "b.pem").write_bytes(ca.cert_pem)
    assert ClientTls(control).policy_for(host).mode is ClientTlsMode.OPPORTUNISTIC


# -- handshakes ------------------------------------------------------------------------


def test_opportunistic_accepts_a_self_signed_server(control: Path, tmp_path: Path) -> None:
    server = server_ctx(tmp_path, self_signed("whatever.invalid"))
    _, client = connect(server, ClientTls(control).policy_for(HOST))
    assert client.version() in ("TLSv1.2", "TLSv1.3")
    assert describe(client) == f"{client.version()} {client.cipher()[0]}"  # type: ignore[index]
    assert client.getpeercert() == {}  # not verified: nothing to check a name against


def test_required_verifies_against_the_tlshosts_file(
    control: Path, ca: PrivateCA, tmp_path: Path
) -> None:
    _, pem = ca.issue(HOST, dns=[HOST])
    policy = required(control, ca)
    _, client = connect(server_ctx(tmp_path, pem), policy)
    cert = client.getpeercert()
    assert cert and check_name(cert, HOST) is None


def test_required_rejects_another_ca(control: Path, ca: PrivateCA, tmp_path: Path) -> None:
    _, pem = PrivateCA("someone else").issue(HOST, dns=[HOST])
    policy = required(control, ca)
    with pytest.raises(ssl.SSLCertVerificationError) as failed:
        connect(server_ctx(tmp_path, pem), policy)
    assert verify_failure_text(policy.file, failed.value) == (
        f"TLS unable to verify server with {policy.file}: unable to get local issuer certificate"
    )


def test_required_rejects_a_self_signed_server(
    control: Path, ca: PrivateCA, tmp_path: Path
) -> None:
    policy = required(control, ca)
    with pytest.raises(ssl.SSLCertVerificationError) as failed:
        connect(server_ctx(tmp_path, self_signed(HOST)), policy)
    assert verify_failure_text(policy.file, failed.value) == (
        f"TLS unable to verify server with {policy.file}: self-signed certificate"
    )


def test_clientcert_is_presented(control: Path, ca: PrivateCA, tmp_path: Path) -> None:
    _, client_pem = ca.issue("relay.example.test", email="postmaster@example.test")
    (control / "clientcert.pem").write_bytes(client_pem)
    _, server_pem = ca.issue(HOST, dns=[HOST])
    server = server_ctx(tmp_path, server_pem, client_ca=ca)
    for policy in (ClientTls(control).policy_for(HOST), required(control, ca)):
        srv, _ = connect(server, policy)
        seen = srv.getpeercert()
        assert seen is not None
        assert (("commonName", "relay.example.test"),) in seen["subject"]


def test_no_clientcert_presents_nothing(control: Path, ca: PrivateCA, tmp_path: Path) -> None:
    _, server_pem = ca.issue(HOST, dns=[HOST])
    srv, _ = connect(server_ctx(tmp_path, server_pem, client_ca=ca), required(control, ca))
    assert srv.getpeercert() is None


@pytest.mark.parametrize(
    "cipher", ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"]
)
def test_tlsclientciphers_honoured(
    control: Path, ca: PrivateCA, tmp_path: Path, cipher: str
) -> None:
    (control / "tlsclientciphers").write_text(f"# TLS 1.2 only\n{cipher}\n")
    _, pem = ca.issue(HOST, dns=[HOST])
    server = server_ctx(tmp_path, pem, tls12=True)
    for policy in (ClientTls(control).policy_for(HOST), required(control, ca)):
        _, client = connect(server, policy)
        assert describe(client) == f"TLSv1.2 {cipher}"


def test_cipher_lines_are_joined_with_colons(control: Path) -> None:
    (control / "tlsclientciphers").write_text("ECDHE-ECDSA-AES128-GCM-SHA256\nNOSUCH\n")
    context = ClientTls(control).policy_for(HOST).context
    assert context is not None
    tls12 = [c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 == ["ECDHE-ECDSA-AES128-GCM-SHA256"]


def test_default_ciphers_are_openssls(control: Path) -> None:
    context = ClientTls(control).policy_for(HOST).context
    reference = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    reference.set_ciphers("DEFAULT")
    assert context is not None
    assert [c["name"] for c in context.get_ciphers()] == [
        c["name"] for c in reference.get_ciphers()
    ]


# -- the context cache -----------------------------------------------------------------


def test_required_context_cached_until_the_file_changes(control: Path, ca: PrivateCA) -> None:
    pem = control / "tlshosts" / f"{HOST}.pem"
    pem.write_bytes(ca.cert_pem)
    tls = ClientTls(control)
    first = tls.policy_for(HOST).context
    assert tls.policy_for(HOST).context is first
    other = PrivateCA("replacement CA")
    pem.write_bytes(other.cert_pem)
    stat = pem.stat()
    os.utime(pem, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = tls.policy_for(HOST).context
    assert second is not None and second is not first
    assert [c["subject"] for c in second.get_ca_certs()] == [((("commonName", "replacement CA"),),)]
    assert ClientTls(control).policy_for(HOST).context is not first


def test_exhaustivelist_reread_when_it_changes(control: Path) -> None:
    listing = control / "tlshosts" / "exhaustivelist"
    listing.write_text("a.example.test\n")
    tls = ClientTls(control)
    assert tls.policy_for(HOST).mode is ClientTlsMode.NONE
    listing.write_text(f"a.example.test\n{HOST}\n")
    assert tls.policy_for(HOST).mode is ClientTlsMode.OPPORTUNISTIC  # the size changed
    listing.unlink()
    assert tls.policy_for("b.example.test").mode is ClientTlsMode.OPPORTUNISTIC


def test_opportunistic_context_shared(control: Path) -> None:
    tls = ClientTls(control)
    assert tls.policy_for("a.example.test").context is tls.policy_for("b.example.test").context


def test_removed_tlshosts_file_ends_required(control: Path, ca: PrivateCA) -> None:
    tls = ClientTls(control)
    pem = control / "tlshosts" / f"{HOST}.pem"
    pem.write_bytes(ca.cert_pem)
    assert tls.policy_for(HOST).mode is ClientTlsMode.REQUIRED
    pem.unlink()
    assert tls.policy_for(HOST).mode is ClientTlsMode.OPPORTUNISTIC


# -- bad files -------------------------------------------------------------------------


def test_bad_tlsclientciphers(control: Path) -> None:
    (control / "tlsclientciphers").write_text("NOSUCHCIPHER\n")
    with pytest.raises(ConfigError) as bad:
        ClientTls(control)
    assert bad.value.problems == [
        f"{control / 'tlsclientciphers'}: the cipher list 'NOSUCHCIPHER' selects no cipher"
    ]


@pytest.mark.parametrize("kind", ["garbage", "cert only", "key only", "directory"])
def test_bad_clientcert(control: Path, ca: PrivateCA, kind: str) -> None:
    path = control / "clientcert.pem"
    _, pem = ca.issue("relay.example.test")
    if kind == "directory":
        path.mkdir()
    else:
        key_end = pem.index(b"-----BEGIN CERTIFICATE-----")
        contents = {
            "garbage": b"not a pem\n",
            "cert only": pem[key_end:],
            "key only": pem[:key_end],
        }
        path.write_bytes(contents[kind])
    with pytest.raises(ConfigError) as bad:
        ClientTls(control)
    assert len(bad.value.problems) == 1
    assert bad.value.problems[0].startswith(f"{path}: ")


def test_every_problem_reported_at_once(control: Path) -> None:
    (control / "tlsclientciphers").write_text("NOSUCHCIPHER\n")
    (control / "clientcert.pem").write_text("nothing\n")
    with pytest.raises(ConfigError) as bad:
        ClientTls(control)
    assert len(bad.value.problems) == 2


@pytest.mark.parametrize("kind", ["garbage", "directory"])
def test_bad_tlshosts_file_defers(control: Path, kind: str) -> None:
    path = control / "tlshosts" / f"{HOST}.pem"
    if kind == "directory":
        path.mkdir()
    else:
        path.write_text("no certificates here\n")
    tls = ClientTls(control)
    with pytest.raises(ConfigError) as bad:
        tls.policy_for(HOST)
    assert bad.value.problems[0].startswith(f"TLS unable to load {path}: ")
    assert tls.policy_for("other.example.test").mode is ClientTlsMode.OPPORTUNISTIC


# -- check_name (qmail-remote match_partner) -------------------------------------------


def cert_dict(cn: str | None = None, dns: tuple[str, ...] = ()) -> dict[str, Any]:
    subject = ((("commonName", cn),),) if cn is not None else ((("organizationName", "x"),),)
    cert: dict[str, Any] = {"subject": subject}
    if dns:
        cert["subjectAltName"] = tuple(("DNS", d) for d in dns)
    return cert


@pytest.mark.parametrize(
    ("cert", "host"),
    [
        (cert_dict("other.test", ("a.test", "MX.Example.TEST")), HOST),
        (cert_dict(None, ("*.example.test",)), HOST),
        (cert_dict(HOST.upper()), HOST),
        (cert_dict("*.example.test"), HOST),
        # SAN present but not matching: qmail still tries the CN.
        (cert_dict(HOST, ("a.test",)), HOST),
        (cert_dict("x", ("*.test", HOST)), HOST),
    ],
)
def test_name_matches(cert: dict[str, Any], host: str) -> None:
    assert check_name(cert, host) is None


@pytest.mark.parametrize(
    ("cert", "text"),
    [
        (cert_dict("other.test"), "received certificate for other.test"),
        (cert_dict("*.example.test"), "received certificate for *.example.test"),  # two levels
        (cert_dict("*.test", ("*.example.test",)), "received certificate for *.test"),
        (cert_dict("*"), "received certificate for *"),
        (cert_dict("evil host\nname"), "received certificate for evil?host?name"),
        (cert_dict("caf\u00e9"), "received certificate for caf??"),
        (cert_dict(None, ("a.test",)), "certificate contains no valid commonName"),
        ({}, "no certificate provided"),
    ],
)
def test_name_mismatch_texts(cert: dict[str, Any], text: str) -> None:
    assert check_name(cert, "a.mx.example.test") == (
        f"TLS unable to verify server a.mx.example.test: {text}"
    )


def test_name_check_on_a_real_certificate(control: Path, ca: PrivateCA, tmp_path: Path) -> None:
    _, pem = ca.issue("mail.elsewhere.test", dns=["mail.elsewhere.test", "*.elsewhere.test"])
    _, client = connect(server_ctx(tmp_path, pem), required(control, ca))
    cert = client.getpeercert()
    assert cert
    assert check_name(cert, HOST) == (
        f"TLS unable to verify server {HOST}: received certificate for mail.elsewhere.test"
    )
    assert check_name(cert, "mx.elsewhere.test") is None


def test_pki_handshake_helper_works_with_our_contexts(
    control: Path, ca: PrivateCA, tmp_path: Path
) -> None:
    # tests/tls/pki.handshake sends a fixed SNI; REQUIRED never lets ssl check names.
    _, pem = ca.issue(HOST, dns=[HOST])
    context = required(control, ca).context
    assert context is not None
    _, client = handshake(server_ctx(tmp_path, pem), context)
    assert client.getpeercert()


def test_loaded_ciphers_are_used_without_reading_the_file(control: Path) -> None:
    # As config.rolecontrols loaded them: the file may change or go; the value stays.
    (control / "tlsclientciphers").write_text("NOSUCH\n")
    context = ClientTls(control, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256").policy_for(HOST).context
    assert context is not None
    tls12 = [c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 == ["ECDHE-ECDSA-AES128-GCM-SHA256"]


def test_loaded_empty_ciphers_mean_openssls_default(control: Path) -> None:
    context = ClientTls(control, ciphers="").policy_for(HOST).context
    reference = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    reference.set_ciphers("DEFAULT")
    assert context is not None
    assert [c["name"] for c in context.get_ciphers()] == [
        c["name"] for c in reference.get_ciphers()
    ]
