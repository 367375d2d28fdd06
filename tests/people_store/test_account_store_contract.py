"""The accounts port's contract (sync.people_store.ports), run against every adapter.

    embedded   sync.people_store.embedded on a real SQLite file (the server's writer);
               a second adapter on a second store of the same file stands for the CLI
    couchdb    sync.people_store.couchdb on a CouchDB-API server (pouchdb-server, or a
               real CouchDB with FIELDSYNC_TEST_COUCHDB_URL); a second client and
               adapter on the same database stands for a second fieldsync instance

Every adapter must read users and sessions fresh (a change through the second
adapter shows at once through the first), give a name out once, keep secrets as
today (scrypt hashes; sessions under the SHA-256 of the cookie), keep to the rules
of sync.people with the same errors, and survive concurrent writers.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from couchdb_server import couch_request
from couchdb_server import db_path as couch_path

from sync import accounts
from sync.config import Endpoint
from sync.errors import BadRequest, Conflict, NotFound
from sync.people_store.couchdb import CouchAccounts
from sync.people_store.embedded import EmbeddedAccounts
from sync.people_store.ports import AccountStore, Actor
from sync.scopes import Role, UserStatus
from sync.sessions import Lifetime
from sync.store.couchdb.client import CouchClient
from sync.store.schema import db_path
from sync.store.sqlite import SqliteStore

PASSWORD = "correct horse"
LIFETIME = Lifetime(3600.0, 600.0)
ADMIN = Actor("boss")


@dataclass
class Backend:
    kind: str
    store: AccountStore
    second: AccountStore  # another instance (CouchDB) or the CLI (the same file)
    raw: Callable[[], str]  # everything stored, as text (to look for secrets)
    closers: list[Callable[[], Any]] = field(default_factory=list)


@pytest.fixture(params=["embedded", "couchdb"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "embedded":
        stores = [SqliteStore(db_path(tmp_path)) for _ in range(2)]

        def dump() -> str:
            with closing(sqlite3.connect(db_path(tmp_path))) as conn:
                rows = [
                    conn.execute(f"SELECT * FROM {t}").fetchall() for t in ("users", "sessions")
                ]
            return repr(rows)

        yield Backend("embedded", EmbeddedAccounts(stores[0]), EmbeddedAccounts(stores[1]), dump)
        for store in stores:
            await store.close()
        return
    url: str = request.getfixturevalue("couchdb_url")
    prefix: str = request.getfixturevalue("couch_prefix")
    clients = [CouchClient(Endpoint.parse(url)) for _ in range(2)]
    first, second = (CouchAccounts.for_prefix(c, prefix) for c in clients)

    def dump_couch() -> str:
        where = couch_path(prefix + "accounts") + "/_all_docs?include_docs=true"
        return repr(couch_request(url, "GET", where)[1])

    yield Backend("couchdb", first, second, dump_couch)
    for client in clients:
        await client.close()


async def seeded(backend: Backend) -> AccountStore:
    """country > district > area-1, area-2; alice (chw, area-1), admin boss."""
    store = backend.store
    await store.add_place("country", None, "Country", ADMIN)
    await store.add_place("district", "country", None, ADMIN)
    await store.add_place("area-1", "district", None, ADMIN)
    await store.add_place("area-2", "district", None, ADMIN)
    await store.add_user("boss", Role.ADMIN, PASSWORD, [], [], ADMIN)
    await store.add_user("alice", Role.CHW, PASSWORD, ["area-1"], [], ADMIN)
    return store


async def status_of(store: AccountStore, name: str) -> UserStatus | None:
    user = (await store.lookup(name)).user
    return None if user is None else user.status


# -- users ----------------------------------------------------------------------------------
async def test_a_user_is_stored_with_a_scrypt_hash_and_read_back(backend: Backend) -> None:
    store = await seeded(backend)
    user = await backend.second.get_user("alice")
    assert user is not None
    assert (user.role, user.places, user.status) == (Role.CHW, ("area-1",), UserStatus.ACTIVE)
    assert user.password_hash.startswith("scrypt$")
    assert accounts.verify_password(PASSWORD, user.password_hash)
    assert PASSWORD not in backend.raw()
    assert [u.name for u in await store.list_users()] == ["alice", "boss"]
    assert (await store.lookup("alice")).user == user
    assert (await store.lookup("nobody")).user is None


async def test_a_name_is_given_out_once_even_by_two_writers_at_once(backend: Backend) -> None:
    await seeded(backend)
    tries = [
        adapter.add_user("carol", Role.CHW, PASSWORD, ["area-2"], [], ADMIN)
        for adapter in (backend.store, backend.second) * 5
    ]
    results = await asyncio.gather(*tries, return_exceptions=True)
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, Conflict) for r in results if isinstance(r, BaseException))


async def test_the_rules_and_their_errors_are_the_same_everywhere(backend: Backend) -> None:
    store = await seeded(backend)
    with pytest.raises(NotFound, match="place 'nowhere' does not exist"):
        await store.add_user("dan", Role.CHW, PASSWORD, ["nowhere"], [], ADMIN)
    with pytest.raises(BadRequest, match="at least 8"):
        await store.add_user("dan", Role.CHW, "short", ["area-1"], [], ADMIN)
    with pytest.raises(BadRequest, match="needs at least one"):
        await store.add_user("dan", Role.CHW, PASSWORD, [], [], ADMIN)
    with pytest.raises(BadRequest, match="invalid user name"):
        await store.add_user("_dan", Role.CHW, PASSWORD, ["area-1"], [], ADMIN)
    with pytest.raises(Conflict, match="last active admin"):
        await store.disable_user("boss", ADMIN)
    with pytest.raises(NotFound):
        await store.set_places("nobody", ["area-1"], [], ADMIN)
    with pytest.raises(Conflict, match="already exists"):
        await store.add_place("area-1", "district", None, ADMIN)
    with pytest.raises(NotFound, match="parent place"):
        await store.add_place("area-9", "nowhere", None, ADMIN)


async def test_disable_enable_and_remove_show_through_the_other_adapter(backend: Backend) -> None:
    store, other = await seeded(backend), backend.second
    await other.disable_user("alice", ADMIN)
    assert await status_of(store, "alice") is UserStatus.DISABLED
    with pytest.raises(Conflict, match="already disabled"):
        await store.disable_user("alice", ADMIN)
    await store.enable_user("alice", ADMIN)
    assert await status_of(other, "alice") is UserStatus.ACTIVE
    alice = await store.get_user("alice")
    assert alice is not None
    opened = await store.start_session(alice, 1000.0, LIFETIME)
    assert opened.session_id is not None
    removed = await other.remove_user("alice", ADMIN)
    assert removed.status is UserStatus.REMOVED
    found = await store.lookup(None, opened.session_id)
    assert found.session is None  # every session ended
    user = await store.get_user("alice")
    assert user is not None and user.status is UserStatus.REMOVED
    assert not accounts.verify_password(PASSWORD, user.password_hash)
    with pytest.raises(Conflict, match="removed"):
        await store.add_user("alice", Role.CHW, PASSWORD, ["area-1"], [], ADMIN)
    with pytest.raises(Conflict, match="removed"):
        await store.enable_user("alice", ADMIN)


async def test_concurrent_scope_changes_through_two_adapters_all_land(backend: Backend) -> None:
    store = await seeded(backend)
    choices = [["area-1"], ["area-2"], ["area-1", "area-2"]]
    changes = [
        (store if n % 2 else backend.second).set_places("alice", choices[n % 3], [], ADMIN)
        for n in range(20)
    ]
    results = await asyncio.gather(*changes)
    assert len(results) == 20
    final = await backend.second.get_user("alice")
    assert final is not None and list(final.places) in choices


# -- places ----------------------------------------------------------------------------------
async def test_every_change_of_the_tree_moves_its_version(backend: Backend) -> None:
    store, other = await seeded(backend), backend.second
    seen = [await store.places_version()]
    await other.add_place("area-3", "district", None, ADMIN)
    seen.append(await store.places_version())
    await other.edit_place("area-3", "Area three", False, None, ADMIN)
    seen.append(await store.places_version())
    await other.edit_place("area-3", None, True, "country", ADMIN)
    seen.append(await store.places_version())
    await other.retire_place("area-3", ADMIN)
    seen.append((await store.lookup("alice")).places_version)
    assert len(set(seen)) == len(seen), seen
    tree = await store.place_tree()
    place = tree.places["area-3"]
    assert (place.name, place.parent, place.retired is not None) == ("Area three", "country", True)


async def test_moves_that_loop_and_retiring_places_in_use_are_refused(backend: Backend) -> None:
    store = await seeded(backend)
    with pytest.raises(BadRequest, match="loop"):
        await store.edit_place("country", None, True, "area-1", ADMIN)
    with pytest.raises(Conflict, match="users assigned"):
        await store.retire_place("area-1", ADMIN)
    with pytest.raises(Conflict, match="active places below"):
        await store.retire_place("district", ADMIN)
    await store.retire_place("area-2", ADMIN)
    with pytest.raises(Conflict, match="retired"):
        await store.set_places("alice", ["area-2"], [], ADMIN)
    assert [p.id for p in await backend.second.list_places()] == [
        "area-1",
        "area-2",
        "country",
        "district",
    ]


# -- sessions ---------------------------------------------------------------------------------
async def test_a_session_is_stored_under_a_hash_and_ends_everywhere(backend: Backend) -> None:
    store, other = await seeded(backend), backend.second
    alice = await store.get_user("alice")
    assert alice is not None
    opened = await store.start_session(alice, 1000.0, LIFETIME)
    assert opened.session_id is not None and opened.user == alice
    raw = backend.raw()
    assert opened.session_id not in raw
    assert hashlib.sha256(opened.session_id.encode()).hexdigest() in raw
    found = await other.lookup(None, opened.session_id)
    assert found.user == alice and found.session is not None
    assert found.session.created == 1000.0
    await other.touch_session(opened.session_id, 1100.0)
    touched = (await store.lookup(None, opened.session_id)).session
    assert touched is not None and touched.last_seen == 1100.0
    assert await other.logout_user("alice", ADMIN) == 1
    assert (await store.lookup(None, opened.session_id)).session is None
    assert await store.end_session(opened.session_id) is None


async def test_a_disabled_user_gets_no_session(backend: Backend) -> None:
    store = await seeded(backend)
    alice = await store.get_user("alice")
    assert alice is not None
    await backend.second.disable_user("alice", ADMIN)
    opened = await store.start_session(alice, 1000.0, LIFETIME)
    assert opened.session_id is None
    assert opened.user is not None and opened.user.status is UserStatus.DISABLED


async def test_language_is_kept_per_user(backend: Backend) -> None:
    store = await seeded(backend)
    assert await store.language("alice") == "en"
    await backend.second.set_language("alice", "sw", ADMIN)
    assert await store.language("alice") == "sw"
    assert await store.language("nobody") == "en"
    with pytest.raises(BadRequest, match="language must be one of"):
        await store.set_language("alice", "fr", ADMIN)


# -- rules across documents, two writers at once ---------------------------------------------
# Each test starts the two changes together, one through each adapter (two instances on
# one CouchDB; the server and the CLI on one file), several rounds: whatever the order,
# the rule holds afterwards, and a refused change says why.
ROUNDS = 4


async def active_admins(store: AccountStore) -> list[str]:
    users = await store.list_users()
    return [u.name for u in users if u.role is Role.ADMIN and u.status is UserStatus.ACTIVE]


async def test_two_writers_cannot_take_out_the_last_two_admins(backend: Backend) -> None:
    store = await seeded(backend)
    for n in range(ROUNDS):
        pair = (f"admin-{n}a", f"admin-{n}b")
        for name in pair:
            await store.add_user(name, Role.ADMIN, PASSWORD, [], [], ADMIN)
        for name in set(await active_admins(store)) - set(pair):
            await store.disable_user(name, ADMIN)  # only the pair is left
        removing = n % 2 == 1  # disable in one round, remove in the next
        changes = [
            (adapter.remove_user if removing else adapter.disable_user)(name, ADMIN)
            for adapter, name in zip((store, backend.second), pair, strict=True)
        ]
        results = await asyncio.gather(*changes, return_exceptions=True)
        refused = [r for r in results if isinstance(r, BaseException)]
        assert len(refused) == 1, results
        assert isinstance(refused[0], Conflict) and "last active admin" in refused[0].reason
        assert await active_admins(backend.second) in ([pair[0]], [pair[1]])


async def assigning(store: AccountStore, n: int, place: str) -> None:
    """Give ``place`` to worker ``n``, a little later the higher ``n`` (the overlap varies)."""
    await asyncio.sleep(n * 0.002)  # shapes the overlap only; nothing is timed
    await store.set_places(f"worker-{n}", ["area-1", place], [], ADMIN)


async def test_two_writers_cannot_retire_a_place_while_assigning_it(backend: Backend) -> None:
    store = await seeded(backend)
    workers = range(8)
    for n in workers:
        await store.add_user(f"worker-{n}", Role.CHW, PASSWORD, ["area-1"], [], ADMIN)
    for round_ in range(ROUNDS):
        place = f"area-new-{round_}"
        await store.add_place(place, "district", None, ADMIN)
        results = await asyncio.gather(
            store.retire_place(place, ADMIN),
            *(assigning(backend.second, n, place) for n in workers),
            return_exceptions=True,
        )
        for refused in (r for r in results if isinstance(r, BaseException)):
            assert isinstance(refused, Conflict), results
        stored = await backend.second.get_place(place)
        retired = stored is not None and stored.retired is not None
        assigned = [
            u.name
            for u in await backend.second.list_users()
            if u.status is not UserStatus.REMOVED and place in u.places
        ]
        assert not (retired and assigned), (retired, assigned)
        assert retired or assigned  # one side won
        for n in workers:
            await store.set_places(f"worker-{n}", ["area-1"], [], ADMIN)


async def test_two_writers_cannot_move_two_places_into_a_loop(backend: Backend) -> None:
    store = await seeded(backend)
    for n in range(ROUNDS):
        x, y = f"x-{n}", f"y-{n}"
        await store.add_place(x, "district", None, ADMIN)
        await store.add_place(y, "district", None, ADMIN)
        results = await asyncio.gather(
            store.edit_place(x, None, True, y, ADMIN),
            backend.second.edit_place(y, None, True, x, ADMIN),
            return_exceptions=True,
        )
        refused = [r for r in results if isinstance(r, BaseException)]
        assert len(refused) == 1 and isinstance(refused[0], BadRequest), results
        assert "loop" in refused[0].reason
        tree = await backend.second.place_tree()
        for place in (x, y):
            assert "district" in tree.ancestors(place)  # still hangs from the root: no loop
