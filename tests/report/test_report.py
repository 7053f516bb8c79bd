"""qtoaster report: a golden sample log, the command's options, and any bytes read."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from qtoaster.cli.main import cli
from qtoaster.report.parse import parse_line
from qtoaster.report.summary import Summary, percentile

SAMPLE = Path(__file__).with_name("sample.log")


def run(*args: str, stdin: bytes | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["report", *args], input=stdin)
    return result.exit_code, result.output


def figures(*args: str) -> dict[str, object]:
    code, out = run("--json", *args)
    assert code == 0, out
    parsed: dict[str, object] = json.loads(out)
    return parsed


def test_golden_figures_of_the_sample() -> None:
    d = figures(str(SAMPLE))
    assert d["lines"] == 22 and d["unparsed"] == 2
    assert (d["received"], d["received_bytes"]) == (2, 150)
    assert (d["delivered"], d["failed"], d["bounced"]) == (2, 1, 1)
    assert (d["deferrals"], d["deferred_messages"]) == (2, 1)
    assert d["rejected"] == 2
    assert d["rejected_by_reason"] == [
        {"reason": "chkuser", "code": "550", "count": 1},
        {"reason": "tcprules", "code": "-", "count": 1},
    ]
    assert d["top_senders"] == [
        {"name": "alice@far.test", "count": 1},
        {"name": "alice@ours.test", "count": 1},
    ]
    assert d["top_recipients"] == [
        {"name": "bob@ours.test", "count": 1},
        {"name": "carol@far.test", "count": 1},
    ]
    assert (d["delay_median"], d["delay_p95"]) == (1.0, 11.0)
    assert (d["sessions"], d["tls_sessions"], d["tls_received"]) == (2, 1, 1)
    assert d["logins_ok"] == {"pop3": 1, "smtp": 1} and d["logins_failed"] == {"smtp": 1}


def test_day_and_range_filters() -> None:
    assert figures("--day", "2026-12-08", str(SAMPLE))["rejected"] == 1  # the zone: +-11 h
    assert figures("--day", "2026-12-08", str(SAMPLE))["logins_ok"] == {"pop3": 1}
    d = figures("--since", "2026-12-07T12:01:00+01:00", "--until", "2026-12-07T12:02", str(SAMPLE))
    assert (d["received"], d["failed"]) == (1, 1)


def test_text_output_gzip_and_stdin(tmp_path: Path) -> None:
    packed = tmp_path / "old.log.gz"
    packed.write_bytes(gzip.compress(SAMPLE.read_bytes()))
    code, out = run(str(packed), "-", stdin=SAMPLE.read_bytes())
    assert code == 0, out
    assert "received              4" in out
    assert "chkuser (550)" in out
    assert "TLS: sessions 2/4 (50%), messages received 2/4 (50%)" in out
    assert "Logins: pop3 2 ok / 0 failed, smtp 2 ok / 2 failed" in out


def test_bad_arguments_are_clear_errors(tmp_path: Path) -> None:
    code, out = run(str(tmp_path / "missing.log"))
    assert code == 1 and "cannot read" in out
    code, out = run("--since", "yesterday", str(SAMPLE))
    assert code == 2 and "not an ISO 8601 time" in out
    code, out = run("--day", "2026-12-07", "--since", "2026-12-07", str(SAMPLE))
    assert code == 2 and "not both" in out


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 0.95) == 95.0


def test_free_text_lines_parse_with_no_fields() -> None:
    line = parse_line(
        "2026-12-07T12:00:00.001+01:00 qtoaster[10] INFO supervisor SIGHUP: reloading"
    )
    assert line is not None and line.event == "supervisor" and line.fields == {}


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_any_bytes_make_a_report(chunks: list[bytes]) -> None:
    summary = Summary()
    for raw in b"\n".join(chunks).split(b"\n"):
        summary.add_text(raw.decode("utf-8", errors="replace"))
    summary.as_dict(5)


@given(st.text(alphabet=st.sampled_from('ab =" \\\ttmsgdeliveryrefused.'), max_size=80))
def test_near_miss_lines_make_a_report(rest: str) -> None:
    summary = Summary()
    summary.add_text(f"2026-12-07T12:00:00.000+00:00 send[1] INFO {rest}")
    summary.add_text(f"2026-12-07T12:00:00.000+00:00 send[1] INFO delivery {rest}")
    summary.as_dict(5)
