"""MTA-STS (RFC 8461): a recipient domain's published TLS policy for its mail exchangers.

For a domain delivered by MX (no smtproutes route) `MtaSts.policy` answers the policy in
force, or None:

1. ``_mta-sts.DOMAIN`` TXT: exactly one record starting ``v=STSv1`` with an ``id=``
   (section 3.1); none (or several) means no new policy.
2. When the id differs from the cached policy's, or the cached one is older than its
   ``max_age``: ``GET https://mta-sts.DOMAIN/.well-known/mta-sts.txt`` (section 3.3), the
   certificate verified against the system CAs (plus ``[remote] ca_file``) and its name,
   no redirects, 200 and ``text/plain`` only, at most 64 KiB, within `FETCH_SECONDS`.
   The HTTP/1.1 GET is our own on ``asyncio.open_connection``: no thread, no dependency.
3. Policies are cached in memory and in one JSON file per domain in the cache directory
   (the remote user's ``run/remote/mta-sts``), so they survive restarts (section 5).

Invariants: a failed TXT lookup or fetch never removes a cached, unexpired policy (it stays
in force, section 5.1); without any policy, delivery is as before (None); a policy whose
mode is ``none`` is returned (it replaces an older enforce policy) and enforces nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from qtoaster.config.control import ascii_lower
from qtoaster.core.errors import FormatError

log = logging.getLogger("qtoaster.remote")

MAX_POLICY = 64 * 1024  # RFC 8461 3.3
FETCH_SECONDS = 10.0
MAX_AGE_LIMIT = 31557600  # RFC 8461 3.2: at most one year
_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")

# TXT lookup: the records' texts, or None when DNS failed (temporary).
TxtLookup = Callable[[str], Awaitable[list[str] | None]]
# Addresses of the policy host, or () when it has none / DNS failed.
AddressLookup = Callable[[str], Awaitable[tuple[str, ...]]]


class PolicyError(FormatError, ValueError):
    """A policy file or HTTP answer that cannot be used; the text says why."""


@dataclass(frozen=True, slots=True)
class StsPolicy:
    domain: str
    id: str  # the TXT id it was fetched for
    mode: str  # "enforce", "testing" or "none"
    mx: tuple[str, ...]  # patterns, lower case; "*.example.net" matches one label
    max_age: int  # seconds
    fetched: float  # time.time() of the fetch

    def expired(self, now: float) -> bool:
        return now >= self.fetched + self.max_age

    def allows(self, host: str) -> bool:
        """*host* (an MX name) matches one of the policy's mx patterns (section 4.1)."""
        host = ascii_lower(host.rstrip("."))
        for pattern in self.mx:
            if pattern.startswith("*."):
                if "." in host and host.split(".", 1)[1] == pattern[2:]:
                    return True
            elif host == pattern:
                return True
        return False

    @property
    def label(self) -> str:
        """How log lines and reports name it: ``MTA-STS policy of D (enforce)``."""
        return f"MTA-STS policy of {self.domain} ({self.mode})"


def parse_txt(records: list[str]) -> str | None:
    """The policy id of the ``_mta-sts`` TXT records; None unless exactly one is STSv1."""
    ids: list[str | None] = []
    for text in records:
        fields = [f.strip() for f in text.split(";")]
        if fields[0] != "v=STSv1":
            continue
        found = None
        for field in fields[1:]:
            key, _, value = field.partition("=")
            if key.strip() == "id" and _ID.fullmatch(value.strip()):
                found = value.strip()
        ids.append(found)
    if len(ids) != 1:
        return None  # section 3.1: several STSv1 records are treated as none
    return ids[0]


def parse_policy(text: str, domain: str, policy_id: str, now: float) -> StsPolicy:
    """The policy file's ``key: value`` lines (section 3.2); PolicyError when unusable."""
    values: dict[str, str] = {}
    mx: list[str] = []
    for raw in text.replace("\r\n", "\n").split("\n"):
        if not raw.strip():
            continue
        key, sep, value = raw.partition(":")
        if not sep:
            raise PolicyError(f"line without a colon: {raw[:60]!r}")
        key, value = key.strip(), value.strip()
        if key == "mx":
            mx.append(_mx_pattern(value))
        elif key in values:
            continue  # section 3.2: only the first occurrence counts
        else:
            values[key] = value
    if values.get("version") != "STSv1":
        raise PolicyError("no 'version: STSv1'")
    mode = values.get("mode")
    if mode not in ("enforce", "testing", "none"):
        raise PolicyError(f"mode is {mode!r}, not enforce, testing or none")
    max_age_text = values.get("max_age", "")
    if not max_age_text.isdigit() or len(max_age_text) > 10:
        raise PolicyError(f"max_age is {max_age_text!r}, not a number of seconds")
    if mode != "none" and not mx:
        raise PolicyError(f"mode {mode} without any mx line")
    max_age = min(int(max_age_text), MAX_AGE_LIMIT)
    return StsPolicy(domain, policy_id, mode, tuple(mx), max_age, now)


def _mx_pattern(value: str) -> str:
    pattern = ascii_lower(value.rstrip("."))
    labels = pattern[2:].split(".") if pattern.startswith("*.") else pattern.split(".")
    if not all(_LABEL.match(label) for label in labels):
        raise PolicyError(f"mx {value!r} is not a host name or *.host name")
    return pattern


class MtaSts:
    """Policies of recipient domains: looked up, fetched, cached (memory and disk)."""

    def __init__(
        self,
        txt: TxtLookup,
        addresses: AddressLookup,
        cache_dir: Path | None,
        *,
        cafile: str | None = None,
        port: int = 443,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._txt = txt
        self._addresses = addresses
        self._dir = cache_dir
        self._port = port
        self._clock = clock
        self._context = ssl.create_default_context(cafile=None)
        if cafile:
            self._context.load_verify_locations(cafile=cafile)
        self._context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._memory: dict[str, StsPolicy] = {}
        self._pending: dict[str, asyncio.Future[StsPolicy | None]] = {}

    async def policy(self, domain: str) -> StsPolicy | None:
        """The policy in force for *domain* (lower case), or None."""
        pending = self._pending.get(domain)
        if pending is not None:  # one lookup per domain at a time
            return await asyncio.shield(pending)
        future: asyncio.Future[StsPolicy | None] = asyncio.get_running_loop().create_future()
        self._pending[domain] = future
        try:
            result = await self._policy(domain)
            future.set_result(result)
            return result
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        finally:
            del self._pending[domain]

    async def _policy(self, domain: str) -> StsPolicy | None:
        now = self._clock()
        cached = self._memory.get(domain) or self._read_disk(domain)
        if cached is not None and cached.expired(now):
            cached = None
        records = await self._txt(f"_mta-sts.{domain}")
        policy_id = parse_txt(records) if records is not None else None
        if policy_id is None or (cached is not None and cached.id == policy_id):
            return cached  # no (new) record, or DNS failed: the cached policy stays
        try:
            text = await self._fetch(domain)
            fresh = parse_policy(text, domain, policy_id, now)
        except (ValueError, OSError, EOFError, TimeoutError) as exc:  # SSLError is an OSError
            log.warning("remote MTA-STS policy of %s: fetch failed: %s", domain, exc)
            return cached
        log.info(
            "remote MTA-STS policy of %s: id %s, mode %s, max_age %d",
            domain,
            fresh.id,
            fresh.mode,
            fresh.max_age,
        )
        self._memory[domain] = fresh
        self._write_disk(fresh)
        return fresh

    async def _fetch(self, domain: str) -> str:
        host = f"mta-sts.{domain}"
        addresses = await self._addresses(host)
        if not addresses:
            raise PolicyError(f"{host} has no address")
        async with asyncio.timeout(FETCH_SECONDS):
            reader, writer = await asyncio.open_connection(
                addresses[0], self._port, ssl=self._context, server_hostname=host
            )
            try:
                request = (
                    "GET /.well-known/mta-sts.txt HTTP/1.1\r\n"
                    f"Host: {host}\r\nConnection: close\r\n"
                    "User-Agent: qtoaster\r\n\r\n"
                )
                writer.write(request.encode("ascii"))
                return await read_response(reader)
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    # -- the disk cache ---------------------------------------------------------------

    def _file(self, domain: str) -> Path | None:
        if self._dir is None or "/" in domain or domain.startswith("."):
            return None
        return self._dir / f"{domain}.json"

    def _read_disk(self, domain: str) -> StsPolicy | None:
        path = self._file(domain)
        if path is None:
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            policy = StsPolicy(
                str(data["domain"]),
                str(data["id"]),
                str(data["mode"]),
                tuple(str(m) for m in data["mx"]),
                int(data["max_age"]),
                float(data["fetched"]),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("remote MTA-STS cache %s unusable: %s", path, exc)
            return None
        if policy.domain != domain:
            return None
        self._memory[domain] = policy
        return policy

    def _write_disk(self, policy: StsPolicy) -> None:
        path = self._file(policy.domain)
        if path is None:
            return
        temp = path.with_name(f".{path.name}.{os.getpid()}")
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            temp.write_text(json.dumps(asdict(policy)), encoding="utf-8")
            os.replace(temp, path)
        except OSError as exc:  # the memory cache still holds it
            log.warning("remote MTA-STS cache %s not written: %s", path, exc)


async def read_response(reader: asyncio.StreamReader) -> str:
    """The body of an HTTP/1.1 200 ``text/plain`` answer, at most `MAX_POLICY` bytes."""
    status = await reader.readline()
    parts = status.decode("latin-1").split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise PolicyError("not an HTTP answer")
    if parts[1] != "200":  # section 3.3: redirects are not followed
        raise PolicyError(f"HTTP status {parts[1]}")
    headers: dict[str, str] = {}
    for _ in range(100):
        line = (await reader.readline()).decode("latin-1").strip()
        if not line:
            break
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    else:
        raise PolicyError("too many HTTP header lines")
    media = headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "text/plain":
        raise PolicyError(f"content type {media or 'missing'}, not text/plain")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = await _chunked(reader)
    else:
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit() or int(length) > MAX_POLICY:
                raise PolicyError(f"Content-Length {length} (at most {MAX_POLICY})")
            body = await reader.readexactly(int(length))
        else:
            body = await reader.read(MAX_POLICY + 1)
    if len(body) > MAX_POLICY:
        raise PolicyError(f"policy over {MAX_POLICY} bytes")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError("policy is not UTF-8") from exc


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    body = b""
    while True:
        size_line = (await reader.readline()).split(b";")[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise PolicyError("bad chunk size") from None
        if size == 0:
            return body
        if len(body) + size > MAX_POLICY:
            raise PolicyError(f"policy over {MAX_POLICY} bytes")
        body += await reader.readexactly(size)
        await reader.readline()
