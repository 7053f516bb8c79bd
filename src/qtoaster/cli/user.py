"""``qtoaster user``: vpopmail's vadduser, vdeluser, vpasswd, vsetuserquota and vmoduser.

``user add --from-file`` is in :mod:`qtoaster.cli.userbatch`.
"""

from __future__ import annotations

from typing import IO

import click

from qtoaster.cli.dirsupport import (
    flags_text,
    open_directory,
    parse_user_quota,
    quota_text,
    read_password,
    remove_mail,
    show_rows,
    size_text,
    when_text,
)
from qtoaster.cli.options import home_option
from qtoaster.cli.userbatch import add_batch, no_default_quota
from qtoaster.cli.uservacation import spam_folder_text, user_vacation, vacation_text
from qtoaster.core.home import Home
from qtoaster.directory.schema import UserFlag
from qtoaster.directory.store import (
    UNSET,
    DomainInfo,
    UserInfo,
)
from qtoaster.maildir.quota import Quota, read_maildirsize


@click.group()
def user() -> None:
    """Mailbox users: add, del, passwd, quota, set, vacation, show, list."""


@user.command("add")
@home_option
@click.argument("address", required=False)
@click.option("--password", default=None, help="The password (visible in ps; prefer stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin's first line.")
@click.option("--quota", default=None, metavar="SIZE", help="e.g. 500M, 2G, 10M,1000C, NOQUOTA.")
@click.option(
    "--from-file",
    type=click.File("r", encoding="utf-8", errors="surrogateescape"),
    metavar="FILE",
    help="Add every user of FILE (- = stdin): lines address[:password[:quota]].",
)
def user_add(
    home: Home,
    address: str | None,
    password: str | None,
    password_stdin: bool,
    quota: str | None,
    from_file: IO[str] | None,
) -> None:
    """Add user ADDRESS and create its Maildir, or every user of --from-file at once."""
    if from_file is not None:
        if address is not None or password is not None or password_stdin or quota is not None:
            raise click.UsageError("--from-file takes no ADDRESS, password or quota")
        add_batch(home, from_file)
        return
    if address is None:
        raise click.UsageError("give an ADDRESS or --from-file FILE")
    password = read_password(password, password_stdin)
    limits = None if quota is None else parse_user_quota(quota)
    with open_directory(home) as directory:
        if limits is None:
            directory.add_user(address, password)
        else:
            directory.add_user(address, password, limits.bytes, quota_messages=limits.messages)
            if limits.bytes is None:
                no_default_quota(directory, [address])
    note = "" if password is not None else " (no password: it cannot log in)"
    click.echo(f"added user {address.lower()}{note}")


@user.command("del")
@home_option
@click.argument("address")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def user_del(home: Home, address: str, yes: bool) -> None:
    """Delete user ADDRESS, its forwards and all its mail."""
    with open_directory(home) as directory:
        info = directory.user(address)
        if info is None:
            raise click.ClickException(f"unknown user: {address}")
        if not yes:
            click.confirm(
                f"Delete user {info.address} and all mail under {info.maildir.parent}?",
                abort=True,
            )
        directory.delete_user(info.address)
        remove_mail(home, info.maildir.parent)
    click.echo(f"deleted user {info.address}")


@user.command("passwd")
@home_option
@click.argument("address")
@click.option("--password", default=None, help="The password (visible in ps; prefer stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin's first line.")
@click.option("--remove", is_flag=True, help="Remove the password: the user cannot log in.")
def user_passwd(
    home: Home, address: str, password: str | None, password_stdin: bool, remove: bool
) -> None:
    """Set the password of ADDRESS (asked for without an option), or remove it."""
    new = read_password(password, password_stdin)
    if remove and new is not None:
        raise click.ClickException("give a password or --remove, not both")
    if not remove and new is None:
        new = click.prompt("New password", hide_input=True, confirmation_prompt=True)
        if not new:
            raise click.ClickException("the password is empty")
    with open_directory(home) as directory:
        directory.set_password(address, new)
        info = directory.user(address)
    assert info is not None
    if new is None:
        click.echo(f"removed the password of {info.address}: it cannot log in")
    else:
        also = " and its CRAM-MD5/APOP secrets" if info.has_secrets else ""
        click.echo(f"changed the password of {info.address}{also}")


@user.command("quota")
@home_option
@click.argument("address")
@click.argument("size", metavar="SIZE")
def user_quota(home: Home, address: str, size: str) -> None:
    """Set the Maildir++ quota of ADDRESS: 50M, 10485760S,1000C, NOQUOTA (spec 21.4)."""
    limits = parse_user_quota(size)
    with open_directory(home) as directory:
        info = directory.set_user(address, quota=limits.bytes, quota_messages=limits.messages)
    click.echo(f"{info.address}: quota {quota_text(info.quota, info.quota_messages)}")


def _usage_text(info: UserInfo) -> str:
    found = read_maildirsize(info.maildir)
    if found is None:
        return "not computed (no maildirsize yet)"
    _definition, usage, _lines, _mtime = found
    text = f"{usage.bytes} bytes in {usage.messages} message(s)"
    if info.quota:
        text += f", {100 * usage.bytes // info.quota}% of {size_text(info.quota).split()[0]}"
    return text


def _secrets_text(info: UserInfo, domain_info: DomainInfo | None) -> str:
    if info.secrets is None:
        wanted = domain_info is not None and domain_info.secrets
        choice = f"the domain's choice ({'kept' if wanted else 'not kept'})"
    else:
        choice = "kept" if info.secrets else "not kept"
    return f"{choice}; stored: {'yes' if info.has_secrets else 'no'}"


@user.command("show")
@home_option
@click.argument("address")
def user_show(home: Home, address: str) -> None:
    """Show every setting of ADDRESS and its Maildir++ usage."""
    with open_directory(home) as directory:
        info = directory.user(address)
        if info is None:
            raise click.ClickException(f"unknown user: {address}")
        domain_info = directory.domain(info.domain)
        usage = _usage_text(info)
        vacation = directory.vacation(info.address)
    show_rows(
        [
            ("address", info.address),
            ("domain", info.domain),
            ("local part", info.local_part),
            ("maildir", info.maildir),
            ("password", "set" if info.has_password else "none (cannot log in)"),
            ("quota", quota_text(info.quota, info.quota_messages)),
            ("usage", usage),
            ("flags", flags_text(info.flags)),
            ("secrets", _secrets_text(info, domain_info)),
            ("spam folder", spam_folder_text(info.junk_spam)),
            ("vacation", vacation_text(vacation)),
            ("created", when_text(info.created)),
        ]
    )


@user.command("set")
@home_option
@click.argument("address")
@click.option("--pop/--no-pop", default=None, help="Allow POP3 logins.")
@click.option("--imap/--no-imap", default=None, help="Allow IMAP logins.")
@click.option("--smtp-auth/--no-smtp-auth", default=None, help="Allow SMTP AUTH.")
@click.option("--relay/--no-relay", default=None, help="Let it relay once authenticated.")
@click.option("--enable/--disable", default=None, help="Allow any login (mail still arrives).")
@click.option("--bounce-mail/--no-bounce-mail", default=None, help="Bounce its mail.")
@click.option("--secrets", "secrets", flag_value="on", help="Keep CRAM-MD5/APOP secrets.")
@click.option("--no-secrets", "secrets", flag_value="off", help="Keep none; forget them.")
@click.option("--domain-secrets", "secrets", flag_value="domain", help="As its domain says.")
@click.option(
    "--spam-folder",
    type=click.Choice(["junk", "inbox"]),
    default=None,
    help="Where mail the spam scanner marked goes: .Junk or the INBOX.",
)
def user_set(
    home: Home,
    address: str,
    pop: bool | None,
    imap: bool | None,
    smtp_auth: bool | None,
    relay: bool | None,
    enable: bool | None,
    bounce_mail: bool | None,
    secrets: str | None,
    spam_folder: str | None,
) -> None:
    """Change the flags of ADDRESS (vpopmail's vmoduser), its secrets choice or its spam
    folder."""
    add, clear = UserFlag(0), UserFlag(0)
    # --pop etc. allow something: they clear a NO_* bit; --bounce-mail sets its bit.
    for allowed, flag in (
        (pop, UserFlag.NO_POP),
        (imap, UserFlag.NO_IMAP),
        (smtp_auth, UserFlag.NO_SMTP_AUTH),
        (relay, UserFlag.NO_RELAY),
        (enable, UserFlag.DISABLED),
        (None if bounce_mail is None else not bounce_mail, UserFlag.BOUNCE_MAIL),
    ):
        if allowed is True:
            clear |= flag
        elif allowed is False:
            add |= flag
    if not add and not clear and secrets is None and spam_folder is None:
        raise click.UsageError("nothing to change: give at least one option")
    choice = UNSET if secrets is None else {"on": True, "off": False, "domain": None}[secrets]
    with open_directory(home) as directory:
        junk = UNSET if spam_folder is None else spam_folder == "junk"
        info = directory.set_user(
            address, add_flags=add, clear_flags=clear, secrets=choice, junk_spam=junk
        )
        domain_info = directory.domain(info.domain)
    click.echo(f"{info.address}: flags {flags_text(info.flags)}")
    if spam_folder is not None:
        click.echo(f"{info.address}: spam folder {spam_folder_text(info.junk_spam)}")
    if secrets is not None:
        click.echo(f"{info.address}: secrets {_secrets_text(info, domain_info)}")
        from_domain = domain_info is not None and domain_info.secrets
        wanted = info.secrets if info.secrets is not None else from_domain
        if wanted and not info.has_secrets:
            click.echo("the secrets take effect at the next `qtoaster user passwd`")


@user.command("list")
@home_option
@click.argument("domain_name", metavar="[DOMAIN]", required=False)
def user_list(home: Home, domain_name: str | None) -> None:
    """List users (of DOMAIN): address, quota (bytes, 'S,C' form with a message limit, or
    NOQUOTA), password or no-password, flags (- or e.g. nopop,noauth); tab-separated."""
    with open_directory(home) as directory:
        for info in directory.users(domain_name):
            if info.quota_messages is not None:
                quota = Quota(info.quota or None, info.quota_messages).definition()
            else:
                quota = "NOQUOTA" if info.quota is None else str(info.quota)
            secret = "password" if info.has_password else "no-password"
            click.echo(f"{info.address}\t{quota}\t{secret}\t{flags_text(info.flags)}")


user.add_command(user_vacation)
