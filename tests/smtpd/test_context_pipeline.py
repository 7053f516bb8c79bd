"""The pipeline smtpd assembles: every stage's checks in the order docs/policy.md lists."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from qtoaster.cli.newhome import init_home
from qtoaster.config.loader import load_config
from qtoaster.core.home import Home
from qtoaster.policy.verdict import Stage
from qtoaster.smtpd.context import SmtpdContext


def test_checks_of_each_stage_in_the_documented_order(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    init_home(home, "mail.example.com", as_root=False)
    (home.control / "signatures").write_text("TVqQAAMAA\n")
    (home.control / "badmailto").write_text("^victim@\n")
    with ThreadPoolExecutor(1) as executor:
        pipeline = SmtpdContext.build(load_config(home), executor).pipeline
    assert {stage: pipeline.names(stage) for stage in Stage} == {
        Stage.CONNECT: ["rblsmtpd", "dnsbl", "ratelimit"],
        Stage.HELO: [],
        Stage.MAIL: ["databytes", "mfcheck", "ratelimit"],
        Stage.RCPT: [
            "dnsbl",
            "pregreet",
            "pipelining",
            "qregex",
            "srs",
            "rcpthosts",
            "greylist",
            "ratelimit",
            "tarpit",
        ],
        Stage.DATA: [
            "databytes",
            "hops",
            "signatures",
            "spf",
            "fcrdns",
            "dmarc",
            "clamd",
            "spamd",
        ],
    }
