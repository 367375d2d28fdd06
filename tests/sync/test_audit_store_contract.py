"""The audit port's contract (sync.audit_store.ports), run against every adapter.

    memory     sync.audit_store.memory, lists in the test's process
    embedded   sync.audit_store.embedded on a real SQLite file (the server's writer),
               and the CLI's way in (a transaction on the file) as a second adapter
    couchdb    sync.audit_store.couchdb on a CouchDB-API server (pouchdb-server, or a
               real CouchDB with FIELDSYNC_TEST_COUCHDB_URL); a second client and
               adapter on the same database stands for a second process

Every adapter must keep entries in order, let ``verify`` name an edited, deleted
or reordered entry, keep several chains apart, serialise concurrent appenders on
one chain, continue a chain after a restart, and never leave a chain that fails
verification when its writer is killed with ``kill -9`` in the middle of appends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, urlsplit

import pytest
from couchdb_server import couch_request
from couchdb_server import db_path as couch_path
from tcp_cut import TcpCut, through

from sync.audit_store.couchdb import CouchAudit, entry_doc_id
from sync.audit_store.embedded import EmbeddedAudit, Transactions, create_chains_table
from sync.audit_store.links import DATA_DIR, ChainKey, Entry
from sync.audit_store.memory import MemoryAudit
from sync.audit_store.ports import AuditStore
from sync.auditverify import Report, verify_chains, verify_store
from sync.config import Endpoint
from sync.errors import StoreError, StoreUnavailable
from sync.keys import LocalMasterKey, key_from_file
from sync.store.couchdb.client import CouchClient
from sync.store.schema import db_path
from sync.store.sqlite import SqliteStore

T = TypeVar("T")
ADAPTERS = ["memory", "embedded", "couchdb"]
# The adapters whose storage outlives the adapter (a restart, a second process).
LASTING = pytest.mark.parametrize("backend", ["embedded", "couchdb"], indirect=True)
CHAIN = "instance-a"
REPO = Path(__file__).resolve().parents[2]


def reads(n: int, start: int = 0, actor: str = "alice") -> list[Entry]:
    return [
        Entry(f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}", actor, "dev-1", "read", "health",
              (f"doc-{i}",))
        for i in range(start, start + n)
    ]  # fmt: skip


@dataclasses.dataclass
class Backend:
    kind: str
    store: AuditStore
    master: LocalMasterKey
    tmp: Path
    # A new adapter on the same storage (a restart, another process); None for memory.
    reopen: Callable[[], Awaitable[AuditStore]] | None = None
    couch: tuple[str, str] | None = None  # (url, prefix)
    # An adapter on the same storage whose way there the test can cut, and the switch.
    flaky: Callable[[], Awaitable[tuple[AuditStore, Callable[[bool], Awaitable[None]]]]] | None = (
        None
    )
    closers: list[Callable[[], Awaitable[None]]] = dataclasses.field(default_factory=list)

    async def key(self) -> ChainKey:
        key = await self.store.chain_key(self.master, create=True)
        assert key is not None
        return key

    # -- an attacker with access to the storage (not through the port) -------------------
    def tamper(self, action: str, chain: str, seq: int) -> None:
        """``edit`` entry ``seq`` (its actor), ``delete`` it, or ``swap`` it with the next."""
        getattr(self, f"_tamper_{self.kind}")(action, chain, seq)

    def _tamper_memory(self, action: str, chain: str, seq: int) -> None:
        assert isinstance(self.store, MemoryAudit)
        stored = self.store.by_chain[chain]
        i = seq - 1
        if action == "edit":
            one = stored[i]
            stored[i] = dataclasses.replace(one, entry=dataclasses.replace(one.entry, actor="x"))
        elif action == "delete":
            del stored[i]
        else:
            a, b = stored[i], stored[i + 1]
            stored[i], stored[i + 1] = (dataclasses.replace(b, seq=a.seq),
                                        dataclasses.replace(a, seq=b.seq))  # fmt: skip

    def _tamper_embedded(self, action: str, chain: str, seq: int) -> None:
        with closing(sqlite3.connect(db_path(self.tmp))) as conn:
            conn.executescript(
                "DROP TRIGGER audit_chains_no_update; DROP TRIGGER audit_chains_no_delete;"
            )
            where = "WHERE chain=? AND seq=?"
            if action == "edit":
                conn.execute(f"UPDATE audit_chains SET actor='x' {where}", (chain, seq))
            elif action == "delete":
                conn.execute(f"DELETE FROM audit_chains {where}", (chain, seq))
            else:
                for old, new in ((seq, -1), (seq + 1, seq), (-1, seq + 1)):
                    conn.execute(f"UPDATE audit_chains SET seq=? {where}", (new, chain, old))
            create_chains_table(conn)  # the guards put back: only the chain can tell
            conn.commit()

    def _tamper_couchdb(self, action: str, chain: str, seq: int) -> None:
        assert self.couch is not None
        url, prefix = self.couch
        db = couch_path(prefix + "audit")

        def where(n: int) -> str:
            return db + "/" + quote(entry_doc_id(chain, n), safe="")

        status, doc = couch_request(url, "GET", where(seq))
        assert status == 200, doc
        if action == "edit":
            status, _ = couch_request(url, "PUT", where(seq), {**doc, "actor": "x"})
        elif action == "delete":
            status, _ = couch_request(url, "DELETE", f"{where(seq)}?rev={doc['_rev']}")
        else:
            _, after = couch_request(url, "GET", where(seq + 1))
            for mine, theirs in ((doc, after), (after, doc)):
                body = {**theirs, "_id": mine["_id"], "_rev": mine["_rev"], "seq": mine["seq"]}
                status, answer = couch_request(url, "PUT", where(int(mine["seq"])), body)
                assert status in (201, 202), answer
        assert status in (200, 201, 202)


@pytest.fixture(params=ADAPTERS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    master = key_from_file(tmp_path / "master.key", create=True)
    if request.param == "memory":
        yield Backend("memory", MemoryAudit(), master, tmp_path)
        return
    if request.param == "embedded":
        sqlite = SqliteStore(db_path(tmp_path))
        store = await EmbeddedAudit.opened(sqlite)

        async def embedded_again() -> AuditStore:
            return EmbeddedAudit.on_file(tmp_path)  # another process's way in

        async def embedded_flaky() -> tuple[AuditStore, Callable[[bool], Awaitable[None]]]:
            flaky = Flaky(sqlite)

            async def down(state: bool) -> None:
                flaky.down = state

            return EmbeddedAudit(flaky), down

        yield Backend("embedded", store, master, tmp_path, embedded_again, flaky=embedded_flaky)
        await sqlite.close()
        return
    url: str = request.getfixturevalue("couchdb_url")
    prefix: str = request.getfixturevalue("couch_prefix")
    opened: list[CouchClient] = []
    cuts: list[TcpCut] = []

    def couch_store() -> CouchAudit:
        opened.append(CouchClient(Endpoint.parse(url)))
        return CouchAudit.for_prefix(opened[-1], prefix)

    async def couch_again() -> AuditStore:
        return couch_store()

    async def couch_flaky() -> tuple[AuditStore, Callable[[bool], Awaitable[None]]]:
        target = urlsplit(url)
        cut = TcpCut(target.hostname or "127.0.0.1", target.port or 5984)
        await cut.start()
        cuts.append(cut)
        opened.append(CouchClient(Endpoint.parse(through(url, cut)), timeout=5.0))

        async def down(state: bool) -> None:
            await (cut.cut() if state else cut.restore())

        return CouchAudit.for_prefix(opened[-1], prefix), down

    couch = (url, prefix)
    yield Backend("couchdb", couch_store(), master, tmp_path, couch_again, couch, couch_flaky)
    for client in opened:
        await client.close()
    for cut in cuts:
        await cut.close()


class Flaky:
    """The server's writer, or nothing at all while ``down`` (a full disk, say)."""

    def __init__(self, inner: Transactions) -> None:
        self.inner, self.down = inner, False

    async def write_tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self.down:
            raise StoreUnavailable("the disk is full (a test)")
        return await self.inner.write_tx(fn)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.inner.read(fn)


async def verified(backend: Backend, chain: str = CHAIN) -> Report:
    return await verify_store(backend.store, await backend.key(), chain)


# -- ordered, append-only --------------------------------------------------------------------


async def test_entries_come_back_in_order_and_the_chain_verifies(backend: Backend) -> None:
    key = await backend.key()
    first = await backend.store.append(key, CHAIN, reads(3))
    second = await backend.store.append(key, CHAIN, reads(4, 3))
    assert (first.id, second.id) == (3, 7)
    stored = await backend.store.entries(CHAIN)
    assert [one.seq for one in stored] == list(range(1, 8))
    assert [one.entry for one in stored] == reads(7)
    assert [one.prev for one in stored[1:]] == [one.hash for one in stored[:-1]]
    head = await backend.store.head(CHAIN)
    assert head is not None and (head.id, head.hash) == (7, stored[-1].hash)
    assert [one.seq for one in await backend.store.entries(CHAIN, first=5)] == [5, 6, 7]
    report = await verified(backend)
    assert report.ok, report.summary()
    assert report.entries == 7


async def test_an_empty_append_changes_nothing(backend: Backend) -> None:
    key = await backend.key()
    await backend.store.append(key, CHAIN, reads(2))
    head = await backend.store.append(key, CHAIN, [])
    assert head.id == 2
    assert len(await backend.store.entries(CHAIN)) == 2


async def test_one_chain_key_sealed_by_the_master_key(backend: Backend) -> None:
    key = await backend.key()
    again = await backend.store.chain_key(backend.master, create=False)
    assert again is not None and again.head_mac(1, "x") == key.head_mac(1, "x")
    stranger = LocalMasterKey(os.urandom(32))
    with pytest.raises(Exception, match="wrong master key"):
        await backend.store.chain_key(stranger, create=False)
    await backend.store.rewrap_key(backend.master, stranger)
    moved = await backend.store.chain_key(stranger, create=False)
    assert moved is not None and moved.head_mac(1, "x") == key.head_mac(1, "x")


async def test_a_bad_chain_name_is_refused_clearly(backend: Backend) -> None:
    key = await backend.key()
    for name in ("", "a:b", "../x", "x" * 101, "a b"):
        with pytest.raises(ValueError, match="a chain name is 1-100 letters"):
            await backend.store.append(key, name, reads(1))


# -- tampering is named ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "seq", "named", "what"),
    [
        ("edit", 3, 3, "hash mismatch (edited)"),
        ("delete", 2, 3, "missing entries: seq 2..2 absent (a gap)"),
        ("delete", 5, 5, "tail truncated, entries 5..5 absent"),
        ("swap", 2, 2, "broken link: prev is not the hash of the entry before"),
    ],
    ids=["edited", "deleted", "deleted at the tail", "reordered"],
)
async def test_verify_names_the_first_tampered_entry(
    backend: Backend, action: str, seq: int, named: int, what: str
) -> None:
    key = await backend.key()
    await backend.store.append(key, CHAIN, reads(5))
    await backend.store.append(key, "instance-b", reads(2))
    assert (await verified(backend)).ok
    backend.tamper(action, CHAIN, seq)
    problem = (await verified(backend)).problem
    assert problem is not None
    assert (problem.id, problem.what) == (named, what)
    assert (await verified(backend, "instance-b")).ok  # the other chain is untouched
    reports = {r.instance: r for r in await verify_chains(backend.store, backend.master)}
    assert not reports[CHAIN].ok and reports["instance-b"].ok
    assert f"instance {CHAIN}: audit chain BROKEN at entry {named}" in reports[CHAIN].summary()


async def test_entries_linked_under_another_key_are_refused(backend: Backend) -> None:
    key = await backend.key()
    forger = ChainKey(os.urandom(32))
    await backend.store.append(forger, CHAIN, reads(2))  # someone without the chain key
    problem = (await verify_store(backend.store, key, CHAIN)).problem
    assert problem is not None and problem.id == 1


# -- several chains -----------------------------------------------------------------------------


async def test_chains_are_kept_apart(backend: Backend) -> None:
    key = await backend.key()
    names = ["instance-a", "instance-b", "20260101T120000-1a2b3c4d"]
    for n, name in enumerate(names):
        await backend.store.append(key, name, reads(n + 1, actor=name))
    await backend.store.append(key, names[0], reads(1, 10, actor=names[0]))
    assert await backend.store.chains() == sorted(names)
    for name in names:
        stored = await backend.store.entries(name)
        assert {one.entry.actor for one in stored} == {name}
        assert [one.seq for one in stored] == list(range(1, len(stored) + 1))
        assert (await verified(backend, name)).ok
    assert len(await backend.store.entries(names[0])) == 2
    reports = await verify_chains(backend.store, backend.master)
    assert [(r.instance, r.entries, r.ok) for r in reports] == [
        (name, len(await backend.store.entries(name)), True) for name in sorted(names)
    ]


async def test_starting_a_chain_that_exists_is_refused(backend: Backend) -> None:
    key = await backend.key()
    await backend.store.start(key, "fresh")
    assert (await verified(backend, "fresh")).ok  # started, empty: a head at 0
    assert "fresh" in await backend.store.chains()
    await backend.store.append(key, "fresh", reads(2))
    other = backend.store if backend.reopen is None else await backend.reopen()
    with pytest.raises(StoreError, match="two writers on one chain"):
        await other.start(key, "fresh")
    assert (await verified(backend, "fresh")).entries == 2


# -- concurrent appenders, restarts, kills -----------------------------------------------------


async def test_concurrent_appenders_on_one_chain_are_serialised(backend: Backend) -> None:
    key = await backend.key()
    batches = [reads(3, 3 * n, actor=f"writer-{n}") for n in range(60)]
    await asyncio.gather(*(backend.store.append(key, CHAIN, batch) for batch in batches))
    stored = await backend.store.entries(CHAIN)
    assert len(stored) == 180
    for n in range(60):  # each append's entries together, in the order given
        mine = [one for one in stored if one.entry.actor == f"writer-{n}"]
        assert [one.entry for one in mine] == batches[n]
        assert [one.seq for one in mine] == list(range(mine[0].seq, mine[0].seq + 3))
    report = await verified(backend)
    assert report.ok and report.entries == 180, report.summary()


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_two_ways_into_one_file_share_the_data_dir_chain(backend: Backend) -> None:
    """The server's writer and the CLI's file transactions: SQLite's one writer serialises
    them on the data dir's chain (the same transaction as each admin change)."""
    assert backend.reopen is not None
    cli = await backend.reopen()
    key = await backend.key()
    await asyncio.gather(
        *(backend.store.append(key, DATA_DIR, reads(2, 2 * n)) for n in range(20)),
        *(cli.append(key, DATA_DIR, reads(2, 100 + 2 * n, actor="cli")) for n in range(10)),
    )
    report = await verify_store(backend.store, key, DATA_DIR)
    assert report.ok and report.entries == 60, report.summary()


@LASTING
async def test_a_failed_append_is_stored_first_by_the_next(backend: Backend) -> None:
    """Storage away: the append raises (its answer is not sent); once it is back, the
    next append stores the failed one's entries first, in order, with no gap."""
    assert backend.flaky is not None
    store, down = await backend.flaky()
    key = await backend.key()
    await store.append(key, CHAIN, reads(2))
    await down(True)
    with pytest.raises(StoreUnavailable):
        await store.append(key, CHAIN, reads(2, 2))
    await down(False)
    head = await store.append(key, CHAIN, reads(1, 4))
    assert head.id == 5
    assert [one.entry for one in await backend.store.entries(CHAIN)] == reads(5)
    assert (await verified(backend)).ok


@LASTING
async def test_a_restart_continues_the_chain(backend: Backend) -> None:
    key = await backend.key()
    await backend.store.append(key, CHAIN, reads(3))
    assert backend.reopen is not None
    restarted = await backend.reopen()
    again = await restarted.chain_key(backend.master, create=False)
    assert again is not None
    head = await restarted.append(again, CHAIN, reads(2, 3))
    assert head.id == 5
    assert [one.entry for one in await restarted.entries(CHAIN)] == reads(5)
    assert (await verify_store(restarted, again, CHAIN)).ok


KILLED = """
import asyncio, sys
from pathlib import Path
from sync.audit_store.links import Entry
from sync.keys import key_from_file

async def main(kind, where, prefix, key_file):
    master = key_from_file(Path(key_file), create=False)
    if kind == "embedded":
        from sync.audit_store.embedded import EmbeddedAudit
        store = EmbeddedAudit.on_file(Path(where))
    else:
        from sync.audit_store.couchdb import CouchAudit
        from sync.config import Endpoint
        from sync.store.couchdb.client import CouchClient
        store = CouchAudit.for_prefix(CouchClient(Endpoint.parse(where)), prefix)
    key = await store.chain_key(master, create=True)
    n = 0
    while True:
        batch = [Entry(str(n + i), "killed", None, "read", "health", (f"k{n + i}",))
                 for i in range(3)]
        head = await store.append(key, "killed", batch)
        n += 3
        print(head.id, flush=True)

asyncio.run(main(*sys.argv[1:]))
"""


@LASTING
async def test_kill_9_mid_append_never_breaks_the_chain(backend: Backend) -> None:
    """A writer killed between (or inside) appends: every acknowledged entry is there, the
    chain verifies, and the next writer continues it."""
    url, prefix = backend.couch or ("", "")
    where = url or str(backend.tmp)
    args = [sys.executable, "-c", KILLED, backend.kind, where, prefix,
            str(backend.tmp / "master.key")]  # fmt: skip
    writer = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, text=True)
    acked = 0
    try:
        assert writer.stdout is not None
        for line in writer.stdout:
            acked = int(line)
            if acked >= 60:
                break
    finally:
        writer.send_signal(signal.SIGKILL)  # the writer this test started
        writer.wait(30)
        if writer.stdout is not None:
            writer.stdout.close()
    assert acked >= 60, "the writer stopped before it was killed"
    assert backend.reopen is not None
    after = await backend.reopen()
    key = await after.chain_key(backend.master, create=False)
    assert key is not None
    report = await verify_store(after, key, "killed")
    assert report.ok, report.summary()
    stored = await after.entries("killed")
    assert [one.entry.doc_ids for one in stored[:acked]] == [(f"k{n}",) for n in range(acked)]
    await after.append(key, "killed", reads(1))
    report = await verify_store(after, key, "killed")
    assert report.ok and report.entries == len(stored) + 1, report.summary()


@pytest.mark.parametrize("backend", ["couchdb"], indirect=True)
async def test_a_stale_listing_never_makes_a_restart_link_after_an_old_end(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer was killed before its head moved past entry 2 of 20, and a lagging
    cluster node lists the chain only up to entry 2: the restarted writer finds the
    rest by id (a quorum read) and links after entry 20."""
    key = await backend.key()
    await backend.store.append(key, CHAIN, reads(20))
    stale = (await backend.store.entries(CHAIN))[1]
    assert backend.couch is not None
    url, prefix = backend.couch
    head_at = couch_path(prefix + "audit") + "/" + quote(f"head:{CHAIN}", safe="")
    status, head = couch_request(url, "GET", head_at)
    assert status == 200, head
    lagging_head = key.head(stale.seq, stale.hash)
    body = {**head, "seq": lagging_head.id, "hash": lagging_head.hash, "mac": lagging_head.mac}
    assert couch_request(url, "PUT", head_at, body)[0] == 201
    assert backend.reopen is not None
    restarted = await backend.reopen()
    assert isinstance(restarted, CouchAudit)

    async def lagging(chain: str) -> tuple[int, str]:
        return stale.seq, stale.hash

    monkeypatch.setattr(restarted, "_last_entry", lagging)
    head = await restarted.append(key, CHAIN, reads(1, 20))
    assert head.id == 21
    assert [one.entry for one in await backend.store.entries(CHAIN)] == reads(21)
    assert (await verified(backend)).ok
