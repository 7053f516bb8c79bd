"""Makes ``qtoaster.protocols.imap.server`` the stand-in engine of this directory when the
real one is missing (it is built on another branch of issue 15). Put on PYTHONPATH by the
imapd tests for the server processes they start; the finder is asked last, so the real
engine wins as soon as it exists. Delete this directory once the engine is merged."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

_NAME = "qtoaster.protocols.imap.server"
_FILE = Path(__file__).with_name("imap_engine_standin.py")


class _StandIn(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):  # type: ignore[no-untyped-def]
        if name != _NAME:
            return None
        return importlib.util.spec_from_file_location(name, _FILE)


sys.meta_path.append(_StandIn())
