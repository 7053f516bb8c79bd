"""Directory.user_page (the web admin's and the API's users list): order, bounds, search
and its LIKE escapes, on SQLite and PostgreSQL (the ``directory_url`` fixture)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from qtoaster.core.home import Home
from qtoaster.directory.base import NewUser
from qtoaster.directory.store import Directory, DirectoryError, create_directory

LOCALS = ["carol", "alice", "bob", "a_b", "a%b", "axb", "dave", "Zed"]


@pytest.fixture
def directory(tmp_path: Path, directory_url: str | None) -> Iterator[Directory]:
    home = Home(tmp_path / "home")
    if directory_url is None:
        create_directory(home)
    else:
        home.root.mkdir()
    directory = Directory.open(home, directory_url)
    directory.add_domain("page.test")
    directory.add_domain("other.test")
    directory.add_users([NewUser(f"{local}@page.test", None) for local in LOCALS])
    directory.add_users([NewUser("alice@other.test", None)])
    directory.add_alias_domain("alias.test", "page.test")
    yield directory
    directory.close()


def locals_of(page: list[object]) -> list[str]:
    return [u.address.partition("@")[0] for u in page]  # type: ignore[attr-defined]


def test_pages_in_local_part_order_with_the_total(directory: Directory) -> None:
    everyone = sorted(local.lower() for local in LOCALS)
    total, first = directory.user_page("page.test", limit=4)
    assert total == len(LOCALS)
    assert locals_of(first) == everyone[:4]
    _, second = directory.user_page("page.test", offset=4, limit=4)
    _, last = directory.user_page("page.test", offset=8, limit=4)
    assert locals_of(first + second + last) == everyone


def test_bounds(directory: Directory) -> None:
    assert directory.user_page("page.test", offset=100) == (len(LOCALS), [])
    assert directory.user_page("page.test", limit=0) == (len(LOCALS), [])
    total, page = directory.user_page("page.test", offset=-5, limit=2)  # clamped to 0
    assert total == len(LOCALS) and len(page) == 2
    assert directory.user_page("PAGE.test", limit=1)[0] == len(LOCALS)
    with pytest.raises(DirectoryError, match="unknown domain"):
        directory.user_page("nowhere.test")


def test_alias_domain_lists_its_target(directory: Directory) -> None:
    total, page = directory.user_page("alias.test", search="alice")
    assert total == 1 and page[0].address == "alice@page.test"


def test_search_is_a_case_insensitive_substring_with_literal_wildcards(
    directory: Directory,
) -> None:
    assert locals_of(directory.user_page("page.test", search="A")[1]) == [
        "a%b",
        "a_b",
        "alice",
        "axb",
        "carol",
        "dave",
    ]
    assert locals_of(directory.user_page("page.test", search="a_b")[1]) == ["a_b"]
    assert locals_of(directory.user_page("page.test", search="a%b")[1]) == ["a%b"]
    assert directory.user_page("page.test", search="a\\") == (0, [])  # a backslash is literal
    assert directory.user_page("page.test", search="nobody") == (0, [])
    total, page = directory.user_page("page.test", search="a", offset=2, limit=2)
    assert total == 6 and locals_of(page) == ["alice", "axb"]
