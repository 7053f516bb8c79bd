"""Load everything a role needs from a home, once: settings, control files, tcp.smtp.

Invariants: `load_config` returns a complete `Config` or raises ONE ConfigError that
lists the problems of all three sources together, so an operator fixes everything in
one round (``qtoaster config check``).  Nothing here is consulted while serving: a
reload calls `load_config` again and swaps the whole object.
"""

from __future__ import annotations

from dataclasses import dataclass

from qtoaster.config.control import Controls, load_controls
from qtoaster.config.settings import Settings, load_settings
from qtoaster.config.tcprules import TcpRules, load_tcprules
from qtoaster.core.errors import ConfigError
from qtoaster.core.home import Home


@dataclass(frozen=True, slots=True)
class Config:
    home: Home
    settings: Settings
    controls: Controls
    tcp_smtp: TcpRules


def load_config(home: Home) -> Config:
    """Read qtoaster.toml, control/ and tcp.smtp; ConfigError listing every problem."""
    if not home.root.is_dir():
        raise ConfigError([f"{home.root}: no qtoaster home here (create one with qtoaster init)"])
    problems: list[str] = []
    settings = controls = tcp_smtp = None
    try:
        settings = load_settings(home.settings_file)
    except ConfigError as exc:
        problems.extend(exc.problems)
    try:
        controls = load_controls(home.control)
    except ConfigError as exc:
        problems.extend(exc.problems)
    try:
        tcp_smtp = load_tcprules(home.tcp_smtp)
    except ConfigError as exc:
        problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    assert settings is not None and controls is not None and tcp_smtp is not None
    return Config(home=home, settings=settings, controls=controls, tcp_smtp=tcp_smtp)
