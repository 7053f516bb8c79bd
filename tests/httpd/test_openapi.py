"""httpd/openapi.py: the document lists every route of api.TABLE and the public ones,
with paging parameters on the lists and a request body on the writes."""

from __future__ import annotations

from qtoaster.httpd.api import API, PUBLIC, TABLE
from qtoaster.httpd.openapi import document


def test_every_route_is_documented() -> None:
    paths = document()["paths"]
    routes = [(p, m) for p, m, *_ in TABLE] + [(p, m) for p, m, _ in PUBLIC]
    for path, method in routes:
        assert method.lower() in paths[API + path], (path, method)
    assert sum(len(ops) for ops in paths.values()) == len(routes)


def test_parameters_and_bodies() -> None:
    paths = document()["paths"]
    users = paths[API + "/domains/{domain}/users"]
    assert {p["name"] for p in users["get"]["parameters"]} == {
        "domain",
        "offset",
        "limit",
        "search",
    }
    batch = paths[API + "/domains/{domain}/users:batch"]["post"]
    assert [p["name"] for p in batch["parameters"]] == ["domain"]
    assert "requestBody" in batch and "201" in batch["responses"]
    assert paths[API + "/login"]["post"]["security"] == []
