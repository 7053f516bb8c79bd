"""The whole-home configuration check: what ``config check`` prints and ``run`` logs at start.

It lives above the roles because it asks each of them what it would refuse: qregex
patterns that never match, smtproutes lines, signatures, client TLS files.

Invariant: it never raises for a bad configuration; every problem is one line of text.
"""

from __future__ import annotations

from qtoaster.config.loader import load_config
from qtoaster.core.errors import ConfigError
from qtoaster.core.home import Home


def check_config(home: Home) -> list[str]:
    """Every configuration problem of *home* as one line of text; [] if all is well.

    Beyond what `load_config` refuses, it reports what the server tolerates but an
    operator would want to know: qregex patterns that never match, a bad smtproutes
    line (the previous routes stay in force), unusable signatures or client TLS files.
    """
    try:
        load_config(home)
    except ConfigError as exc:
        return list(exc.problems)
    return _tolerated_problems(home)


def _tolerated_problems(home: Home) -> list[str]:
    from qtoaster.config.control import read_list
    from qtoaster.policy.checks.qregex import problems as qregex_problems
    from qtoaster.policy.signatures import Signatures
    from qtoaster.remote.routes import SmtpRoutes
    from qtoaster.tls.client import ClientTls

    found = list(qregex_problems(home.control))
    for check in (
        lambda: Signatures.load(home.control),
        lambda: SmtpRoutes.parse(read_list(home.control / "smtproutes")),
        lambda: ClientTls(home.control),
    ):
        try:
            check()
        except ConfigError as exc:
            found.extend(exc.problems)
    return found
