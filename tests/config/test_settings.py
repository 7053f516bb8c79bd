"""qtoaster.toml -> Settings: defaults, listeners, every problem in one ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest

from qtoaster.config.settings import (
    BounceFormat,
    ChkuserMode,
    Listener,
    ListenerKind,
    LogLevel,
    OnUnavailable,
    Settings,
    TlsVersion,
    load_settings,
    parse_listen,
    settings_from_toml,
)
from qtoaster.core.errors import ConfigError


def load_settings_text(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "qtoaster.toml"
    path.write_text(text)
    return load_settings(path)


@pytest.mark.parametrize(
    ("value", "host", "port", "text"),
    [
        ("127.0.0.1:2525", "127.0.0.1", 2525, "127.0.0.1:2525"),
        ("[::1]:2525", "::1", 2525, "[::1]:2525"),
        ("[0:0::1]:25", "::1", 25, "[::1]:25"),
        (":25", "0.0.0.0", 25, "0.0.0.0:25"),
        ("0.0.0.0:0", "0.0.0.0", 0, "0.0.0.0:0"),
    ],
)
def test_parse_listen(value: str, host: str, port: int, text: str) -> None:
    listener = parse_listen("smtp", value)
    assert listener == Listener("smtp", host, port)
    assert str(listener) == text


@pytest.mark.parametrize(
    "value",
    [
        "127.0.0.1",
        "::1:25",
        "[::1]25",
        "[127.0.0.1]:25",
        "mail.example.com:25",
        "1.2.3.4:x",
        "1.2.3.4:65536",
        "1.2.3.4:-1",
        "1.2.3.4:",
        "1.2.3.4:²",
    ],
)
def test_parse_listen_rejects(value: str) -> None:
    with pytest.raises(ValueError):
        parse_listen("smtp", value)


def test_defaults_for_empty_file(tmp_path: Path) -> None:
    settings = load_settings_text(tmp_path, "")
    assert settings == load_settings_text(tmp_path, '[listen]\nsmtp = ["127.0.0.1:2525"]\n')
    assert settings.listeners == (Listener("smtp", "127.0.0.1", 2525),)
    assert settings.smtpd_workers == 0
    assert settings.max_connections == 10000
    assert settings.max_per_ip == 50
    assert settings.database_url is None
    assert settings.fsync is True
    assert settings.log_level == "info"


def test_all_values(tmp_path: Path) -> None:
    settings = load_settings_text(
        tmp_path,
        """
[listen]
smtp = ["127.0.0.1:25", "[::1]:25"]
[smtpd]
workers = 4
max_connections = 500
max_per_ip = 7
[database]
url = "postgresql://db/q"
[queue]
fsync = false
[log]
level = "debug"
""",
    )
    assert [str(x) for x in settings.listeners] == ["127.0.0.1:25", "[::1]:25"]
    assert (settings.smtpd_workers, settings.max_connections) == (4, 500)
    assert settings.max_per_ip == 7
    assert settings.database_url == "postgresql://db/q"
    assert settings.fsync is False and settings.log_level == "debug"


def test_empty_listener_list_allowed(tmp_path: Path) -> None:
    assert load_settings_text(tmp_path, "[listen]\nsmtp = []\n").listeners == ()


def test_every_problem_reported_at_once(tmp_path: Path) -> None:
    text = """
typo = 1
[listen]
smtp = ["127.0.0.1:25", "nowhere:25", "127.0.0.1:25"]
nntp = [":119"]
[smtpd]
workers = "four"
max_connections = 0
max_per_ip = 0
threads = 2
[database]
url = ""
[queue]
fsync = 1
[log]
level = "loud"
[extra]
"""
    with pytest.raises(ConfigError) as info:
        load_settings_text(tmp_path, text)
    problems = info.value.problems
    expected = [
        "[listen] smtp: 'nowhere:25'",
        "[listen] smtp: '127.0.0.1:25' given twice",
        "[listen] unknown key 'nntp'",
        "[smtpd] workers: must be an integer from 0 to 256, not 'four'",
        "[smtpd] max_connections: must be an integer from 1 to 1000000, not 0",
        "[smtpd] max_per_ip: must be an integer from 1 to 1000000, not 0",
        "[smtpd] unknown key 'threads'",
        "[database] url: must be a non-empty string",
        "[queue] fsync: must be true or false, not 1",
        "[log] level: must be one of debug, info, warning, error, not 'loud'",
        "unknown table [extra]",
        "typo = 1 is not inside a table (settings go under [listen], [smtpd]",
    ]
    assert len(problems) == len(expected), problems
    for fragment in expected:
        assert any(fragment in p for p in problems), fragment
    assert all(p.startswith("qtoaster.toml: ") for p in problems)


def test_bool_is_not_an_integer(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="workers"):
        load_settings_text(tmp_path, "[smtpd]\nworkers = true\n")


def test_wrong_listen_type(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match='list of "HOST:PORT"'):
        load_settings_text(tmp_path, '[listen]\nsmtp = "127.0.0.1:25"\n')


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing"):
        load_settings(tmp_path / "qtoaster.toml")


def test_syntax_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^qtoaster\.toml: "):
        load_settings_text(tmp_path, "[smtpd\n")


def test_settings_frozen(tmp_path: Path) -> None:
    settings = load_settings_text(tmp_path, "")
    with pytest.raises(AttributeError):
        settings.fsync = False  # type: ignore[misc]


def test_tls_auth_chkuser_settings(tmp_path: Path) -> None:
    settings = load_settings_text(
        tmp_path,
        '[listen]\nsmtp = []\nsubmission = ["127.0.0.1:587"]\nsmtps = ["[::1]:465"]\n'
        "[auth]\nallow_plaintext = true\nfailure_delay = 0.5\nmax_failures = 5\n"
        "max_in_flight = 20\n"
        '[submission]\nrestrict_sender = true\n[tls]\nmin_version = "TLSv1.3"\n'
        '[chkuser]\nmode = "always"\nerror_delay = 0\nerror_delay_increase = 0.1\n',
    )
    assert settings.listeners == (
        Listener("submission", "127.0.0.1", 587),
        Listener("smtps", "::1", 465),
    )
    assert settings.auth_allow_plaintext and settings.auth_failure_delay == 0.5
    assert settings.auth_max_failures == 5 and settings.submission_restrict_sender
    assert settings.auth_max_in_flight == 20
    assert settings.tls_min_version == "TLSv1.3"
    assert (settings.chkuser_mode, settings.chkuser_delay) == ("always", 0.0)


def test_tls_auth_chkuser_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings_text(
            tmp_path,
            '[auth]\nmax_failures = 0\nfailure_delay = -1\n[tls]\nmin_version = "SSLv3"\n'
            '[chkuser]\nmode = "sometimes"\n',
        )
    text = "\n".join(caught.value.problems)
    for key in ("max_failures", "failure_delay", "min_version", "mode"):
        assert key in text


def test_remote_and_dns_settings() -> None:
    s = settings_from_toml(
        {
            "dns": {"nameservers": ["127.0.0.1:5300", "::1"]},
            "remote": {"port": 2525},
            "queue": {"bounce_format": "dsn"},
        }
    )
    assert s.dns_nameservers == ("127.0.0.1:5300", "::1")
    assert s.remote_port == 2525 and s.bounce_format == "dsn"
    defaults = settings_from_toml({})
    assert (defaults.dns_nameservers, defaults.remote_port, defaults.bounce_format) == (
        (),
        25,
        "qsbmf",
    )


def test_transport_security_settings() -> None:
    defaults = settings_from_toml({})
    assert (defaults.remote_mta_sts, defaults.remote_dane) == ("on", "auto")
    assert not defaults.remote_resolver_validates and defaults.remote_ca_file is None
    assert defaults.remote_mta_sts_port == 443
    s = settings_from_toml(
        {
            "remote": {
                "mta_sts": "off",
                "dane": "on",
                "resolver_validates": True,
                "ca_file": "/etc/ca.pem",
                "mta_sts_port": 8443,
            }
        }
    )
    assert (s.remote_mta_sts, s.remote_dane, s.remote_resolver_validates) == ("off", "on", True)
    assert (s.remote_ca_file, s.remote_mta_sts_port) == ("/etc/ca.pem", 8443)


@pytest.mark.parametrize(
    ("table", "key", "value", "problem"),
    [
        ("dns", "nameservers", ["not-an-ip"], "IP:PORT"),
        ("dns", "nameservers", "127.0.0.1", "must be a list"),
        ("remote", "port", 0, "from 1 to 65535"),
        ("queue", "bounce_format", "mime", '"qsbmf" or "dsn"'),
        ("remote", "mta_sts", "yes", '"on" or "off"'),
        ("remote", "dane", True, "one of auto, on, off"),
        ("remote", "resolver_validates", "yes", "true or false"),
        ("remote", "ca_file", "", "non-empty string"),
        ("remote", "mta_sts_port", 70000, "from 1 to 65535"),
    ],
)
def test_remote_and_dns_problems(table: str, key: str, value: object, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        settings_from_toml({table: {key: value}})
    assert problem in str(err.value.problems)


def test_closed_choices_are_enum_members_equal_to_their_text() -> None:
    s = settings_from_toml(
        {
            "listen": {"smtp": [], "pop3s": ["127.0.0.1:995"]},
            "chkuser": {"mode": "off"},
            "queue": {"bounce_format": "dsn"},
            "tls": {"min_version": "TLSv1.3"},
            "log": {"level": "debug"},
            "clamd": {"address": "127.0.0.1:3310", "on_unavailable": "tempfail"},
        }
    )
    assert s.listeners[0].kind is ListenerKind.POP3S
    assert s.chkuser_mode is ChkuserMode.OFF
    assert s.bounce_format is BounceFormat.DSN
    assert s.tls_min_version is TlsVersion.TLSV1_3
    assert s.log_level is LogLevel.DEBUG
    assert s.clamd is not None and s.clamd.on_unavailable is OnUnavailable.TEMPFAIL
    # Consumers elsewhere compare with, format and look up by the plain strings.
    assert s.bounce_format == "dsn" and f"{s.chkuser_mode}" == "off"
    assert {"TLSv1.3": 1}[s.tls_min_version] == 1 and s.log_level.upper() == "DEBUG"
    defaults = settings_from_toml({})
    assert defaults.chkuser_mode is ChkuserMode.DOMAIN
    assert defaults.bounce_format is BounceFormat.QSBMF
    assert defaults.tls_min_version is TlsVersion.TLSV1_2
    assert defaults.log_level is LogLevel.INFO
    assert defaults.listeners[0].kind is ListenerKind.SMTP


@pytest.mark.parametrize(
    ("table", "key", "problem"),
    [
        ("chkuser", "mode", "must be one of domain, always, off"),
        ("log", "level", "must be one of debug, info, warning, error"),
        ("tls", "min_version", 'must be "TLSv1.2" or "TLSv1.3"'),
        ("queue", "bounce_format", 'must be "qsbmf" or "dsn"'),
    ],
)
def test_choice_problems_keep_their_wording(table: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        settings_from_toml({table: {key: 7}})
    assert err.value.problems == [f"qtoaster.toml: [{table}] {key}: {problem}, not 7"]


def test_parse_listen_refuses_an_unknown_kind() -> None:
    with pytest.raises(ValueError):
        parse_listen("nntp", "127.0.0.1:119")


def test_listen_metrics_port_alone_is_loopback() -> None:
    from qtoaster.config.settings import parse_metrics_listen

    assert str(parse_metrics_listen("9187")) == "127.0.0.1:9187"
    assert str(parse_metrics_listen(":9187")) == "127.0.0.1:9187"
    assert str(parse_metrics_listen("0.0.0.0:9187")) == "0.0.0.0:9187"  # written: as written
    assert str(parse_metrics_listen("[::1]:9187")) == "[::1]:9187"


def test_listen_metrics_setting() -> None:
    from qtoaster.config.settings import settings_from_toml

    assert settings_from_toml({}).metrics_listen is None
    settings = settings_from_toml({"listen": {"metrics": "9100"}})
    assert str(settings.metrics_listen) == "127.0.0.1:9100"
    with pytest.raises(ConfigError) as exc:
        settings_from_toml({"listen": {"metrics": "example.org:9100"}})
    assert "[listen] metrics" in exc.value.problems[0]


def test_send_delay_warning() -> None:
    """[send] delay_warning: Postfix's delay_warning_time, 4 hours unless set; 0 = off."""
    assert settings_from_toml({}).send_delay_warning == 14400.0
    assert settings_from_toml({"send": {"delay_warning": 0}}).send_delay_warning == 0.0
    assert settings_from_toml({"send": {"delay_warning": 1.5}}).send_delay_warning == 1.5
    with pytest.raises(ConfigError):
        settings_from_toml({"send": {"delay_warning": -1}})
