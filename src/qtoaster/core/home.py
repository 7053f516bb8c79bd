"""Where everything lives under a qtoaster home (DESIGN.md section 1).

Pure path arithmetic: nothing here touches the disk.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = "qtoaster-home"


@dataclass(frozen=True, slots=True)
class Home:
    root: Path

    @classmethod
    def resolve(cls, home: str | os.PathLike[str] | None) -> Home:
        """``--home``, else ``$QTOASTER_HOME``, else ``./qtoaster-home``."""
        chosen = home or os.environ.get("QTOASTER_HOME") or DEFAULT_HOME
        return cls(Path(chosen).absolute())

    @property
    def settings_file(self) -> Path:
        return self.root / "qtoaster.toml"

    @property
    def control(self) -> Path:
        return self.root / "control"

    @property
    def tcp_smtp(self) -> Path:
        return self.root / "tcp.smtp"

    @property
    def queue(self) -> Path:
        return self.root / "queue"

    @property
    def domains(self) -> Path:
        return self.root / "domains"

    @property
    def database(self) -> Path:
        return self.root / "users.sqlite3"

    @property
    def secrets_key(self) -> Path:
        """The key that seals CRAM-MD5/APOP secrets (docs/directory.md); 0600, kept out of
        the database so a copy of the database alone reveals nothing."""
        return self.root / "secrets.key"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    def maildir(self, domain: str, user: str) -> Path:
        return self.domains / domain.lower() / user.lower() / "Maildir"
