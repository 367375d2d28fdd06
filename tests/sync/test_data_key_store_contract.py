"""The data-key port's contract (sync.datakeys.ports), run against every adapter.

    memory     sync.datakeys.memory, a dict
    embedded   sync.datakeys.embedded on a real SQLite file; a second adapter on the
               same file stands for a second writer
    couchdb    sync.datakeys.couchdb on a CouchDB-API server (pouchdb-server, or a real
               CouchDB with FIELDSYNC_TEST_COUCHDB_URL); a second client and adapter on
               the same database stands for a second fieldsync instance

Every adapter must keep one key per ``place:version`` (the first stored wins, for
every writer, even 40 at once), keep places apart, and never hold a data key in
the clear: only what the master key wrapped.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from couchdb_server import couch_request
from couchdb_server import db_path as couch_path

from sync.config import Endpoint
from sync.datakeys.couchdb import CouchDataKeys, doc_id
from sync.datakeys.embedded import EmbeddedDataKeys
from sync.datakeys.memory import MemoryDataKeys
from sync.datakeys.ports import DataKeyStore
from sync.keys import KeyRing, LocalMasterKey, seal, unseal
from sync.store.couchdb.client import CouchClient, path
from sync.store.schema import connections, db_path, initialise

ADAPTERS = ["memory", "embedded", "couchdb"]
NOW = "2026-01-01T00:00:00+00:00"


@dataclass
class Backend:
    kind: str
    store: DataKeyStore
    second: DataKeyStore  # another writer on the same storage (the same object for memory)
    closers: list[Callable[[], Any]] = field(default_factory=list)
    url: str = ""
    db: str = ""


@pytest.fixture(params=ADAPTERS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "memory":
        memory = MemoryDataKeys()
        yield Backend("memory", memory, memory)
        return
    if request.param == "embedded":
        initialise(db_path(tmp_path))
        first, second = (EmbeddedDataKeys(connections(db_path(tmp_path))) for _ in range(2))
        yield Backend("embedded", first, second)
        return
    url: str = request.getfixturevalue("couchdb_url")
    prefix: str = request.getfixturevalue("couch_prefix")
    clients = [CouchClient(Endpoint.parse(url)) for _ in range(2)]
    one, two = (CouchDataKeys.for_prefix(c, prefix) for c in clients)
    yield Backend("couchdb", one, two, url=url, db=prefix + "keys")
    for client in clients:
        await client.close()


async def call(fn: Callable[..., Any], *args: Any) -> Any:
    """The port is synchronous and used from worker threads, as the key ring uses it."""
    return await asyncio.to_thread(fn, *args)


async def test_a_new_place_has_no_key_and_the_first_stored_is_kept(backend: Backend) -> None:
    store = backend.store
    assert await call(store.latest, "area-1") is None
    assert await call(store.wrapped, "area-1", 1) is None
    first, other = secrets.token_bytes(60), secrets.token_bytes(60)
    assert await call(store.add, "area-1", 1, first, NOW) == first
    assert await call(store.add, "area-1", 1, other, NOW) == first  # never replaced
    assert await call(backend.second.add, "area-1", 1, other, NOW) == first
    assert await call(store.latest, "area-1") == 1
    assert await call(backend.second.wrapped, "area-1", 1) == first
    assert await call(store.add, "area-1", 2, other, NOW) == other
    assert await call(backend.second.latest, "area-1") == 2


async def test_places_are_kept_apart_even_when_one_id_starts_another(backend: Backend) -> None:
    store = backend.store
    keys = {place: secrets.token_bytes(60) for place in ("a", "a:b", "a:1", "")}
    for place, wrapped in keys.items():
        await call(store.add, place, 1, wrapped, NOW)
    await call(store.add, "a:b", 7, secrets.token_bytes(60), NOW)
    assert await call(store.latest, "a") == 1
    assert await call(store.latest, "a:b") == 7
    assert await call(store.latest, "") == 1
    for place, wrapped in keys.items():
        assert await call(store.wrapped, place, 1) == wrapped
    listed = await call(store.all)
    assert [(k.place, k.version) for k in listed] == [
        ("", 1), ("a", 1), ("a:1", 1), ("a:b", 1), ("a:b", 7)
    ]  # fmt: skip
    assert [k.wrapped for k in listed[:4]] == [keys[p] for p in ("", "a", "a:1", "a:b")]


async def test_forty_writers_creating_one_first_key_all_get_the_same(backend: Backend) -> None:
    offered = [secrets.token_bytes(60) for _ in range(40)]
    stores = [backend.store, backend.second]
    answers = await asyncio.gather(
        *(call(stores[n % 2].add, "area-9", 1, w, NOW) for n, w in enumerate(offered))
    )
    assert len(set(answers)) == 1
    assert answers[0] in offered
    assert await call(backend.second.wrapped, "area-9", 1) == answers[0]
    assert await call(backend.store.wrapped, "area-9", 1) == answers[0]


@pytest.mark.parametrize("version", [0, -1, True])
async def test_a_version_below_one_is_refused(backend: Backend, version: Any) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        await call(backend.store.add, "area-1", version, b"x" * 60, NOW)


async def test_two_key_rings_on_one_storage_seal_and_open_each_others_data(
    backend: Backend,
) -> None:
    """Two instances (one master key) making a place's first key at once end with ONE key."""
    master = LocalMasterKey(secrets.token_bytes(32))
    rings = [KeyRing(master, backend.store), KeyRing(master, backend.second)]
    refs = await asyncio.gather(*(call(lambda r=r: r.current("area-5")[0]) for r in rings))
    assert refs == ["area-5:1", "area-5:1"]
    _, key_a = await call(rings[0].current, "area-5")
    sealed = seal(key_a, b"aad", b"a body")
    later = KeyRing(master, backend.second)  # a third instance, started afterwards
    key_b = await call(later.by_ref, "area-5:1")
    assert unseal(key_b, b"aad", sealed) == b"a body"


async def test_keys_are_stored_wrapped_never_in_the_clear(backend: Backend) -> None:
    master = LocalMasterKey(secrets.token_bytes(32))
    ring = KeyRing(master, backend.store)
    _, key = await call(ring.current, "area-3")
    probe = seal(key, b"aad", b"x")
    [stored] = await call(backend.store.all)
    plain = master.unwrap(b"dk:area-3:1", stored.wrapped)  # what the ring unwraps
    assert unseal(type(key)(plain), b"aad", probe) == b"x"
    assert plain not in stored.wrapped
    if backend.kind == "couchdb":  # the document itself: base64 of the wrapped key only
        where = couch_path(backend.db) + path(doc_id("area-3", 1))
        status, doc = couch_request(backend.url, "GET", where)
        assert status == 200, doc
        assert base64.b64decode(doc["wrapped"]) == stored.wrapped
        assert base64.b64encode(plain).decode() not in str(doc)


@pytest.mark.parametrize("backend", ["couchdb"], indirect=True)
async def test_couchdb_adapter_refuses_a_call_on_the_event_loop(backend: Backend) -> None:
    """Only the CouchDB adapter waits for the event loop, so only it can refuse this."""
    with pytest.raises(RuntimeError, match="worker thread"):
        backend.store.latest("area-1")


async def test_a_removed_version_is_gone_for_every_writer_and_the_others_stay(
    backend: Backend,
) -> None:
    """Rotation and shredding delete versions; a key ring asking afterwards finds none."""
    store = backend.store
    kept = secrets.token_bytes(60)
    await call(store.add, "area-r", 1, secrets.token_bytes(60), NOW)
    await call(store.add, "area-r", 2, kept, NOW)
    assert await call(backend.second.remove, "area-r", 1) is True
    assert await call(store.remove, "area-r", 1) is False  # already gone
    assert await call(store.wrapped, "area-r", 1) is None
    assert await call(backend.second.wrapped, "area-r", 1) is None
    assert await call(store.wrapped, "area-r", 2) == kept
    assert [(k.place, k.version) for k in await call(store.all)] == [("area-r", 2)]
    if backend.kind == "couchdb":  # no live leaf of it left in CouchDB either
        status, _ = couch_request(
            backend.url, "GET", couch_path(backend.db) + "/dk:area-r:00000001"
        )
        assert status == 404
