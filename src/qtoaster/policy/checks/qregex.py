"""qregex: badhelo, badmailfrom, badmailto as case-insensitive POSIX EREs (spec 8).

Each control file holds one extended regular expression per line (blank and ``#`` lines
ignored, spec 2), searched unanchored and case-insensitively.  A line starting with ``!``
fires when the rest does NOT match.  The first firing line makes the subject "bad"; a line
that does not compile never fires, negated or not (``config check`` names it: `problems`).

Verdicts are reported at RCPT, in qmail-smtpd's order (spec 4, RCPT steps 2-4): the HELO
name (unless NOBADHELO; none without HELO), the sender (never the null sender; plus
badmailfromnorelay when RELAYCLIENT is unset), the recipient (plus badmailtonorelay when
RELAYCLIENT is unset).  The original evaluates badhelo at HELO and badmailfrom at MAIL and
remembers the result; evaluating both at RCPT with the session's current HELO and sender
gives the same answers at no extra cost, since every rule file remembers its answer per
subject (:meth:`RuleFile.first_firing`).

Invariants: control files are read and compiled once, when the check is built; every
match runs with a time bound (`regex`'s ``timeout``), and a match that runs out of time
does not fire and is logged once per pattern.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import regex

from qtoaster.config.rolecontrols import load_numbered_lines
from qtoaster.core.errors import ConfigError
from qtoaster.core.reply import Reply
from qtoaster.policy.ere import FLAGS, EreError, compile_ere
from qtoaster.policy.verdict import PASS, Facts, SessionState, Stage, Verdict

log = logging.getLogger("qtoaster.policy")

BAD_HELO = Reply(553, "sorry, your HELO host name has been denied (#5.7.1)")
BAD_MAILFROM = Reply(553, "sorry, your envelope sender has been denied (#5.7.1)")
BAD_MAILTO = Reply(553, "sorry, your envelope recipient has been denied (#5.7.1)")

_BACKREF = regex.compile(r"\\[0-9]|\(\?P[=>]|\\g<")  # group numbers shift in an alternation
FILES = ("badhelo", "badmailfrom", "badmailfromnorelay", "badmailto", "badmailtonorelay")
# Seconds one pattern may search one subject; the event loop waits at most this long.
DEFAULT_TIMEOUT = 0.05
MEMO_SIZE = 4096  # subjects whose answer is remembered per file (then forgotten at once)


@dataclass(frozen=True, slots=True)
class Rule:
    """One control-file line: where it is, what it says, its compiled form or error."""

    file: str
    line: int
    text: str
    negated: bool
    pattern: regex.Pattern[str] | None
    error: str | None = None


def parse_rule(file: str, line: int, text: str) -> Rule:
    negated = text.startswith("!")
    body = text[1:] if negated else text
    try:
        return Rule(file, line, text, negated, compile_ere(body))
    except EreError as exc:
        return Rule(file, line, text, negated, None, str(exc))


@dataclass(slots=True)
class RuleFile:
    """The rules of one control file, in file order."""

    name: str
    rules: tuple[Rule, ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    _timed_out: set[int] = field(default_factory=set)
    # One alternation of every plain pattern without backreferences: the common answer
    # ("nothing fires") costs one search instead of one per line.  Only when it matches
    # (a rejection) are the lines tried one by one, to name the first that fires.
    _combined: regex.Pattern[str] | None = None
    _others: tuple[Rule, ...] = ()  # negated, or not combinable: tried one by one
    _memo: dict[str, Rule | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        plain = [r for r in self.rules if r.pattern is not None and not r.negated]
        combinable = [r for r in plain if r.pattern and not _BACKREF.search(r.pattern.pattern)]
        if len(combinable) > 1:
            try:
                self._combined = regex.compile(
                    "|".join(f"(?:{r.pattern.pattern})" for r in combinable if r.pattern),
                    FLAGS,
                )
            except (regex.error, OverflowError, RecursionError):
                self._combined = None
        if self._combined is not None:
            self._others = tuple(r for r in self.rules if r not in combinable)

    def first_firing(self, subject: str) -> Rule | None:
        """The first line (file order) that fires for *subject*; None when none does.

        Answers are remembered per subject (HELO names, senders and recipients repeat
        from session to session); the rules never change for this object's lifetime.
        """
        if not self.rules:
            return None  # a missing or empty file: no lookup, nothing remembered
        try:
            return self._memo[subject]
        except KeyError:
            pass
        timeouts = len(self._timed_out)
        found = self._search(subject)
        if len(self._timed_out) == timeouts:  # an answer cut short by the clock is not kept
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            self._memo[subject] = found
        return found

    def _search(self, subject: str) -> Rule | None:
        if self._combined is not None:
            try:
                hit = self._combined.search(subject, timeout=self.timeout)
            except TimeoutError:
                hit = True  # some pattern is slow: let the line-by-line walk time it
            if hit is None:
                return self._first_of(self._others, subject)
        return self._first_of(self.rules, subject)

    def _first_of(self, rules: tuple[Rule, ...], subject: str) -> Rule | None:
        for rule in rules:
            if rule.pattern is None:
                continue  # does not compile: never fires (spec 8)
            try:
                found = rule.pattern.search(subject, timeout=self.timeout) is not None
            except TimeoutError:
                self._log_timeout(rule)
                continue  # out of time: does not fire, negated or not
            if found != rule.negated:
                return rule
        return None

    def _log_timeout(self, rule: Rule) -> None:
        if rule.line not in self._timed_out:
            self._timed_out.add(rule.line)
            log.warning(
                "qregex control/%s line %d %r ran out of time (%.3fs); it does not fire",
                self.name,
                rule.line,
                rule.text,
                self.timeout,
            )


def read_rules(path: Path, name: str, timeout: float = DEFAULT_TIMEOUT) -> RuleFile:
    """*path*'s rules (spec 2 list rules, keeping line numbers); empty if it is missing.

    OSError other than ENOENT propagates (qmail-smtpd: ``421 unable to read controls``).
    """
    rules = [parse_rule(name, number, line) for number, line in load_numbered_lines(path)]
    return RuleFile(name, tuple(rules), timeout)


def problems(control_dir: Path) -> list[str]:
    """For ``config check``: each qregex line that does not compile (and unreadable files)."""
    found: list[str] = []
    for name in FILES:
        try:
            rules = read_rules(control_dir / name, name)
        except OSError as exc:
            found.append(f"{control_dir.name}/{name}: unable to read: {exc.strerror or exc}")
            continue
        for rule in rules.rules:
            if rule.error is not None:
                found.append(
                    f"{control_dir.name}/{name} line {rule.line}: {rule.text!r} is not a valid "
                    f"POSIX extended regular expression ({rule.error}); it never matches"
                )
    return found


class Qregex:
    name = "qregex"
    stages = frozenset({Stage.RCPT})

    def __init__(self, files: Sequence[RuleFile]) -> None:
        by_name = {rule_file.name: rule_file for rule_file in files}
        empty = RuleFile("")
        self._helo = by_name.get("badhelo", empty)
        self._from = by_name.get("badmailfrom", empty)
        self._from_norelay = by_name.get("badmailfromnorelay", empty)
        self._to = by_name.get("badmailto", empty)
        self._to_norelay = by_name.get("badmailtonorelay", empty)

    @classmethod
    def from_control_dir(cls, control_dir: Path, timeout: float = DEFAULT_TIMEOUT) -> Qregex:
        """Read and compile the five control files; ConfigError if one cannot be read."""
        files, unreadable = [], []
        for name in FILES:
            try:
                files.append(read_rules(control_dir / name, name, timeout))
            except OSError as exc:
                unreadable.append(f"{control_dir.name}/{name}: unable to read: {exc}")
        if unreadable:
            raise ConfigError(unreadable)
        return cls(files)

    @property
    def active(self) -> bool:
        """False when every file is missing or empty: the pipeline can leave it out."""
        files = (self._helo, self._from, self._from_norelay, self._to, self._to_norelay)
        return any(rule_file.rules for rule_file in files)

    def check(self, stage: Stage, facts: Facts, state: SessionState) -> Verdict:
        assert facts.recipient is not None
        relay = "RELAYCLIENT" in facts.env
        if facts.helo is not None and "NOBADHELO" not in facts.env:
            rule = self._helo.first_firing(facts.helo)
            if rule is not None:
                return _bad("badhelo", facts.helo, rule, facts, BAD_HELO)
        if facts.sender:  # the null sender is never tested (spec 8)
            rule = self._either(self._from, self._from_norelay, facts.sender, relay)
            if rule is not None:
                return _bad("badmailfrom", facts.sender, rule, facts, BAD_MAILFROM)
        rule = self._either(self._to, self._to_norelay, facts.recipient, relay)
        if rule is not None:
            return _bad("badmailto", facts.recipient, rule, facts, BAD_MAILTO)
        return PASS

    @staticmethod
    def _either(always: RuleFile, norelay: RuleFile, subject: str, relay: bool) -> Rule | None:
        rule = always.first_firing(subject)
        if rule is None and not relay:
            rule = norelay.first_firing(subject)
        return rule


def _bad(what: str, subject: str, rule: Rule, facts: Facts, reply: Reply) -> Verdict:
    """qregex's log line (spec 8), LOGREGEX's pattern suffix included, and the rejection."""
    suffix = f" matches pattern: {rule.text}" if "LOGREGEX" in facts.env else ""
    log.info("qregex %s: <%s> at %s%s", what, subject, facts.remote_ip, suffix)
    return Verdict(reply=reply)
