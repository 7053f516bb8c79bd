"""The exception tree of qtoaster.

QtoasterError
├── ConfigError          a setting or control file is invalid (carries every problem)
├── TemporaryFailure     infrastructure trouble: disk, database, DNS -> 4xx, retry later
│   └── QueueError       the queue could not commit a message (qmail-queue exit code)
└── PermanentFailure     the request can never succeed -> 5xx / bounce
"""

from __future__ import annotations


class QtoasterError(Exception):
    pass


class ConfigError(QtoasterError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class TemporaryFailure(QtoasterError):
    pass


class PermanentFailure(QtoasterError):
    pass


class QueueError(TemporaryFailure):
    """Carries a qmail-queue exit code (qmail-queue(8)); see ``queue.exitcodes``."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message or f"qmail-queue exit {code}")
        self.code = code
