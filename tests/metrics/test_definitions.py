"""The hooks of metrics/definitions.py, in memory (no PROMETHEUS_MULTIPROC_DIR)."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import REGISTRY

from qtoaster.metrics import definitions as metrics


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_session_accepted_rejected_count_up() -> None:
    before = sample("qtoaster_sessions_total", listener="imaps")
    metrics.session("imaps")
    metrics.session("imaps")
    assert sample("qtoaster_sessions_total", listener="imaps") == before + 2
    rejected = sample("qtoaster_smtp_rejections_total", stage="rcpt", reason="rcpthosts")
    metrics.rejected("rcpt", "rcpthosts")
    assert (
        sample("qtoaster_smtp_rejections_total", stage="rcpt", reason="rcpthosts") == rejected + 1
    )


def test_delivery_observes_the_delay_of_successes_only() -> None:
    count = sample("qtoaster_delivery_delay_seconds_count", channel="remote")
    total = sample("qtoaster_delivery_delay_seconds_sum", channel="remote")
    metrics.delivery("success", "remote", time.time() - 60)
    metrics.delivery("deferral", "remote", time.time() - 60)
    assert sample("qtoaster_delivery_delay_seconds_count", channel="remote") == count + 1
    added = sample("qtoaster_delivery_delay_seconds_sum", channel="remote") - total
    assert 59 < added < 70
    assert sample("qtoaster_deliveries_total", result="deferral", channel="remote") >= 1


def test_queue_gauges() -> None:
    metrics.queue(5, time.time() - 100)
    assert sample("qtoaster_queue_messages", queue="main") == 5
    assert 99 < sample("qtoaster_queue_oldest_message_age_seconds", queue="main") < 110
    metrics.queue(0, None)
    assert sample("qtoaster_queue_oldest_message_age_seconds", queue="main") == 0


def test_tls_and_auth_results() -> None:
    failed = sample("qtoaster_tls_handshakes_total", result="failure")
    metrics.tls_handshake(False)
    assert sample("qtoaster_tls_handshakes_total", result="failure") == failed + 1
    ok = sample("qtoaster_auth_attempts_total", protocol="imap", result="success")
    metrics.auth("imap", True)
    assert sample("qtoaster_auth_attempts_total", protocol="imap", result="success") == ok + 1


def test_timed_scan_observes_answers_and_failures() -> None:
    @metrics.timed_scan("spamd")
    async def scan(fail: bool) -> str:
        if fail:
            raise OSError("down")
        return "clean"

    count = sample("qtoaster_scanner_duration_seconds_count", scanner="spamd")
    assert asyncio.run(scan(False)) == "clean"
    with pytest.raises(OSError):
        asyncio.run(scan(True))
    assert sample("qtoaster_scanner_duration_seconds_count", scanner="spamd") == count + 2


def test_precreate_makes_the_roles_series_at_zero() -> None:
    metrics.precreate("send")
    assert (
        REGISTRY.get_sample_value(
            "qtoaster_deliveries_total", {"result": "failure", "channel": "local"}
        )
        is not None
    )
