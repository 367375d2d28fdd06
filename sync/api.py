"""The admin JSON API under ``/api/v1``: places and users, as the CLI offers them.

GET  /api/v1/places                 list
POST /api/v1/places                 {"id", "parent"?, "name"?}
GET  /api/v1/users                  list (never password hashes)
POST /api/v1/users                  {"name", "role", "password", "places"?, "read_places"?}
GET  /api/v1/users/{name}
PUT  /api/v1/users/{name}/places    {"places", "read_places"}
DELETE /api/v1/users/{name}/sessions  end every session of the user -> {"ok", "ended"}
"""

from __future__ import annotations

import sqlite3
from typing import Any

import structlog
from aiohttp import web

from sync import accounts, sessions
from sync.appkeys import STORE
from sync.audit import audited
from sync.errors import BadRequest, Forbidden, NotFound
from sync.http import json_response, read_object
from sync.replication.routes import REPLICATION
from sync.scopes import Place, User

log = structlog.get_logger("fieldsync.accounts")


def place_json(place: Place) -> dict[str, Any]:
    return {"id": place.id, "parent": place.parent, "name": place.name}


def user_json(user: User) -> dict[str, Any]:
    return {
        "name": user.name,
        "role": user.role.value,
        "places": list(user.places),
        "read_places": list(user.read_places),
    }


async def _require_admin(request: web.Request) -> tuple[str, str | None]:
    """The admin (name, device) who asks: the audit trail names them."""
    caller = await request.app[REPLICATION].auth.require(request)
    if not caller.is_admin:
        raise Forbidden("Only admins manage places and users.")
    return caller.name, caller.device


def scope_detail(places: list[str], read_places: list[str]) -> str:
    return f"places {','.join(places) or '-'}, read {','.join(read_places) or '-'}"


def _strings(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"{key} must be an array of place ids")
    return value


def _string(body: dict[str, Any], key: str, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{key} is required and must be a string")
    return value


async def list_places(request: web.Request) -> web.Response:
    await _require_admin(request)
    places = await request.app[STORE].read(accounts.list_places)
    return json_response([place_json(p) for p in places])


async def add_place(request: web.Request) -> web.Response:
    who = await _require_admin(request)
    body = await read_object(request)
    place_id, parent = _string(body, "id"), _string(body, "parent", required=False)
    name = _string(body, "name", required=False)
    assert place_id is not None

    def run(conn: sqlite3.Connection) -> Place:
        return accounts.add_place(conn, place_id, parent, name)

    detail = f"place {place_id}, parent {parent or '-'}"
    place = await request.app[STORE].write_tx(audited(request, who, "place_add", detail, run))
    return json_response(place_json(place), status=201)


async def list_users(request: web.Request) -> web.Response:
    await _require_admin(request)
    users = await request.app[STORE].read(accounts.list_users)
    return json_response([user_json(u) for u in users])


async def get_user(request: web.Request) -> web.Response:
    await _require_admin(request)
    name = request.match_info["name"]
    user = await request.app[STORE].read(lambda c: accounts.get_user(c, name))
    if user is None:
        raise NotFound(f"user {name!r} does not exist")
    return json_response(user_json(user))


async def add_user(request: web.Request) -> web.Response:
    who = await _require_admin(request)
    body = await read_object(request)
    name, password = _string(body, "name"), _string(body, "password")
    role = accounts.parse_role(_string(body, "role") or "")
    places, read_places = _strings(body, "places"), _strings(body, "read_places")
    assert name is not None and password is not None

    def run(conn: sqlite3.Connection) -> User:
        return accounts.add_user(conn, name, role, password, places, read_places)

    detail = f"user {name}: role {role.value}, {scope_detail(places, read_places)}"
    user = await request.app[STORE].write_tx(audited(request, who, "user_add", detail, run))
    return json_response(user_json(user), status=201)


async def set_places(request: web.Request) -> web.Response:
    who = await _require_admin(request)
    body = await read_object(request)
    name = request.match_info["name"]
    places, read_places = _strings(body, "places"), _strings(body, "read_places")

    def run(conn: sqlite3.Connection) -> User:
        return accounts.set_places(conn, name, places, read_places)

    detail = f"user {name}: {scope_detail(places, read_places)}"
    user = await request.app[STORE].write_tx(audited(request, who, "user_places", detail, run))
    log.info("scope_changed", user=name, places=sorted(places), read_places=sorted(read_places))
    return json_response(user_json(user))


async def end_sessions(request: web.Request) -> web.Response:
    """Log a user out everywhere (a lost phone, a leaver): their cookies open nothing after."""
    who = await _require_admin(request)
    name = request.match_info["name"]

    def run(conn: sqlite3.Connection) -> int:
        return sessions.logout_user(conn, name)

    detail = f"user {name}: every session ended"
    ended = await request.app[STORE].write_tx(audited(request, who, "user_logout", detail, run))
    return json_response({"ok": True, "ended": ended})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/places", list_places)
    app.router.add_post("/api/v1/places", add_place)
    app.router.add_get("/api/v1/users", list_users)
    app.router.add_post("/api/v1/users", add_user)
    app.router.add_get("/api/v1/users/{name}", get_user)
    app.router.add_put("/api/v1/users/{name}/places", set_places)
    app.router.add_delete("/api/v1/users/{name}/sessions", end_sessions)
