"""chkuser (spec 12) against a fake directory, and the pipeline's awaitable checks.

The fake Lookups answers ``peek`` from a "cache" the test fills and ``resolve`` from a
table; the executor is a real thread pool, so the slow path really leaves the loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from qtoaster.core.envelope import split_address
from qtoaster.core.errors import TemporaryFailure
from qtoaster.core.home import Home
from qtoaster.core.reply import NOT_RCPTHOSTS, Reply
from qtoaster.directory.cache import MISS, CachedLookups
from qtoaster.directory.model import Recipient, UserInfo
from qtoaster.directory.schema import UNKNOWN_BOUNCE, UNKNOWN_DELETE, UserFlag
from qtoaster.directory.store import NO_FLAGS, Directory, create_directory
from qtoaster.policy.checks.chkuser import (
    INTRUSION,
    MAILBOX_FULL,
    MAX_RCPT,
    NO_DOMAIN,
    NO_MAILBOX,
    UNAVAILABLE,
    Chkuser,
    ChkuserSettings,
    maildir_percent,
)
from qtoaster.policy.pipeline import Pipeline
from qtoaster.policy.verdict import PASS, Facts, SessionState, Stage, Verdict

HOSTED = {
    "example.com": UNKNOWN_BOUNCE,
    "catchall.test": "all@example.com",
    "delete.test": UNKNOWN_DELETE,
}
# control/locals: not in the directory, local delivery routes them to defaultdomain.
LOCALS = frozenset({"mx.test", "localhost"})
RCPTHOSTS = frozenset({*HOSTED, *LOCALS, "relay-only.test"})


def user_info(
    local: str,
    domain: str = "example.com",
    *,
    quota: int | None = None,
    quota_messages: int | None = None,
    flags: UserFlag = NO_FLAGS,
    maildir: Path | None = None,
) -> UserInfo:
    return UserInfo(
        address=f"{local}@{domain}",
        domain=domain,
        local_part=local,
        quota=quota,
        flags=flags,
        maildir=maildir or Path(f"/nonexistent/{domain}/{local}/Maildir"),
        has_password=True,
        created=0,
        quota_messages=quota_messages,
    )


def recipient(
    address: str,
    user: UserInfo | None = None,
    forwards: tuple[str, ...] = (),
) -> Recipient:
    local, domain = split_address(address)
    return Recipient(domain, local.lower(), user, forwards, False, HOSTED[domain])


ALICE = user_info("alice")
ENTRIES = {
    "alice@example.com": recipient("alice@example.com", ALICE),
    "alice-lists@example.com": recipient("alice-lists@example.com", ALICE),  # user-ext
    "info@example.com": recipient("info@example.com", None, ("alice@example.com",)),
    "gone@example.com": recipient(
        "gone@example.com", user_info("gone", flags=UserFlag.BOUNCE_MAIL)
    ),
    "boss@catchall.test": recipient("boss@catchall.test", user_info("boss", "catchall.test")),
}


@dataclass
class FakeLookups:
    entries: dict[str, Recipient] = field(default_factory=lambda: dict(ENTRIES))
    cached: set[str] = field(default_factory=set)
    failing: bool = False
    peek_failing: bool = False
    resolved: list[str] = field(default_factory=list)

    def peek(self, address: str) -> Recipient | object | None:
        if self.peek_failing:
            raise TemporaryFailure("change token unreadable")
        key = address.lower()
        return self.resolve(key) if key in self.cached else MISS

    def resolve(self, address: str) -> Recipient | None:
        self.resolved.append(address)
        if self.failing:
            raise TemporaryFailure("database down")
        local, domain = split_address(address)
        if domain not in HOSTED:
            return None
        found = self.entries.get(address.lower())
        return found or Recipient(domain, local.lower(), None, (), False, HOSTED[domain])


@dataclass(frozen=True)
class FakeControls:
    allowed: frozenset[str] = RCPTHOSTS
    locals: frozenset[str] = LOCALS
    defaultdomain: str = "example.com"

    def rcpthosts_allows(self, domain: str) -> bool:
        return domain in self.allowed


@pytest.fixture(scope="module")
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield pool


@pytest.fixture
def lookups() -> FakeLookups:
    return FakeLookups()


def make(
    lookups: FakeLookups,
    executor: ThreadPoolExecutor,
    mode: str = "domain",
    percent: int = 0,
    **settings: float,
) -> Chkuser:
    return Chkuser(
        FakeControls(),
        lookups,
        executor,
        ChkuserSettings(mode=mode, **settings),
        lambda found: percent,
    )


def facts(rcpt: str, env: Mapping[str, str] | None = None) -> Facts:
    return Facts(
        remote_ip="192.0.2.9",
        local_ip="127.0.0.1",
        env=env or {},
        helo="client.test",
        sender="s@far.test",
        recipient=rcpt,
    )


async def ask(check: Chkuser, fact: Facts, state: SessionState | None = None) -> Verdict:
    answer = check.check(Stage.RCPT, fact, SessionState() if state is None else state)
    return await answer if inspect.isawaitable(answer) else answer


async def ask_all(
    check: Chkuser, rcpts: list[str], env: Mapping[str, str] | None = None
) -> list[Verdict]:
    session = SessionState()
    return [await ask(check, facts(rcpt, env), session) for rcpt in rcpts]


def replies(verdicts: list[Verdict]) -> list[Reply | None]:
    return [verdict.reply for verdict in verdicts]


# --- recipient decisions (spec 12.2) ---------------------------------------------------


async def test_unknown_user_gets_the_seed_text(
    lookups: FakeLookups, executor: ThreadPoolExecutor
) -> None:
    answer = make(lookups, executor).check(Stage.RCPT, facts("Nobody@EXAMPLE.com"), SessionState())
    assert inspect.isawaitable(answer)  # not cached: the lookup runs in the executor
    verdict = await answer
    assert verdict.reply is not None
    assert (
        verdict.reply.render() == b"550 sorry, no mailbox here by that name (#5.1.1 - chkusr)\r\n"
    )
    assert verdict.delay == pytest.approx(1.0)
    assert lookups.resolved == ["Nobody@EXAMPLE.com"]


@pytest.mark.parametrize(
    "rcpt",
    ["alice@example.com", "ALICE@Example.COM", "info@example.com", "alice-lists@example.com"],
    ids=["user", "case", "alias", "user-ext"],
)
async def test_users_and_aliases_pass(
    lookups: FakeLookups, executor: ThreadPoolExecutor, rcpt: str
) -> None:
    assert await ask(make(lookups, executor), facts(rcpt)) == PASS


async def test_bounce_mail_user_is_refused(
    lookups: FakeLookups, executor: ThreadPoolExecutor
) -> None:
    verdict = await ask(make(lookups, executor), facts("gone@example.com"))
    assert verdict.reply == NO_MAILBOX


@pytest.mark.parametrize("domain", ["catchall.test", "delete.test"])
async def test_catch_all_and_delete_domains_by_mode(
    lookups: FakeLookups, executor: ThreadPoolExecutor, domain: str
) -> None:
    rcpt = f"nobody@{domain}"
    assert await ask(make(lookups, executor), facts(rcpt)) == PASS  # "accepted any rcpt"
    always = make(lookups, executor, mode="always")
    assert (await ask(always, facts(rcpt))).reply == NO_MAILBOX
    env = {"CHKUSER_START": "ALWAYS"}
    assert (await ask(make(lookups, executor), facts(rcpt, env))).reply == NO_MAILBOX


async def test_known_user_of_catch_all_domain_in_always_mode(
    lookups: FakeLookups, executor: ThreadPoolExecutor
) -> None:
    always = make(lookups, executor, mode="always")
    assert await ask(always, facts("boss@catchall.test")) == PASS


async def test_rcpthosts_domain_not_hosted_passes(
    lookups: FakeLookups, executor: ThreadPoolExecutor
) -> None:
    always = make(lookups, executor, mode="always")
    assert await ask(always, facts("anyone@relay-only.test")) == PASS


# --- control/locals: routed as local delivery routes them (issue 12 item 5) ---------------


@pytest.mark.parametrize(
    ("rcpt", "expected"),
    [
        ("alice@mx.test", None),
        ("Info@LOCALHOST", None),  # an alias of defaultdomain
        ("alice-lists@mx.test", None),  # user-ext, as in defaultdomain
        ("postmaster@mx.test", NO_MAILBOX),  # defaultdomain decides: no such user there
        ("nobody@mx.test", NO_MAILBOX),
        ("gone@localhost", NO_MAILBOX),
    ],
)
async def test_locals_are_decided_in_defaultdomain(
    lookups: FakeLookups, executor: ThreadPoolExecutor, rcpt: str, expected: Reply | None
) -> None:
    verdict = await ask(make(lookups, executor), facts(rcpt))
    assert verdict.reply == expected
    local, _ = split_address(rcpt)
    assert lookups.resolved == [rcpt, f"{local}@example.com"]


@pytest.mark.parametrize("mode", ["domain", "always"])
async def test_locals_with_an_unhosted_defaultdomain_accept_only_postmaster(
    lookups: FakeLookups, executor: ThreadPoolExecutor, mode: str
) -> None:
    check = Chkuser(
        FakeControls(defaultdomain="mx.test"),
        lookups,
        executor,
        ChkuserSettings(mode=mode),
        lambda found: 0,
    )
    verdicts = await ask_all(
        check, ["nobody@mx.test", "alice@localhost", "PostMaster@mx.test", "postmaster@localhost"]
    )
    assert replies(verdicts) == [NO_MAILBOX, NO_MAILBOX, None, None]


async def test_locals_refusals_count_as_wrong_recipients(
    lookups: FakeLookups, executor: ThreadPoolExecutor
) -> None:
    env = {"CHKUSER_WRONGRCPTLIMIT": "2"}
    verdicts = await ask_all(
        make(lookups, executor), ["x@mx.test", "y@localhost", "alice@mx.test"], env
    )
    assert replies(verdicts) == [NO_MAILBOX, NO_MAILBOX, INTRUSION]


async def test_locals_from_the_cache_decide_without_the_executor(
    lookups: FakeLookups, executor: ThreadPoolExecutor
) -> None:
    lookups.cached |= {"nobody@mx.test", "nobody@example.com"}
    answer = make(lookups, executor).check(Stage.RCPT, facts("nobody@mx.test"), SessionState())
    assert isinstance(answer, Verdict)
    assert answer.reply == NO_MAILBOX


async def test_not_in_rcpthosts_gets_the_vanilla_reply(
    lookups: FakeLookups, executor: ThreadPoolExecutor
) -> None:
    check = make(lookups, executor)
    answer = check.check(Stage.RCPT, facts("x@far.test"), SessionState())
    assert isinstance(answer, Verdict)  # decided without the directory
    assert answer.reply == NOT_RCPTHOSTS
    assert answer.reply.code == 553
    assert answer.delay == 1.0  # every refusal waits (spec 12.5), relaying ones too
    assert lookups.resolved == []


@pytest.mark.parametrize(("value", "rewritten"), [("@hub.test", "x@far.test@hub.test"), ("", None)])
async def test_relayclient_relays(
    lookups: FakeLookups, executor: ThreadPoolExecutor, value: str, rewritten: str | None
) -> None:
    verdict = await ask(make(lookups, executor), facts("x@far.test", {"RELAYCLIENT": value}))
    assert verdict == Verdict(rewritten=rewritten)


async def test_relayclient_not_appended_to_a_local_domain(
    lookups: FakeLookups, executor: ThreadPoolExecutor
) -> None:
    check = make(lookups, executor)
    env = {"RELAYCLIENT": "@hub.test"}
    assert await ask(check, facts("alice@example.com", env)) == PASS  # spec 12.2 NOTE
    assert (await ask(check, facts("nobody@example.com", env))).reply == NO_MAILBOX


@pytest.mark.parametrize("rcpt", ["alice", "alice@"])
async def test_empty_domain(lookups: FakeLookups, executor: ThreadPoolExecutor, rcpt: str) -> None:
    verdict = await ask(make(lookups, executor), facts(rcpt))
    assert verdict.reply is not None
    assert verdict.reply.render() == b"511 sorry, you must specify a domain (#5.1.1 - chkuser)\r\n"
    assert verdict.delay == pytest.approx(1.0)


# --- CHKUSER_START (spec 12.1) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings_mode", "start", "catch_all_refused"),
    [
        ("domain", "ALWAYS", True),
        ("domain", " always ", True),
        ("always", "DOMAIN", False),
        ("always", None, True),
        ("domain", None, False),
    ],
)
async def test_chkuser_start_chooses_the_mode(
    lookups: FakeLookups,
    executor: ThreadPoolExecutor,
    settings_mode: str,
    start: str | None,
    catch_all_refused: bool,
) -> None:
    env = {} if start is None else {"CHKUSER_START": start}
    check = make(lookups, executor, mode=settings_mode)
    verdict = await ask(check, facts("nobody@catchall.test", env))
    assert (verdict.reply == NO_MAILBOX) is catch_all_refused
    assert (await ask(check, facts("nobody@example.com", env))).reply == NO_MAILBOX


@pytest.mark.parametrize("start", ["", "off", "yes", "NONE"])
async def test_other_chkuser_start_means_rcpthosts_only(
    lookups: FakeLookups, executor: ThreadPoolExecutor, start: str
) -> None:
    check = make(lookups, executor, mode="always")
    session = SessionState()
    env = {"CHKUSER_START": start, "CHKUSER_RCPTLIMIT": "2", "CHKUSER_WRONGRCPTLIMIT": "1"}
    for _ in range(3):
        answer = check.check(Stage.RCPT, facts("nobody@example.com", env), session)
        assert answer == PASS  # synchronous, unchecked
    answer = check.check(Stage.RCPT, facts("x@far.test", env), session)
    assert isinstance(answer, Verdict)
    assert answer.reply == NOT_RCPTHOSTS
    assert answer.delay == 0
    assert session == SessionState()  # nothing counted
    assert lookups.resolved == []


# --- limits and intrusion (spec 12.4) -----------------------------------------------------


async def test_rcptlimit_counts_per_session(
    lookups: FakeLookups, executor: ThreadPoolExecutor
) -> None:
    check = make(lookups, executor)
    env = {"CHKUSER_RCPTLIMIT": "3"}
    session = SessionState()
    verdicts = []
    for number, sender in enumerate(["a@x.test", "a@x.test", "b@x.test", "c@x.test", "d@x"]):
        # a new transaction (another MAIL FROM) keeps the same session: no reset
        fact = facts("alice@example.com", env)
        verdicts.append(await ask(check, dataclasses.replace(fact, sender=sender), session))
        assert len(verdicts) == number + 1
    assert replies(verdicts) == [None, None, MAX_RCPT, INTRUSION, INTRUSION]
    assert MAX_RCPT.render() == (
        b"571 sorry, reached maximum number of recipients for one session (#5.7.1 - chkuser)\r\n"
    )
    assert INTRUSION.render() == (
        b"571 sorry, you are violating our security policies (#5.7.1 - chkuser)\r\n"
    )
    # a new session starts again
    assert await ask(check, facts("alice@example.com", env)) == PASS


async def test_rcptlimit_counts_every_rcpt(
    lookups: FakeLookups, executor: ThreadPoolExecutor
) -> None:
    verdicts = await ask_all(
        make(lookups, executor),
        ["nobody@example.com", "x@far.test", "alice@example.com", "info@example.com"],
        {"CHKUSER_RCPTLIMIT": "3"},
    )
    assert replies(verdicts) == [NO_MAILBOX, NOT_RCPTHOSTS, MAX_RCPT, INTRUSION]


async def test_wrongrcptlimit(lookups: FakeLookups, executor: ThreadPoolExecutor) -> None:
    verdicts = await ask_all(
        make(lookups, executor),
        [
            "bob@example.com",
            "alice@example.com",
            "no-domain",  # domainless counts as wrong too
            "alice@example.com",
            "info@example.com",
        ],
        {"CHKUSER_WRONGRCPTLIMIT": "2"},
    )
    # the one reaching the threshold still gets its normal reply
    assert replies(verdicts) == [NO_MAILBOX, None, NO_DOMAIN, INTRUSION, INTRUSION]


@pytest.mark.parametrize("value", ["0", "-1", "abc", "", " 0x5"])
async def test_limits_that_mean_none(
    lookups: FakeLookups, executor: ThreadPoolExecutor, value: str
) -> None:
    env = {"CHKUSER_RCPTLIMIT": value, "CHKUSER_WRONGRCPTLIMIT": value}
    check = make(lookups, executor)
    verdicts = await ask_all(check, ["alice@example.com"] * 8 + ["bob@example.com"] * 8, env)
    assert replies(verdicts) == [None] * 8 + [NO_MAILBOX] * 8


async def test_delays_grow_per_refusal(lookups: FakeLookups, executor: ThreadPoolExecutor) -> None:
    verdicts = await ask_all(
        make(lookups, executor),
        ["bob@example.com", "alice@example.com", "x", "carol@example.com", "alice@example.com"],
        {"CHKUSER_RCPTLIMIT": "4"},
    )
    assert replies(verdicts) == [NO_MAILBOX, None, NO_DOMAIN, MAX_RCPT, INTRUSION]
    assert [v.delay for v in verdicts] == pytest.approx([1.0, 0.0, 1.3, 1.6, 1.9])


async def test_delays_follow_the_settings(
    lookups: FakeLookups, executor: ThreadPoolExecutor
) -> None:
    check = make(lookups, executor, delay=0.5, increase=0.25)
    verdicts = await ask_all(check, ["bob@example.com"] * 3)
    assert [v.delay for v in verdicts] == pytest.approx([0.5, 0.75, 1.0])


# --- CHKUSER_MBXQUOTA with a real Maildir (spec 12.2 step 7, 21.2) -----------------------


def make_maildir(root: Path, sizes: Sequence[int] = (), maildirsize: str | None = None) -> Path:
    maildir = root / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    for number, size in enumerate(sizes):
        (maildir / "new" / f"100{number}.1.host,S={size}").write_bytes(b"x" * size)
    if maildirsize is not None:
        (maildir / "maildirsize").write_text(maildirsize)
    return maildir


def quota_lookups(maildir: Path, quota: int | None, messages: int | None = None) -> FakeLookups:
    owner = user_info("full", quota=quota, quota_messages=messages, maildir=maildir)
    lookups = FakeLookups()
    lookups.entries["full@example.com"] = recipient("full@example.com", owner)
    lookups.cached.add("full@example.com")
    return lookups


def quota_check(lookups: FakeLookups, executor: ThreadPoolExecutor) -> Chkuser:
    settings = ChkuserSettings()
    return Chkuser(FakeControls(), lookups, executor, settings, maildir_percent("mx.test"))


@pytest.mark.parametrize(("limit", "full"), [("90", True), ("89", True), ("91", False)])
async def test_mbxquota_from_maildirsize(
    executor: ThreadPoolExecutor, tmp_path: Path, limit: str, full: bool
) -> None:
    maildir = make_maildir(tmp_path, maildirsize="1000S\n500 5\n400 4\n")
    check = quota_check(quota_lookups(maildir, 1000), executor)
    answer = check.check(
        Stage.RCPT, facts("full@example.com", {"CHKUSER_MBXQUOTA": limit}), SessionState()
    )
    assert inspect.isawaitable(answer)  # the disk is read off the event loop, even if cached
    verdict = await answer
    if full:
        assert verdict.reply is not None
        assert verdict.reply.render() == (
            b"522 sorry, recipient mailbox is full (#5.2.2 - chkuser)\r\n"
        )
        assert verdict.reply == MAILBOX_FULL
        assert verdict.delay == pytest.approx(1.0)
    else:
        assert verdict == PASS


async def test_mbxquota_scans_the_maildir(executor: ThreadPoolExecutor, tmp_path: Path) -> None:
    maildir = make_maildir(tmp_path, sizes=[300, 300, 350])  # 950 of 1000, no maildirsize
    check = quota_check(quota_lookups(maildir, 1000), executor)
    verdict = await ask(check, facts("full@example.com", {"CHKUSER_MBXQUOTA": "95"}))
    assert verdict.reply == MAILBOX_FULL
    assert (maildir / "maildirsize").read_text() == "1000S\n950 3\n"
    assert await ask(check, facts("full@example.com", {"CHKUSER_MBXQUOTA": "96"})) == PASS


async def test_mbxquota_message_count(executor: ThreadPoolExecutor, tmp_path: Path) -> None:
    maildir = make_maildir(tmp_path, sizes=[10, 10, 10])  # 3 of 4 messages: 75%
    check = quota_check(quota_lookups(maildir, None, messages=4), executor)
    assert (await ask(check, facts("full@example.com", {"CHKUSER_MBXQUOTA": "75"}))).reply == (
        MAILBOX_FULL
    )
    assert await ask(check, facts("full@example.com", {"CHKUSER_MBXQUOTA": "76"})) == PASS


@pytest.mark.parametrize("env", [{}, {"CHKUSER_MBXQUOTA": "0"}, {"CHKUSER_MBXQUOTA": "abc"}])
async def test_no_mbxquota_no_disk(
    executor: ThreadPoolExecutor, tmp_path: Path, env: dict[str, str]
) -> None:
    maildir = make_maildir(tmp_path, maildirsize="1000S\n1000 1\n")
    answer = quota_check(quota_lookups(maildir, 1000), executor).check(
        Stage.RCPT, facts("full@example.com", env), SessionState()
    )
    assert answer == PASS  # synchronous: neither the directory nor the disk is asked


async def test_mbxquota_without_user_quota(executor: ThreadPoolExecutor, tmp_path: Path) -> None:
    maildir = make_maildir(tmp_path, sizes=[5000])
    check = quota_check(quota_lookups(maildir, None), executor)
    answer = check.check(
        Stage.RCPT, facts("full@example.com", {"CHKUSER_MBXQUOTA": "1"}), SessionState()
    )
    assert answer == PASS  # unlimited: nothing to read


async def test_unreadable_quota_is_temporary(executor: ThreadPoolExecutor, tmp_path: Path) -> None:
    maildir = make_maildir(tmp_path)
    (maildir / "maildirsize").mkdir()  # reading it fails with EISDIR
    check = quota_check(quota_lookups(maildir, 1000), executor)
    verdict = await ask(check, facts("full@example.com", {"CHKUSER_MBXQUOTA": "90"}))
    assert verdict.reply == UNAVAILABLE


# --- directory trouble and the cache ------------------------------------------------------


async def test_directory_failure_is_451(lookups: FakeLookups, executor: ThreadPoolExecutor) -> None:
    lookups.failing = True
    check = make(lookups, executor)
    verdict = await ask(check, facts("nobody@example.com", {"CHKUSER_WRONGRCPTLIMIT": "1"}))
    assert verdict.reply is not None
    assert verdict.reply.render() == (
        b"451 system temporary unavailable, try again later (#4.3.0 - chkuser)\r\n"
    )
    assert verdict.reply.is_temporary
    lookups.failing = False
    # an outage is no wrong recipient: the threshold of 1 was not reached
    assert await ask(check, facts("alice@example.com", {"CHKUSER_WRONGRCPTLIMIT": "1"})) == PASS


async def test_peek_failure_is_451(lookups: FakeLookups, executor: ThreadPoolExecutor) -> None:
    lookups.peek_failing = True
    answer = make(lookups, executor).check(Stage.RCPT, facts("alice@example.com"), SessionState())
    assert isinstance(answer, Verdict)
    assert answer.reply == UNAVAILABLE


@pytest.mark.parametrize(
    ("rcpt", "reply"),
    [
        ("alice@example.com", None),
        ("info@example.com", None),
        ("nobody@example.com", NO_MAILBOX),
        ("nobody@catchall.test", None),
        ("x@relay-only.test", None),  # cached "not hosted"
    ],
)
async def test_cache_hit_answers_synchronously(
    lookups: FakeLookups, executor: ThreadPoolExecutor, rcpt: str, reply: Reply | None
) -> None:
    lookups.cached.add(rcpt)
    answer = make(lookups, executor).check(Stage.RCPT, facts(rcpt), SessionState())
    assert isinstance(answer, Verdict)
    assert answer.reply == reply
    assert lookups.resolved == [rcpt]  # only through peek: resolve was not scheduled


async def test_rejection_is_logged(
    lookups: FakeLookups, executor: ThreadPoolExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="qtoaster.policy"):
        await ask(make(lookups, executor), facts("nobody@example.com"))
    [line] = [r.getMessage() for r in caplog.records if "CHKUSER" in r.getMessage()]
    # spec 12.5's format: from <sender:remoteinfo:identify> remote <helo:host:ip>
    assert line.startswith("CHKUSER rejected rcpt: from <")
    assert "rcpt <nobody@example.com> : sorry, no mailbox here by that name" in line
    assert ":192.0.2.9>" in line


async def test_with_a_real_directory(executor: ThreadPoolExecutor, tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    create_directory(home)
    directory = Directory.open(home)
    try:
        directory.add_domain("example.com")
        directory.add_user("alice@example.com", None)
        directory.add_alias("info@example.com", ["alice@example.com"])
        cached = CachedLookups(directory)
        check = Chkuser(FakeControls(), cached, executor, ChkuserSettings(), lambda f: 0)
        for rcpt, reply in [
            ("alice-lists@example.com", None),  # vpopmail's user-ext fallback
            ("info@example.com", None),
            ("bob-lists@example.com", NO_MAILBOX),
            ("x@relay-only.test", None),
        ]:
            first = check.check(Stage.RCPT, facts(rcpt), SessionState())
            assert inspect.isawaitable(first)
            assert (await first).reply == reply
            again = check.check(Stage.RCPT, facts(rcpt), SessionState())  # now cached
            assert isinstance(again, Verdict)
            assert again.reply == reply
    finally:
        directory.close()


# --- the pipeline with awaitable checks ---------------------------------------------------


@dataclass
class Step:
    """A check that records what it saw and answers as told, now or later."""

    name: str
    verdict: Verdict = PASS
    later: bool = False
    seen: list[str | None] = field(default_factory=list)
    stages: frozenset[Stage] = frozenset({Stage.RCPT})

    def check(
        self, stage: Stage, facts: Facts, state: SessionState
    ) -> Verdict | Awaitable[Verdict]:
        self.seen.append(facts.recipient)
        return self._later() if self.later else self.verdict

    async def _later(self) -> Verdict:
        await asyncio.sleep(0)  # really suspends once
        return self.verdict


REFUSED = Reply(553, "refused (#5.7.1)")


def pipeline_facts() -> Facts:
    return facts("a@example.com")


def test_sync_checks_stay_sync() -> None:
    first, second = Step("first", Verdict(rewritten="b@example.com")), Step("second")
    answer = Pipeline([first, second]).run(Stage.RCPT, pipeline_facts())
    assert answer == Verdict(rewritten="b@example.com")
    assert second.seen == ["b@example.com"]


async def test_awaitable_in_the_middle_runs_the_rest() -> None:
    first = Step("first", Verdict(rewritten="b@example.com"))
    middle = Step("middle", Verdict(rewritten="c@example.com"), later=True)
    last = Step("last")
    after = Step("after", later=True)
    answer = Pipeline([first, middle, last, after]).run(Stage.RCPT, pipeline_facts())
    assert inspect.isawaitable(answer)
    assert last.seen == []  # nothing after the awaitable ran yet
    assert await answer == Verdict(rewritten="c@example.com")
    assert middle.seen == ["b@example.com"]
    assert last.seen == ["c@example.com"]
    assert after.seen == ["c@example.com"]


async def test_rewrite_before_the_awaitable_is_kept() -> None:
    first = Step("first", Verdict(rewritten="b@example.com"))
    answer = Pipeline([first, Step("middle", later=True), Step("last")]).run(
        Stage.RCPT, pipeline_facts()
    )
    assert inspect.isawaitable(answer)
    assert await answer == Verdict(rewritten="b@example.com")


@pytest.mark.parametrize("refusing", ["middle", "last"])
async def test_first_rejection_wins(refusing: str, caplog: pytest.LogCaptureFixture) -> None:
    middle = Step("middle", later=True)
    last = Step("last", later=refusing == "last")
    after = Step("after", Verdict(reply=Reply(550, "second refusal")))
    {"middle": middle, "last": last}[refusing].verdict = Verdict(reply=REFUSED, delay=1.5)
    with caplog.at_level(logging.INFO, logger="qtoaster.policy"):
        answer = Pipeline([middle, last, after]).run(Stage.RCPT, pipeline_facts(), "c42")
        assert inspect.isawaitable(answer)
        verdict = await answer
    assert verdict == Verdict(reply=REFUSED, delay=1.5)
    assert after.seen == []
    assert last.seen == ([] if refusing == "middle" else ["a@example.com"])
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused ")]
    assert line.startswith(f"refused session=c42 stage=rcpt reason={refusing} code=553")
    assert "to=a@example.com" in line
    assert 'reply="553 refused (#5.7.1)"' in line


def test_sync_rejection_before_an_awaitable_never_creates_it() -> None:
    later = Step("later", later=True)
    answer = Pipeline([Step("first", Verdict(reply=REFUSED)), later]).run(
        Stage.RCPT, pipeline_facts()
    )
    assert answer == Verdict(reply=REFUSED)
    assert later.seen == []


async def test_chkuser_in_a_pipeline_shares_the_session(
    lookups: FakeLookups, executor: ThreadPoolExecutor
) -> None:
    # A rewrite before chkuser copies the facts; the counters must still land in the
    # session the caller owns.
    session = SessionState()
    pipe = Pipeline(
        [Step("rewrite", Verdict(rewritten="nobody@example.com")), make(lookups, executor)]
    )
    env = {"CHKUSER_WRONGRCPTLIMIT": "2"}
    got = []
    for _ in range(3):
        answer = pipe.run(Stage.RCPT, facts("x@example.com", env), state=session)
        got.append(await answer if inspect.isawaitable(answer) else answer)
    assert replies(got) == [NO_MAILBOX, NO_MAILBOX, INTRUSION]
    assert session.chkuser.wrong == 2 and session.chkuser.intrusive


def test_limits_are_read_like_atoi() -> None:
    # chkuser reads its variables with atoi(3): "3abc" and " 2.9" are 3 and 2.
    from qtoaster.policy.checks.chkuser import _limit

    assert _limit({"X": "3abc"}, "X") == 3
    assert _limit({"X": " 2.9"}, "X") == 2
    assert _limit({"X": "+4"}, "X") == 4
    assert _limit({}, "X") == 0
