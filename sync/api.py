"""The admin JSON API under ``/api/v1``: places and users, as the CLI offers them.

GET  /api/v1/places                 list
POST /api/v1/places                 {"id", "parent"?, "name"?}
GET  /api/v1/places/{id}
PATCH /api/v1/places/{id}           {"name"?, "parent"?}: rename and/or move (parent null: a root)
POST /api/v1/places/{id}/retire     no body: it takes no more documents or people
GET  /api/v1/users                  list (never password hashes)
POST /api/v1/users                  {"name", "role", "password", "places"?, "read_places"?}
GET  /api/v1/users/{name}
DELETE /api/v1/users/{name}         remove for good (the row and name are kept, see sync.people)
POST /api/v1/users/{name}/disable   refused everywhere until enabled
POST /api/v1/users/{name}/enable
PUT  /api/v1/users/{name}/places    {"places", "read_places"}
DELETE /api/v1/users/{name}/sessions  end every session of the user -> {"ok", "ended"}

A place is ``{"id", "parent", "name", "retired"}`` (``retired``: when, or null); a
user is ``{"name", "role", "places", "read_places", "status"}`` (``status``: active,
disabled or removed).  The changes of :mod:`sync.people` answer the changed place
or user, are audited with what they were before, and wake every open long poll so
it checks its caller again at once.
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from sync import accounts
from sync.appkeys import ACCOUNTS
from sync.errors import BadRequest, Forbidden, NotFound
from sync.http import json_response, read_object
from sync.people_store.ports import AccountStore, Actor, details_of_scope
from sync.replication.routes import REPLICATION
from sync.scopes import Place, User

log = structlog.get_logger("fieldsync.accounts")


def place_json(place: Place) -> dict[str, Any]:
    return {"id": place.id, "parent": place.parent, "name": place.name, "retired": place.retired}


def user_json(user: User) -> dict[str, Any]:
    return {
        "name": user.name,
        "role": user.role.value,
        "places": list(user.places),
        "read_places": list(user.read_places),
        "status": user.status.value,
    }


async def _require_admin(request: web.Request) -> Actor:
    """The admin (name, device) who asks: the audit trail names them."""
    caller = await request.app[REPLICATION].auth.require(request)
    if not caller.is_admin:
        raise Forbidden("Only admins manage places and users.")
    return Actor(caller.name, caller.device)


def _people(request: web.Request) -> AccountStore:
    return request.app[ACCOUNTS]


def scope_detail(places: list[str], read_places: list[str]) -> str:
    return details_of_scope(places, read_places)


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
    places = await _people(request).list_places()
    return json_response([place_json(p) for p in places])


async def add_place(request: web.Request) -> web.Response:
    who = await _require_admin(request)
    body = await read_object(request)
    place_id, parent = _string(body, "id"), _string(body, "parent", required=False)
    name = _string(body, "name", required=False)
    assert place_id is not None
    place = await _people(request).add_place(place_id, parent, name, who)
    return json_response(place_json(place), status=201)


async def list_users(request: web.Request) -> web.Response:
    await _require_admin(request)
    users = await _people(request).list_users()
    return json_response([user_json(u) for u in users])


async def get_user(request: web.Request) -> web.Response:
    await _require_admin(request)
    name = request.match_info["name"]
    user = await _people(request).get_user(name)
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
    user = await _people(request).add_user(name, role, password, places, read_places, who)
    return json_response(user_json(user), status=201)


async def set_places(request: web.Request) -> web.Response:
    who = await _require_admin(request)
    body = await read_object(request)
    name = request.match_info["name"]
    places, read_places = _strings(body, "places"), _strings(body, "read_places")
    user = await _people(request).set_places(name, places, read_places, who)
    _wake(request)
    log.info("scope_changed", user=name, places=sorted(places), read_places=sorted(read_places))
    return json_response(user_json(user))


async def end_sessions(request: web.Request) -> web.Response:
    """Log a user out everywhere (a lost phone, a leaver): their cookies open nothing after."""
    who = await _require_admin(request)
    ended = await _people(request).logout_user(request.match_info["name"], who)
    return json_response({"ok": True, "ended": ended})


# -- people and places change (sync.people) ----------------------------------------------
def _wake(request: web.Request) -> None:
    """Every open long poll wakes to check its caller again (scope, status) at once."""
    request.app[REPLICATION].parts.notifier.wake_all()


async def _user_changed(request: web.Request, who: Actor, user: User, event: str) -> web.Response:
    _wake(request)
    log.info(event, user=user.name, status=user.status.value, by=who.name)
    return json_response(user_json(user))


async def disable_user(request: web.Request) -> web.Response:
    who = await _require_admin(request)
    user = await _people(request).disable_user(request.match_info["name"], who)
    return await _user_changed(request, who, user, "user_disabled")


async def enable_user(request: web.Request) -> web.Response:
    who = await _require_admin(request)
    user = await _people(request).enable_user(request.match_info["name"], who)
    return await _user_changed(request, who, user, "user_enabled")


async def remove_user(request: web.Request) -> web.Response:
    who = await _require_admin(request)
    user = await _people(request).remove_user(request.match_info["name"], who)
    return await _user_changed(request, who, user, "user_removed")


async def get_place(request: web.Request) -> web.Response:
    await _require_admin(request)
    place_id = request.match_info["id"]
    place = await _people(request).get_place(place_id)
    if place is None:
        raise NotFound(f"place {place_id!r} does not exist")
    return json_response(place_json(place))


PLACE_EDITS = ("name", "parent")


def _place_edits(body: dict[str, Any]) -> tuple[str | None, bool, str | None]:
    """(new name or None, whether to move, new parent or None for a root) from a PATCH body."""
    unknown = sorted(set(body) - set(PLACE_EDITS))
    if unknown:
        raise BadRequest(
            f"cannot change {', '.join(unknown)} of a place: give name and/or parent "
            "(a place's id never changes)"
        )
    if not body:
        raise BadRequest('give "name" (a new name) and/or "parent" (a place id, or null)')
    name = body.get("name")
    if "name" in body and not isinstance(name, str):
        raise BadRequest("name must be a string: the place's new name")
    parent = body.get("parent")
    if parent is not None and (not isinstance(parent, str) or not parent):
        raise BadRequest("parent must be a place id, or null to make the place a root")
    return name, "parent" in body, parent


async def edit_place(request: web.Request) -> web.Response:
    """Rename and/or move a place: one audit entry per change."""
    who = await _require_admin(request)
    place_id = request.match_info["id"]
    name, move, parent = _place_edits(await read_object(request))
    place = await _people(request).edit_place(place_id, name, move, parent, who)
    _wake(request)
    if move:
        log.info("place_moved", place=place_id, parent=parent, by=who.name)
    if name is not None:
        log.info("place_renamed", place=place_id, by=who.name)
    return json_response(place_json(place))


async def retire_place(request: web.Request) -> web.Response:
    who = await _require_admin(request)
    place_id = request.match_info["id"]
    place = await _people(request).retire_place(place_id, who)
    _wake(request)
    log.info("place_retired", place=place_id, by=who.name)
    return json_response(place_json(place))


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/places", list_places)
    app.router.add_post("/api/v1/places", add_place)
    app.router.add_get("/api/v1/places/{id}", get_place)
    app.router.add_patch("/api/v1/places/{id}", edit_place)
    app.router.add_post("/api/v1/places/{id}/retire", retire_place)
    app.router.add_get("/api/v1/users", list_users)
    app.router.add_post("/api/v1/users", add_user)
    app.router.add_get("/api/v1/users/{name}", get_user)
    app.router.add_delete("/api/v1/users/{name}", remove_user)
    app.router.add_post("/api/v1/users/{name}/disable", disable_user)
    app.router.add_post("/api/v1/users/{name}/enable", enable_user)
    app.router.add_put("/api/v1/users/{name}/places", set_places)
    app.router.add_delete("/api/v1/users/{name}/sessions", end_sessions)
