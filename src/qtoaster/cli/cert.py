"""``qtoaster cert``: the server certificate in control/servercert.pem (docs/tls.md).

show, self-signed, key, csr, install, acme (the ACME logic is tls/acme.py, its HTTP-01
responder net/challenge.py).  Invariants: servercert.pem is only ever replaced
atomically, mode 0600, the previous one kept as servercert.pem.old; a key file is never
overwritten; a certificate is installed only with the private key that matches it.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import stat
from pathlib import Path

import click

from qtoaster.cli.options import give_owners, home_option
from qtoaster.config.control import read_line, read_list
from qtoaster.config.settings import parse_listen
from qtoaster.core.home import Home
from qtoaster.core.lock import SUPERVISOR, HomeLock
from qtoaster.net.challenge import Responder, ResponderError
from qtoaster.tls import acme, certs
from qtoaster.tls.server import TlsError, read_settings, server_context

SERVERCERT = "servercert.pem"


@click.group()
def cert() -> None:
    """The TLS server certificate: show, self-signed, key, csr, install, acme."""


def _control(home: Home) -> Path:
    if not home.control.is_dir():
        raise click.ClickException(f"{home.control}: no such directory (qtoaster init?)")
    return home.control


def _me(control: Path) -> str | None:
    return read_line(control / "me") or None


@cert.command("show")
@home_option
def show(home: Home) -> None:
    """What servercert.pem holds, the client CA and tlsclients, and warnings."""
    control = _control(home)
    path = control / SERVERCERT
    if not path.exists():
        click.echo(f"{path}: missing: STARTTLS and SMTPS are not offered")
        click.echo("  create one with: qtoaster cert self-signed, or cert key/csr/install")
        raise SystemExit(1)
    pem = path.read_bytes()
    click.echo(f"{path}:")
    try:
        bundle = certs.load_bundle(pem)
        lines = certs.summary(pem)
    except ValueError as exc:
        bundle, lines = None, [f"unreadable: {exc}"]
    for line in lines:
        click.echo(f"  {line}")
    problems: list[str] = []
    if bundle is not None and bundle.certs:
        now = dt.datetime.now(dt.UTC)
        problems += certs.warnings(bundle.certs[0], _me(control), now)
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        problems.append(f"{path} is readable by others than its owner: chmod 600")
    try:
        server_context(control, warn=problems.append)
    except TlsError as exc:
        problems.append(f"TLS not available: {exc}")
    _show_clients(control)
    for problem in problems:
        click.echo(f"warning: {problem}")
    if any(p.startswith("TLS not available") for p in problems):
        raise SystemExit(1)


def _show_clients(control: Path) -> None:
    settings = read_settings(control)
    click.echo(f"tlsserverciphers: {settings.ciphers or '(Python default, TLS 1.3 suites)'}")
    if settings.clientca is not None:
        try:
            cas = certs.load_bundle(settings.clientca.read_bytes()).certs
        except (OSError, ValueError) as exc:
            click.echo(f"clientca.pem: unreadable: {exc}")
        else:
            click.echo(f"clientca.pem: {len(cas)} CA certificate(s)")
            for ca in cas:
                click.echo(f"  {ca.subject.rfc4514_string()}")
    if settings.clientcrl is not None:
        click.echo("clientcrl.pem: present (CRLs checked for the whole chain)")
    clients = read_list(control / "tlsclients")
    click.echo(f"tlsclients: {len(clients)} address(es)")
    if settings.asks_client_cert:
        click.echo("  client certificates are asked for; listed ones may relay")
    for name in ("dh512.pem", "rsa512.pem"):
        if (control / name).exists():
            click.echo(f"{name}: ignored (export-grade key exchange)")


@cert.command("self-signed")
@home_option
@click.option("--days", type=click.IntRange(min=1), default=3650, show_default=True)
@click.option("--name", metavar="HOST", help="host name (default: control/me)")
@click.option("--force", is_flag=True, help="replace an existing servercert.pem")
def self_signed_cmd(home: Home, days: int, name: str | None, force: bool) -> None:
    """Make a self-signed certificate for control/me into servercert.pem."""
    control = _control(home)
    hostname = name or _me(control)
    if not hostname:
        raise click.ClickException("no host name: give --name or write control/me")
    path = control / SERVERCERT
    if path.exists() and not force:
        raise click.ClickException(f"{path} exists; --force replaces it (keeping .old)")
    certs.write_private(path, certs.self_signed(hostname, days=days), keep_old=True)
    click.echo(f"wrote {path}: self-signed for {hostname}, {days} days")


def _refuse_existing(path: Path) -> None:
    if path.exists():
        raise click.ClickException(f"{path} exists; refusing to overwrite it")


@cert.command("key")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True)
@click.option("--type", "kind", type=click.Choice(certs.KEY_KINDS), default="rsa")
def key_cmd(out: Path, kind: str) -> None:
    """Make a new private key (mode 0600) for a certificate request."""
    _refuse_existing(out)
    certs.write_private(out, certs.new_key(kind))
    click.echo(f"wrote {out}: {kind} private key")


@cert.command("csr")
@home_option
@click.option("--key", "key_file", type=click.Path(path_type=Path, exists=True), required=True)
@click.option("--out", "out", type=click.Path(path_type=Path), required=True)
@click.option("--name", "names", multiple=True, metavar="NAME", help="extra name (repeatable)")
def csr_cmd(home: Home, key_file: Path, out: Path, names: tuple[str, ...]) -> None:
    """Make a certificate request for control/me (+ --name ...) to send to a CA."""
    hostname = _me(_control(home))
    if not hostname:
        raise click.ClickException(f"{home.control / 'me'}: missing or empty")
    _refuse_existing(out)
    try:
        request = certs.csr(key_file.read_bytes(), hostname, list(names))
    except (ValueError, TypeError) as exc:
        raise click.ClickException(f"{key_file}: {exc}") from None
    out.write_bytes(request)
    click.echo(f"wrote {out}: request for {', '.join([hostname, *names])}")


@cert.command("install")
@home_option
@click.argument("certfile", type=click.Path(path_type=Path, exists=True))
@click.option("--key", "key_file", type=click.Path(path_type=Path, exists=True), required=True)
def install(home: Home, certfile: Path, key_file: Path) -> None:
    """Install CERTFILE (leaf first, then its chain) with KEYFILE as servercert.pem."""
    control = _control(home)
    try:
        install_servercert(control, certfile.read_bytes(), key_file.read_bytes())
    except ValueError as exc:
        raise click.ClickException(f"{certfile}, {key_file}: {exc}") from None


def install_servercert(control: Path, chain_pem: bytes, key_pem: bytes) -> bytes:
    """Install a chain and its key as servercert.pem (atomically, mode 0600, the previous
    kept as .old) and print what was done; ValueError, with nothing written, unless the key
    matches the certificate. ``install`` and ``acme`` both install through here."""
    pem = certs.combine(chain_pem, key_pem)
    path = control / SERVERCERT
    certs.write_private(path, pem, keep_old=True)
    click.echo(f"installed {path}")
    leaf = certs.load_bundle(pem).certs[0]
    for problem in certs.warnings(leaf, _me(control), dt.datetime.now(dt.UTC)):
        click.echo(f"warning: {problem}")
    return pem


@cert.command("acme")
@home_option
@click.option(
    "--directory",
    metavar="URL",
    help=f"the CA's ACME directory (default: Let's Encrypt, {acme.LETS_ENCRYPT})",
)
@click.option("--staging", is_flag=True, help="Let's Encrypt's staging CA (untrusted test certs)")
@click.option("--email", metavar="ADDR", help="contact address for the CA's expiry notices")
@click.option("--name", "names", multiple=True, metavar="NAME", help="(repeatable; default me)")
@click.option(
    "--challenge",
    type=click.Choice(["http-01"]),
    default="http-01",
    show_default=True,
    help="how the CA checks the names",
)
@click.option(
    "--http-listen",
    metavar="ADDR:PORT",
    default=":80",
    show_default=True,
    help="where the http-01 responder listens (:PORT = every IPv4 address)",
)
@click.option("--force", is_flag=True, help="order even when no renewal is due")
@click.option(
    "--ca-bundle",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CA certificates to trust for the ACME server's HTTPS (a test CA)",
)
@click.option("--no-reload", is_flag=True, help="do not send SIGHUP to the running server")
def acme_cmd(
    home: Home,
    directory: str | None,
    staging: bool,
    email: str | None,
    names: tuple[str, ...],
    challenge: str,
    http_listen: str,
    force: bool,
    ca_bundle: Path | None,
    no_reload: bool,
) -> None:
    """Obtain or renew servercert.pem from an ACME CA (Let's Encrypt by default).

    Does nothing (exit 0) while the certificate it obtained last, for the same names and
    CA, has more than a third of its lifetime left: safe to run twice a day from a timer.
    """
    control = _control(home)
    if staging and directory:
        raise click.UsageError("--staging and --directory: give one")
    url = directory or (acme.LETS_ENCRYPT_STAGING if staging else acme.LETS_ENCRYPT)
    wanted = list(dict.fromkeys(n.lower().rstrip(".") for n in names)) or [_me(control) or ""]
    if not wanted[0]:
        raise click.ClickException("no host name: give --name or write control/me")
    try:  # the same ADDR:PORT syntax as the mail listeners
        listen = parse_listen("smtp", http_listen)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--http-listen") from None
    path = control / SERVERCERT
    now = dt.datetime.now(dt.UTC)
    decision = acme.decide(
        acme.installed_leaf(path), acme.load_record(acme.record_path(home)), url, wanted, now
    )
    if not decision.renew and not force:
        click.echo(f"{path}: no renewal needed: {decision.reason}")
        return
    why = "forced" if force and not decision.renew else decision.reason
    click.echo(f"ordering a certificate for {', '.join(wanted)} from {url} ({why})")
    order = acme.Order(url, wanted, email, ca_bundle)
    try:
        # The responder starts before any key is read: it is a new program, as nobody.
        with Responder(listen.host, listen.port) as responder:
            account = acme.account_key(acme.account_key_path(home))
            chain, key = acme.obtain(order, account, responder.publish)
        pem = install_servercert(control, chain, key)
    except (acme.AcmeError, ResponderError, ValueError) as exc:
        click.echo(f"qtoaster: {exc}; {path} is unchanged", err=True)
        raise SystemExit(1) from None
    leaf = certs.load_bundle(pem).certs[0]
    record = acme.Record(url, tuple(wanted), acme.fingerprint(leaf))
    acme.save_record(acme.record_path(home), record)
    give_owners(home)  # the roles' group must read servercert.pem before they reload
    if not no_reload:
        _reload(home)


def _reload(home: Home) -> None:
    """SIGHUP to the supervisor holding the home's lock (its pid is in the lock file)."""
    if not (home.run_dir / SUPERVISOR).exists():
        click.echo("no server is running on this home: nothing to reload")
        return
    pid = HomeLock(home.run_dir, SUPERVISOR).held_elsewhere()
    if not pid:
        click.echo("no server is running on this home: nothing to reload")
        return
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        click.echo(f"the server (pid {pid}) is gone: nothing to reload")
        return
    click.echo(f"sent SIGHUP to the server (pid {pid}): new sessions get the new certificate")
