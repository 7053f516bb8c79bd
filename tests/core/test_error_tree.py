"""Every exception class qtoaster defines descends from QtoasterError (core/errors.py).

Walks src/qtoaster, imports every module and inspects the classes each one defines.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import qtoaster
from qtoaster.core import errors
from qtoaster.core.errors import QtoasterError

# Classes that may stay outside the tree, each with its reason.  Empty today: add an
# entry only with a reason a reader accepts (e.g. a class a third-party API requires).
ALLOWED_OUTSIDE: dict[str, str] = {}

# __main__ runs the CLI when imported.
SKIP_MODULES = {"qtoaster.__main__"}


def _exception_classes() -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    for info in pkgutil.walk_packages(qtoaster.__path__, "qtoaster."):
        if info.name in SKIP_MODULES:
            continue
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == module.__name__
            ):
                found.append(obj)
    return found


def test_the_walk_finds_the_known_leaves() -> None:
    names = {cls.__qualname__ for cls in _exception_classes()}
    # A walk that imports nothing would pass the test below vacuously.
    assert {"TlsError", "ScannerUnavailable", "BadQueueFile", "DnsFailure"} <= names


def test_every_exception_descends_from_qtoaster_error() -> None:
    outside = [
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in _exception_classes()
        if not issubclass(cls, QtoasterError)
        and f"{cls.__module__}.{cls.__qualname__}" not in ALLOWED_OUTSIDE
    ]
    assert outside == []


@pytest.mark.parametrize(
    ("module", "name", "builtin"),
    [
        ("qtoaster.core.address", "AddressSyntaxError", ValueError),
        ("qtoaster.importer.mysqldump", "DumpError", ValueError),
        ("qtoaster.maildir.quota", "QuotaSyntaxError", ValueError),
        ("qtoaster.policy.ere", "EreError", ValueError),
        ("qtoaster.protocols.smtp.dataframe", "BareLineFeed", ValueError),
        ("qtoaster.protocols.smtp.bodyencode", "PartialLineError", ValueError),
        ("qtoaster.protocols.sasl", "SaslStateError", RuntimeError),
        ("qtoaster.protocols.smtp.client", "ClientStateError", RuntimeError),
        ("qtoaster.queue.store", "NoSuchMessage", LookupError),
    ],
)
def test_re_parented_classes_keep_their_builtin_base(
    module: str, name: str, builtin: type[Exception]
) -> None:
    # Code catches these as ValueError/RuntimeError/LookupError; the tree must not change that.
    assert issubclass(getattr(importlib.import_module(module), name), builtin)


def test_the_docstring_draws_every_node() -> None:
    doc = errors.__doc__ or ""
    nodes = [
        name
        for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, QtoasterError)
    ]
    assert [name for name in nodes if name not in doc] == []
