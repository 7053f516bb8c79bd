"""httpd/tokens.py: API tokens made once, kept only as SHA-256, in a 0600 file."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from qtoaster.httpd import tokens
from qtoaster.httpd.tokens import TokenError


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tokens.tokens_file(tmp_path)


def test_add_returns_a_token_stored_only_as_its_digest(path: Path) -> None:
    token = tokens.add(path, "ops", tokens.SITE)
    assert token.startswith(tokens.PREFIX) and len(token) == len(tokens.PREFIX) + 43
    text = path.read_text()
    assert token not in text and token[len(tokens.PREFIX) :] not in text
    [stored] = json.loads(text)
    assert stored["digest"] == hashlib.sha256(token.encode()).hexdigest()
    assert (stored["name"], stored["scope"]) == ("ops", "site")


def test_file_is_0600_and_replaced_whole(path: Path) -> None:
    old_umask = os.umask(0)
    try:
        tokens.add(path, "a", "site")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    tokens.add(path, "b", "example.test")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not path.with_name(path.name + ".new").exists()


def test_check_finds_the_token_with_its_scope(path: Path) -> None:
    site = tokens.add(path, "site", tokens.SITE)
    domain = tokens.add(path, "dom", "example.test")
    found = tokens.check(path, domain)
    assert found is not None and (found.name, found.scope) == ("dom", "example.test")
    found = tokens.check(path, site)
    assert found is not None and found.scope == "site"
    assert tokens.check(path, site + "x") is None
    assert tokens.check(path, "") is None
    assert tokens.check(tokens.tokens_file(path.parent / "none"), site) is None


def test_names_are_unique_and_delete_forgets(path: Path) -> None:
    token = tokens.add(path, "ops", "site")
    with pytest.raises(TokenError, match="exists already"):
        tokens.add(path, "ops", "example.test")
    tokens.delete(path, "ops")
    assert tokens.check(path, token) is None
    assert tokens.load(path) == []
    with pytest.raises(TokenError, match="no token named 'ops'"):
        tokens.delete(path, "ops")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "unreadable"),
        ('[{"name": "x"}]', "malformed"),
        ('[{"name": "x", "scope": "site", "digest": "d", "created": "soon"}]', "malformed"),
        ("[1]", "malformed"),
    ],
)
def test_bad_file_is_a_clear_error(path: Path, text: str, problem: str) -> None:
    path.write_text(text)
    with pytest.raises(TokenError, match=problem):
        tokens.check(path, "qt_anything")
    with pytest.raises(TokenError, match=problem):
        tokens.add(path, "new", "site")
    assert path.read_text() == text  # nothing was overwritten
