"""The OpenAPI 3.1 document of /api/v1, made from the API's one route table (api.TABLE),
so that no route exists without its entry (tests/httpd/test_openapi.py checks the served
document against the app's routes)."""

from __future__ import annotations

import re
from typing import Any

ERRORS = {
    "400": "malformed request",
    "401": "no login, or a bad token",
    "403": "outside the login's scope, or the CSRF token missing",
    "404": "no such domain, user, alias, message or DKIM key",
    "409": "exists already, or not in the state asked for",
    "422": "a value the directory or the DKIM key store refuses",
}


def _operation(method: str, path: str, summary: str, public: bool) -> dict[str, Any]:
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", path)
    ]
    if method == "GET" and path.endswith(("/domains", "/users")):
        params += [
            {"name": name, "in": "query", "schema": {"type": kind}}
            for name, kind in (("offset", "integer"), ("limit", "integer"), ("search", "string"))
        ]
    responses: dict[str, Any] = {"200": {"description": "the result, as JSON"}}
    if method == "POST":
        responses["201"] = {"description": "created"}
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    responses |= {code: {"description": text, "content": error} for code, text in ERRORS.items()}
    operation: dict[str, Any] = {"summary": summary, "parameters": params, "responses": responses}
    if method in ("POST", "PUT", "PATCH"):
        operation["requestBody"] = {"content": {"application/json": {"schema": {"type": "object"}}}}
    if public:
        operation["security"] = []
    return operation


def document() -> dict[str, Any]:
    from qtoaster.httpd.api import API, PUBLIC, TABLE

    paths: dict[str, dict[str, Any]] = {}
    for path, method, _, summary in TABLE:
        paths.setdefault(API + path, {})[method.lower()] = _operation(method, path, summary, False)
    for path, method, summary in PUBLIC:
        paths.setdefault(API + path, {})[method.lower()] = _operation(method, path, summary, True)
    return {
        "openapi": "3.1.0",
        "info": {"title": "qtoaster administration API", "version": "1"},
        "paths": paths,
        "security": [{"bearer": []}, {"session": []}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "qtoaster_session"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}},
                    "required": ["error"],
                }
            },
        },
    }
