"""``qtoaster dkim``: the DKIM signing keys of hosted domains (docs/dkim.md).

keygen, list, show (the TXT records in zone-file form), rotate (a state machine run again
and again, e.g. daily from a timer: it asks DNS through ``[dns] nameservers`` whether a new
key's record is published before it activates the key) and delete.

Invariants: a domain that is not hosted here is refused (exit 1) before anything is
written; a DNS failure during rotate changes nothing it depends on and exits 75 (try
again later), as every other temporary failure of the CLI; the send role reads the keys
at start, so a change takes effect at its next start (``qtoaster run`` restarts it on
SIGHUP), which each command that changes the signing keys says.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import click
import dns.exception
import dns.rdatatype
import dns.resolver

from qtoaster.cli.dirsupport import open_directory
from qtoaster.cli.options import home_option
from qtoaster.config.endpoints import parse_nameserver
from qtoaster.config.mailsettings import DkimSettings
from qtoaster.config.settings import Settings, load_settings
from qtoaster.core.errors import ConfigError, QtoasterError
from qtoaster.core.home import Home
from qtoaster.mailauth import dkimkeys
from qtoaster.mailauth.dkimkeys import DkimKey

EXIT_TEMPORARY = 75  # sysexits EX_TEMPFAIL: run rotate again later
TXT_CHUNK = 255  # one character-string of a TXT record at most (RFC 1035 3.3)
RELOAD = "the send role uses the new keys after its next start (SIGHUP to qtoaster run)"


@click.group()
def dkim() -> None:
    """DKIM signing keys: keygen, list, show, rotate, delete."""


def _settings(home: Home) -> Settings:
    try:
        return load_settings(home.settings_file)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def _hosted(home: Home, domain: str) -> str:
    """The domain, lowercased, if hosted here (an alias domain counts: it signs with its
    own keys); else a clear error and exit 1."""
    try:
        name = dkimkeys.check_domain(domain)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    with open_directory(home) as directory:
        if directory.domain(name) is None:
            raise click.ClickException(
                f"{name} is not a hosted domain (qtoaster domain add {name} first)"
            )
    return name


def _store(home: Home) -> Path:
    return dkimkeys.dkim_dir(home.root)


@dkim.command("keygen")
@home_option
@click.argument("domain")
@click.option(
    "--algorithm",
    type=click.Choice(["rsa", "ed25519"]),
    default=None,
    help="Only this algorithm (default: [dkim] algorithms, rsa and ed25519).",
)
@click.option("--selector", default=None, help="The selector (default: the date, e.g. 20261207r).")
@click.option(
    "--active",
    is_flag=True,
    help="Sign with the new keys at once, without waiting for rotate to see them in DNS "
    "(for a domain whose records you publish right away; refused beside an active key).",
)
def keygen(
    home: Home, domain: str, algorithm: str | None, selector: str | None, active: bool
) -> None:
    """Make new pending keys for DOMAIN and print the TXT records to publish."""
    settings = _settings(home)
    name = _hosted(home, domain)
    algorithms = [algorithm] if algorithm else list(settings.dkim.algorithms)
    if selector is not None and len(algorithms) > 1:
        raise click.UsageError("--selector names one key: give --algorithm too")
    try:
        made = dkimkeys.keygen(_store(home), name, algorithms, selector, active=active)
    except QtoasterError as exc:
        raise click.ClickException(str(exc)) from exc
    for key in made:
        click.echo(f"made {key.selector} ({key.algorithm}) for {name}: {key.state}")
    if active:
        click.echo("signing with them from the send role's next start (or SIGHUP); publish:")
    else:
        click.echo("publish these records, then run qtoaster dkim rotate to activate them:")
    for key in made:
        click.echo(zone_record(key))


@dkim.command("list")
@home_option
@click.argument("domain", required=False)
def list_keys(home: Home, domain: str | None) -> None:
    """List keys: domain, selector, algorithm, state, created (UTC)."""
    try:
        names = [dkimkeys.check_domain(domain)] if domain else dkimkeys.domains(_store(home))
        for name in names:
            for key in dkimkeys.load_keys(_store(home), name):
                created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(key.created))
                click.echo(f"{name} {key.selector} {key.algorithm} {key.state} {created}")
    except QtoasterError as exc:
        raise click.ClickException(str(exc)) from exc


@dkim.command("show")
@home_option
@click.argument("domain")
def show(home: Home, domain: str) -> None:
    """The TXT records of DOMAIN's keys (pending, active and retiring) in zone-file form."""
    try:
        keys = dkimkeys.load_keys(_store(home), dkimkeys.check_domain(domain))
    except QtoasterError as exc:
        raise click.ClickException(str(exc)) from exc
    if not keys:
        raise click.ClickException(f"{domain.lower()} has no DKIM keys (qtoaster dkim keygen)")
    for key in keys:
        click.echo(f"; {key.selector}: {key.algorithm}, {key.state}")
        click.echo(zone_record(key))


@dkim.command("rotate")
@home_option
@click.argument("domain")
def rotate(home: Home, domain: str) -> None:
    """One step of key rotation for DOMAIN (run it again, e.g. daily).

    Makes new pending keys when there are none and the active ones are older than
    [dkim] rotate_after (or missing); activates a pending key once DNS serves its record
    (the old key of its algorithm then retires); deletes retiring keys older than [dkim]
    grace.  Exit 75 when a DNS lookup failed (nothing depending on it was changed)."""
    settings = _settings(home)
    name = _hosted(home, domain)
    lookup = txt_lookup(settings)
    conf: DkimSettings = settings.dkim
    try:
        steps, answered = dkimkeys.rotate(
            _store(home),
            name,
            conf.algorithms,
            grace=conf.grace,
            rotate_after=conf.rotate_after,
            lookup=lookup,
        )
    except QtoasterError as exc:
        raise click.ClickException(str(exc)) from exc
    publish: list[DkimKey] = []
    for step in steps:
        click.echo(f"{name}: {step.what}")
        publish += step.records
    if publish:
        click.echo("publish:")
        for key in publish:
            click.echo(zone_record(key))
    if any(" now active" in s.what or s.what.startswith("deleted") for s in steps):
        click.echo(f"note: {RELOAD}")
    if not answered:
        sys.exit(EXIT_TEMPORARY)


@dkim.command("delete")
@home_option
@click.argument("domain")
@click.argument("selector")
def delete(home: Home, domain: str, selector: str) -> None:
    """Delete DOMAIN's key SELECTOR (its file and its state)."""
    try:
        key = dkimkeys.delete(_store(home), domain, selector)
    except QtoasterError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"deleted {key.selector} ({key.algorithm}, was {key.state}) of {key.domain}")
    if key.state == "active":
        click.echo(f"note: {RELOAD}")


def zone_record(key: DkimKey) -> str:
    """``NAME. IN TXT ( "..." "..." )``: the text in strings of at most 255 bytes."""
    text = key.txt()
    parts = [text[i : i + TXT_CHUNK] for i in range(0, len(text), TXT_CHUNK)]
    quoted = " ".join(f'"{p}"' for p in parts)
    return f"{key.record_name()}. IN TXT ( {quoted} )"


def txt_lookup(settings: Settings) -> dkimkeys.Lookup:
    """A blocking TXT lookup through [dns] nameservers: the records' strings joined, []
    if there is none (NXDOMAIN, no TXT), None on a failure (timeout, SERVFAIL)."""
    resolver = dns.resolver.Resolver(configure=not settings.dns_nameservers)
    if settings.dns_nameservers:
        try:
            servers = [parse_nameserver(text) for text in settings.dns_nameservers]
        except ValueError as exc:
            raise click.ClickException(f"[dns] nameservers: {exc}") from exc
        resolver.nameservers = [address for address, _ in servers]
        resolver.nameserver_ports = {address: port for address, port in servers}
    resolver.lifetime = settings.dns_timeout
    resolver.timeout = min(5.0, settings.dns_timeout)

    def lookup(name: str) -> Sequence[str] | None:
        try:
            answer = resolver.resolve(name, dns.rdatatype.TXT, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return []
        except dns.exception.DNSException:
            return None
        return [
            b"".join(rdata.strings).decode("utf-8", "replace")
            for rdata in answer
            if rdata.rdtype == dns.rdatatype.TXT
        ]

    return lookup
