"""The settings of greylisting and rate limits (issue 18): ``[greylist]`` and ``[ratelimit]``
of qtoaster.toml, typed and checked as ``config/settings.py`` does the rest
(docs/configuration.md, docs/antispam.md).

Invariants: as settings.py's: every key known, typed and within bounds, or a problem
recorded in the :class:`~qtoaster.config.tables.Tables`; absent keys take the defaults.
Both features are off by default; tcp.smtp's GREYLIST and RATELIMIT switch them per client.
"""

from __future__ import annotations

from dataclasses import dataclass

from qtoaster.config.tables import Tables, int_between, is_bool

DAY = 86_400


@dataclass(frozen=True, slots=True)
class GreylistSettings:
    """[greylist]: postgrey's defaults (--delay=300, --max-age=35, --retry-window=2,
    --auto-whitelist-clients=5, --ipv4cidr=24, --ipv6cidr=64)."""

    enabled: bool = False
    delay: int = 300  # seconds before a retry of a new triplet is accepted
    retry_window: int = 2 * DAY  # seconds after the first try within which the retry counts
    max_age: int = 35 * DAY  # seconds an unused passed triplet or whitelisted client is kept
    auto_whitelist: int = (
        5  # passed retries after which the client is no longer greylisted; 0: never
    )
    ipv4_prefix: int = 24  # the client "network" of the triplet
    ipv6_prefix: int = 64


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    """[ratelimit]: each limit is N events per period (0: that limit off); a limit is a
    bucket of N that refills at N per period (GCRA), so a client that hit it gets one more
    event every period/N seconds."""

    enabled: bool = False
    connections_per_minute: int = 60  # per client address (IPv6: /64)
    messages_per_minute: int = 60  # MAIL commands per client address
    recipients_per_message: int = 100  # RFC 5321 4.5.3.1.8: at least 100 must be accepted
    recipients_per_hour: int = 1000  # per client address
    auth_messages_per_hour: int = 200  # per authenticated user
    auth_recipients_per_day: int = 1000  # distinct recipients per authenticated user


def greylist_settings(tables: Tables) -> GreylistSettings:
    d = GreylistSettings()

    def get(key: str, low: int, high: int, default: int) -> int:
        value: int = tables.get("greylist", key, int_between(low, high), default)
        return value

    return GreylistSettings(
        enabled=tables.get("greylist", "enabled", is_bool, d.enabled),
        delay=get("delay", 1, DAY, d.delay),
        retry_window=get("retry_window", 60, 30 * DAY, d.retry_window),
        max_age=get("max_age", DAY, 365 * DAY, d.max_age),
        auto_whitelist=get("auto_whitelist", 0, 1000, d.auto_whitelist),
        ipv4_prefix=get("ipv4_prefix", 8, 32, d.ipv4_prefix),
        ipv6_prefix=get("ipv6_prefix", 16, 128, d.ipv6_prefix),
    )


def ratelimit_settings(tables: Tables) -> RateLimitSettings:
    d = RateLimitSettings()
    many = 10_000_000

    def get(key: str, default: int) -> int:
        value: int = tables.get("ratelimit", key, int_between(0, many), default)
        return value

    return RateLimitSettings(
        enabled=tables.get("ratelimit", "enabled", is_bool, d.enabled),
        connections_per_minute=get("connections_per_minute", d.connections_per_minute),
        messages_per_minute=get("messages_per_minute", d.messages_per_minute),
        recipients_per_message=get("recipients_per_message", d.recipients_per_message),
        recipients_per_hour=get("recipients_per_hour", d.recipients_per_hour),
        auth_messages_per_hour=get("auth_messages_per_hour", d.auth_messages_per_hour),
        auth_recipients_per_day=get("auth_recipients_per_day", d.auth_recipients_per_day),
    )
