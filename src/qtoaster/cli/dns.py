"""``qtoaster dns records DOMAIN`` and ``qtoaster dns check DOMAIN`` (docs/dns.md).

``records`` prints, as a zone file with comments, everything the operator must publish
for a domain hosted here (mailauth.records); ``--mta-sts-dir`` also writes the MTA-STS
policy file for a web server.  ``check`` asks the live DNS through the configured
resolver (``[dns] nameservers``) and prints one line per record (mailauth.dnscheck).

Exit status of ``check``: 0 every record ok; 1 something missing or wrong; 111 the DNS
could not be asked (qmail's "temporary", as sendmail uses it; 2 is click's usage
error).  Both commands refuse a domain this home does not host: exit status 2.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import ssl
import urllib.request
from pathlib import Path
from typing import Any

import click
import dns.exception
import dns.rdatatype
import dns.resolver

from qtoaster.cli.dirsupport import open_directory
from qtoaster.cli.dnsrecords import hosted, published
from qtoaster.cli.options import home_option
from qtoaster.cli.run import load_or_exit
from qtoaster.config.loader import Config
from qtoaster.core.errors import ConfigError
from qtoaster.core.home import Home
from qtoaster.mailauth.dnscheck import check
from qtoaster.mailauth.dnsquery import DnsTemporary
from qtoaster.mailauth.records import DkimRecord, Published, render_zone
from qtoaster.net.resolver import make_resolver

EXIT_PROBLEMS = 1
EXIT_NOT_HOSTED = 2
EXIT_TEMPORARY = 111
POLICY_MAX_BYTES = 64 * 1024  # RFC 8461 3.3: a policy file larger than this is refused


@click.group("dns")
def dns_group() -> None:
    """What to publish in DNS for a hosted domain, and a check of the live DNS."""


def _published(home: Home, domain: str) -> tuple[Config, Published, list[DkimRecord]]:
    domain = domain.rstrip(".").lower()
    config = load_or_exit(home)

    def in_directory(name: str) -> bool:
        with open_directory(home) as directory:
            return directory.hosts_domain(name)

    if not domain or not hosted(config, in_directory, domain):
        click.echo(
            f"qtoaster: {domain or '(empty)'} is not hosted here "
            "(qtoaster domain add, control/locals or control/virtualdomains)",
            err=True,
        )
        raise SystemExit(EXIT_NOT_HOSTED)
    found, dkim = published(home, config, domain)
    return config, found, dkim


@dns_group.command("records")
@home_option
@click.argument("domain")
@click.option(
    "--mta-sts-dir",
    type=click.Path(path_type=Path, file_okay=False),
    metavar="DIR",
    help="also write the MTA-STS policy to DIR/.well-known/mta-sts.txt",
)
def records_cmd(home: Home, domain: str, mta_sts_dir: Path | None) -> None:
    """Print the DNS records DOMAIN needs, as a zone file with comments."""
    _config, published, _dkim = _published(home, domain)
    click.echo(render_zone(published), nl=False)
    if mta_sts_dir is not None:
        path = mta_sts_dir / ".well-known" / "mta-sts.txt"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            staging = path.with_name(f".mta-sts.txt.{os.getpid()}")
            staging.write_text(published.mta_sts_policy)
            staging.chmod(0o644)  # the web server serves it to anyone
            os.replace(staging, path)
        except OSError as exc:
            raise click.ClickException(f"{path}: {exc.strerror or exc}") from None
        click.echo(f"qtoaster: wrote {path}", err=True)


@dns_group.command("check")
@home_option
@click.argument("domain")
@click.option(
    "--fetch", is_flag=True, help="also fetch the MTA-STS policy over HTTPS and compare it"
)
def check_cmd(home: Home, domain: str, fetch: bool) -> None:
    """Compare the live DNS of DOMAIN with what it should publish (exit 0: all ok)."""
    config, published, dkim = _published(home, domain)
    settings = config.settings
    try:
        lookup = _Lookup(settings.dns_nameservers, settings.dns_timeout)
    except ConfigError as exc:
        raise click.ClickException("; ".join(exc.problems)) from None
    fetcher = None
    if fetch:

        def fetcher() -> str:
            return fetch_policy(policy_url(published.domain), settings.dns_timeout)

    for note in published.notes:
        click.echo(f"note: {note}")
    try:
        findings = check(published, dkim, settings.publish.addresses, lookup, fetcher)
    except DnsTemporary as exc:
        click.echo(f"qtoaster: {exc}: temporary, try again later", err=True)
        raise SystemExit(EXIT_TEMPORARY) from None
    for finding in findings:
        click.echo(finding.line())
    if any(finding.status != "ok" for finding in findings):
        raise SystemExit(EXIT_PROBLEMS)


class _Lookup:
    """mailauth.dnscheck's Lookup on a blocking resolver with the configured servers
    (the CLI has no event loop to keep free)."""

    def __init__(self, nameservers: tuple[str, ...], timeout: float) -> None:
        configured = make_resolver(nameservers, timeout=timeout, lifetime=timeout)
        self.resolver = dns.resolver.Resolver(configure=False)
        self.resolver.nameservers = configured.nameservers
        self.resolver.timeout = timeout
        self.resolver.lifetime = timeout

    def __call__(self, name: str, rdtype: str) -> list[str]:
        try:
            answer = self.resolver.resolve(name, rdtype, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return []
        except dns.exception.DNSException as exc:
            raise DnsTemporary(f"DNS {rdtype} {name}: {exc}") from None
        return [_text(rdata) for rdata in answer]


def _text(rdata: Any) -> str:
    rdtype = rdata.rdtype
    if rdtype == dns.rdatatype.TXT:
        return b"".join(rdata.strings).decode("utf-8", "replace")
    if rdtype == dns.rdatatype.MX:
        return f"{rdata.preference} {str(rdata.exchange).lower()}"
    if rdtype == dns.rdatatype.SRV:
        return f"{rdata.priority} {rdata.weight} {rdata.port} {str(rdata.target).lower()}"
    if rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        return ipaddress.ip_address(rdata.address).compressed
    if rdtype == dns.rdatatype.PTR:
        return str(rdata.target).lower()
    return str(rdata)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """RFC 8461 3.3: a policy is fetched without following redirects."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def policy_url(domain: str) -> str:
    return f"https://mta-sts.{domain}/.well-known/mta-sts.txt"


def fetch_policy(url: str, timeout: float, context: ssl.SSLContext | None = None) -> str:
    """The MTA-STS policy at *url* over HTTPS (the system's resolver and, without
    *context*, its CA certificates, as a sending MTA would check it; no redirects,
    text/plain only, at most 64 KiB: RFC 8461 3.3); OSError when it cannot be had."""
    https = urllib.request.HTTPSHandler(context=context or ssl.create_default_context())
    opener = urllib.request.build_opener(_NoRedirect, https)
    try:
        with opener.open(url, timeout=timeout) as response:
            content_type = response.headers.get_content_type()
            body: bytes = response.read(POLICY_MAX_BYTES + 1)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise OSError(f"{url}: {exc}") from None
    if content_type != "text/plain":
        raise OSError(f"{url}: served as {content_type}, not text/plain")
    if len(body) > POLICY_MAX_BYTES:
        raise OSError(f"{url}: larger than {POLICY_MAX_BYTES} bytes")
    return body.decode("utf-8", "replace")
