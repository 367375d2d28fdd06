"""The OpenAPI document (issue 12, point 5): valid 3.1, served, and the app's routes exactly.

The live check -- schemathesis against a running server -- is test_openapi_live.py.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from sync.app import create_app
from sync.config import Config
from sync.openapi import PATH, document_bytes

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})


def spec() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(document_bytes())
    return document


def test_the_document_is_valid_openapi_3_1() -> None:
    document = spec()
    assert document["openapi"].startswith("3.1.")
    validate(document, cls=OpenAPIV31SpecValidator)  # raises, saying where, when it is not


def api_routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, path template) of every /api route the app registers (HEAD is GET's twin)."""
    found = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if (path == "/api" or path.startswith("/api/")) and route.method in METHODS:
            found.add((route.method, path))
    return found


def spec_routes(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method.upper() in METHODS
    }


def test_every_api_route_is_in_the_document_and_nothing_else(config: Config) -> None:
    registered, described = api_routes(create_app(config)), spec_routes(spec())
    assert ("GET", "/api/v1/users") in registered  # the walk over the router finds routes
    assert registered - described == set(), "routes the OpenAPI document does not describe"
    assert described - registered == set(), "the OpenAPI document describes routes that are gone"


def test_every_operation_says_its_answers_and_error_bodies() -> None:
    document = spec()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            assert operation.get("operationId"), where
            assert "security" in operation, f"{where}: say who may call it ([] for anyone)"
            statuses = set(operation["responses"])
            assert any(s.startswith("2") for s in statuses), where
            assert "default" not in statuses, f"{where}: list each status, no catch-all"
            if operation["security"]:
                assert statuses & {"401", "403"}, f"{where}: credentials can be wrong"


def test_every_schema_a_document_names_exists() -> None:
    text, document = document_bytes().decode(), spec()
    for kind in ("schemas", "responses"):
        prefix = f'"#/components/{kind}/'
        named = {part.split('"', 1)[0] for part in text.split(prefix)[1:]}
        assert named <= set(document["components"][kind]), kind


async def test_the_server_serves_the_document_without_credentials(client: TestClient) -> None:
    response = await client.get(PATH)
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.read() == document_bytes()
