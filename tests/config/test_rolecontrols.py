"""config.rolecontrols: each role's extra control files, loaded once into typed values.

Each loader is checked against the code that reads the same file in place today, so
switching a call site to the loader changes nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qtoaster.config.control import Controls
from qtoaster.config.rolecontrols import (
    QREGEX_FILES,
    RemoteControls,
    TarpitControls,
    load_mfcheck,
    load_numbered_lines,
    load_remote,
    load_signatures,
    load_tarpit,
    load_tls_client_ciphers,
    load_tls_server,
)
from qtoaster.core.errors import ConfigError


@pytest.fixture
def control(tmp_path: Path) -> Path:
    control = tmp_path / "control"
    control.mkdir()
    return control


def write(control: Path, name: str, text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    (control / name).write_bytes(data)


def test_defaults_when_every_file_is_missing(control: Path) -> None:
    assert load_tarpit(control) == TarpitControls(count=0, delay=5)
    assert load_mfcheck(control) == 0
    assert load_signatures(control) == ()
    assert load_numbered_lines(control / "badmailfrom") == ()
    assert load_remote(control) == RemoteControls(None, 60, 1200, None)
    assert load_tls_client_ciphers(control) == ""
    tls = load_tls_server(control)
    assert tls.certfile == control / "servercert.pem"
    assert (tls.ciphers, tls.tlsclients, tls.tlsclients_exists) == ("", frozenset(), False)
    assert tls.clientca is tls.clientcrl is tls.dhparams is None


def test_integers_follow_qmail(control: Path) -> None:
    write(control, "tarpitcount", "50 recipients\n")  # leading digits, as control_readint
    write(control, "tarpitdelay", "x\n")  # no digits: the default
    write(control, "mfcheck", "1\n")
    assert load_tarpit(control) == TarpitControls(count=50, delay=5)
    assert load_mfcheck(control) == 1


def test_remote_files(control: Path) -> None:
    write(control, "helohost", "relay.example.test  \n")
    write(control, "timeoutconnect", "0\n")  # qmail-remote: at least one second
    write(control, "timeoutremote", "30\n")
    write(control, "outgoingip", "192.0.2.1\n")
    assert load_remote(control) == RemoteControls("relay.example.test", 1, 30, "192.0.2.1")
    write(control, "helohost", "\n")  # present but empty: control/me
    assert load_remote(control).helohost is None


def test_remote_matches_the_agents_reading(control: Path) -> None:
    agent = pytest.importorskip("qtoaster.remote.agent")
    write(control, "helohost", "relay.example.test\n")
    write(control, "timeoutconnect", "7\n")
    write(control, "outgoingip", "\n")
    loaded = load_remote(control)
    old = agent.RemoteConfig.load(control, Controls.for_me("me.example.test"), 25)
    assert old.helo == loaded.helohost
    assert (old.timeouts.connect, old.timeouts.remote) == (7, loaded.timeoutremote)
    assert old.outgoingip is loaded.outgoingip is None


def test_signatures_split_at_nul_and_skip_nul_lines(control: Path) -> None:
    write(control, "signatures", b"# exe\nTVqQ\x00TVpQ\n\x00skipped\n\nUEsDBA  \n")
    assert load_signatures(control) == (b"TVqQ", b"TVpQ", b"UEsDBA")
    signatures = pytest.importorskip("qtoaster.policy.signatures")
    loaded = signatures.Signatures.load(control)
    assert loaded is not None and loaded.entries == load_signatures(control)


def test_unreadable_signatures_is_a_config_error(control: Path) -> None:
    (control / "signatures").mkdir()
    with pytest.raises(ConfigError, match="signatures: unable to read"):
        load_signatures(control)


def test_numbered_lines_keep_their_numbers(control: Path) -> None:
    write(control, "badmailfrom", "# spammers\n.*@spam\\.test  \n\n!ok@spam\\.test\n")
    lines = load_numbered_lines(control / "badmailfrom")
    assert lines == ((2, ".*@spam\\.test"), (4, "!ok@spam\\.test"))
    qregex = pytest.importorskip("qtoaster.policy.checks.qregex")
    rules = qregex.read_rules(control / "badmailfrom", "badmailfrom").rules
    assert [(rule.line, rule.text) for rule in rules] == list(lines)
    assert set(QREGEX_FILES) == set(qregex.FILES)


def test_tls_server_files(control: Path) -> None:
    write(control, "tlsserverciphers", "ECDHE-RSA-AES128-GCM-SHA256\nECDHE-RSA-AES256-GCM-SHA384\n")
    write(control, "tlsclients", "# gateways\nAlice@Example.TEST\n")
    for name in ("clientca.pem", "clientcrl.pem", "dh1024.pem"):
        write(control, name, "")
    tls = load_tls_server(control)
    assert tls.ciphers == "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384"
    assert tls.tlsclients == frozenset({"alice@example.test"}) and tls.tlsclients_exists
    assert (tls.clientca, tls.clientcrl, tls.dhparams) == (
        control / "clientca.pem",
        control / "clientcrl.pem",
        control / "dh1024.pem",
    )


def test_empty_tlsclients_exists_but_lists_nobody(control: Path) -> None:
    write(control, "tlsclients", "# nobody yet\n")
    tls = load_tls_server(control)
    assert tls.tlsclients_exists and tls.tlsclients == frozenset()


def test_tls_client_ciphers_are_joined(control: Path) -> None:
    write(control, "tlsclientciphers", "HIGH\n# no\n!aNULL\n")
    assert load_tls_client_ciphers(control) == "HIGH:!aNULL"


@pytest.mark.parametrize(
    ("name", "load"),
    [
        ("tarpitcount", load_tarpit),
        ("mfcheck", load_mfcheck),
        ("timeoutremote", load_remote),
        ("tlsclients", load_tls_server),
        ("tlsclientciphers", load_tls_client_ciphers),
    ],
)
def test_unreadable_files_raise_oserror(control: Path, name: str, load: object) -> None:
    (control / name).mkdir()  # EISDIR even for root
    assert callable(load)
    with pytest.raises(OSError):
        load(control)


def test_numbered_lines_unreadable_raise_oserror(control: Path) -> None:
    (control / "badhelo").mkdir()
    with pytest.raises(OSError):
        load_numbered_lines(control / "badhelo")
