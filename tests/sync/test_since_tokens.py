"""Since-tokens: their grammar, and what the changes feed does with tokens it did not expect.

See :mod:`sync.replication.since` and DESIGN.md, "Per-worker document sets".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sync_fixtures import Api

from sync.cli import main
from sync.errors import BadRequest
from sync.replication.since import Backfill, SinceToken, parse, snapshot_hash

SNAP = "0123456789abcdef"
NEW = "fedcba9876543210"


@pytest.mark.parametrize(
    ("raw", "token"),
    [
        (0, SinceToken(0)),
        ("0", SinceToken(0)),
        (42, SinceToken(42)),
        (" 42 ", SinceToken(42)),
        (f"7-{SNAP}", SinceToken(7, SNAP)),
        (f"7-{SNAP}-{NEW}-3", SinceToken(7, SNAP, Backfill(NEW, 3))),
    ],
)
def test_parse(raw: Any, token: SinceToken) -> None:
    assert parse(raw) == token


@pytest.mark.parametrize(
    "raw",
    [-1, "-1", True, None, 1.5, [], "abc", "7-XYZ", "7-abc", f"7-{SNAP}-{NEW}", "1" * 19,
     f"7-{SNAP}-{NEW}-x", "3-g1AAAABTeJzLYWBgYMpgTmHgz8tPSTVxMDQy1zMAQsMckEQ"],
)  # fmt: skip
def test_parse_rejects(raw: Any) -> None:
    with pytest.raises(BadRequest):
        parse(raw)


@pytest.mark.parametrize(
    "token",
    [SinceToken(0), SinceToken(9), SinceToken(9, SNAP), SinceToken(9, SNAP, Backfill(NEW, 4))],
)
def test_render_round_trips(token: SinceToken) -> None:
    assert parse(token.render()) == token


def test_admin_tokens_are_plain_numbers() -> None:
    assert SinceToken(5).render() == 5


def test_snapshot_hash_ignores_order_and_separates_sets() -> None:
    assert snapshot_hash(frozenset({"a", "b"})) == snapshot_hash(frozenset({"b", "a"}))
    assert snapshot_hash(frozenset({"a", "b"})) != snapshot_hash(frozenset({"ab"}))
    assert len(snapshot_hash(frozenset())) == 16


# -- over HTTP ----------------------------------------------------------------------
async def feed(api: Api, user: str, **params: Any) -> dict[str, Any]:
    status, body = await api.call("GET", "/health/_changes", user, **params)
    assert status == 200, body
    return dict(body)


def ids(body: dict[str, Any]) -> list[str]:
    return sorted(row["id"] for row in body["results"])


def set_places(data_dir: Path, user: str, places: list[str]) -> None:
    """The command an admin runs beside the server: it answers once the change holds."""
    chosen = [arg for place in places for arg in ("--place", place)]
    assert main(["user", "set-places", user, *chosen, "--data-dir", str(data_dir)]) == 0


async def seed(api: Api) -> None:
    await api.bulk([{"_id": "a1", "place": "area-a1"}, {"_id": "b1", "place": "area-b1"}])


async def test_worker_tokens_name_their_scope(api: Api) -> None:
    await seed(api)
    admin, alice = (await feed(api, "admin"))["last_seq"], (await feed(api, "alice"))["last_seq"]
    assert isinstance(admin, int)
    assert isinstance(alice, str) and parse(alice).seq == admin and parse(alice).snapshot
    assert (await feed(api, "alice"))["last_seq"] == alice


async def test_db_info_update_seq_is_a_usable_since(api: Api) -> None:
    await seed(api)
    for user in ("alice", "admin"):
        info = (await api.call("GET", "/health/", user))[1]
        assert (await feed(api, user, since=info["update_seq"]))["results"] == []


@pytest.mark.parametrize("since", ["yesterday", "-3", "3-nothex", "3-g1AAAABTeJzLYWBg"])
async def test_unparseable_since_is_400(api: Api, since: str) -> None:
    status, body = await api.call("GET", "/health/_changes", "alice", since=since)
    assert status == 400 and body["error"] == "bad_request"


async def test_another_workers_token_grants_nothing(api: Api) -> None:
    await seed(api)
    token = (await feed(api, "alice"))["last_seq"]
    assert ids(await feed(api, "bob", since=token)) == ["b1"]


async def test_unknown_snapshot_backfills_the_whole_scope(api: Api) -> None:
    await seed(api)
    token = (await feed(api, "alice"))["last_seq"]
    forged = f"{parse(token).seq}-{'0' * 16}"
    assert ids(await feed(api, "alice", since=forged)) == ["a1"]


async def test_a_numeric_since_from_a_worker_skips_backfill(api: Api) -> None:
    await seed(api)
    await api.bulk([{"_id": "a1-late", "place": "area-a1"}])
    assert ids(await feed(api, "alice", since="2")) == ["a1-late"]


async def test_shrinking_scope_hides_and_growing_it_back_refills(api: Api, data_dir: Path) -> None:
    await seed(api)
    token = (await feed(api, "alice"))["last_seq"]
    set_places(data_dir, "alice", ["area-b1"])
    assert ids(await feed(api, "alice", since=token)) == ["b1"]
    assert ids(await feed(api, "alice", since=0)) == ["b1"]
    shrunk = (await feed(api, "alice", since=token))["last_seq"]
    set_places(data_dir, "alice", ["area-a1", "area-b1"])
    assert ids(await feed(api, "alice", since=shrunk)) == ["a1"]


async def test_backfill_skips_tombstones_but_the_tail_keeps_them(api: Api, data_dir: Path) -> None:
    [gone] = await api.bulk([{"_id": "gone", "place": "area-b1"}])
    await api.bulk([{"_id": "gone", "_rev": gone["rev"], "_deleted": True}])
    token = (await feed(api, "alice"))["last_seq"]
    set_places(data_dir, "alice", ["area-a1", "area-b1"])
    assert (await feed(api, "alice", since=token))["results"] == []


async def test_backfill_restarts_when_the_scope_changes_again(api: Api, data_dir: Path) -> None:
    await api.bulk([{"_id": f"b1-{i}", "place": "area-b1"} for i in range(3)])
    await api.bulk([{"_id": "a2", "place": "area-a2"}])
    token = (await feed(api, "alice"))["last_seq"]
    set_places(data_dir, "alice", ["area-a1", "area-b1"])
    mid = (await feed(api, "alice", since=token, limit=1))["last_seq"]
    set_places(data_dir, "alice", ["area-a1", "area-b1", "area-a2"])
    rest = await feed(api, "alice", since=mid)
    assert {"a2", "b1-1", "b1-2"} <= set(ids(rest))


async def test_limit_zero_acts_like_one(api: Api) -> None:
    await seed(api)
    body = await feed(api, "admin", limit="0")
    assert len(body["results"]) == 1 and body["pending"] == 1
