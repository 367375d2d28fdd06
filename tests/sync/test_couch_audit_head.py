"""The audit chain's head on CouchDB moves at most once a second while entries come
(sync.audit_store.couchdb): one write per append, not two, and the head still follows.

On a CouchDB-API server (pouchdb-server, or a real CouchDB with FIELDSYNC_TEST_COUCHDB_URL).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sync.audit_store import couchdb as couch_audit
from sync.audit_store.couchdb import CouchAudit, head_doc_id
from sync.audit_store.links import ChainKey, Entry
from sync.auditverify import verify_chains
from sync.keys import key_from_file
from sync.store.couchdb.client import CouchClient, Endpoint

CHAIN = "instance-a"


def reads(n: int, start: int = 0) -> list[Entry]:
    return [
        Entry(f"2026-01-01T00:00:{i % 60:02d}", "alice", "dev-1", "read", "health", (f"d{i}",))
        for i in range(start, start + n)
    ]


@pytest.fixture
async def audit(couchdb_url: str, couch_prefix: str) -> AsyncIterator[tuple[CouchAudit, list[str]]]:
    client = CouchClient(Endpoint.parse(couchdb_url))
    writes: list[str] = []

    def observe(method: str, where: str, params: Any, body: Any) -> None:
        if method in ("PUT", "POST"):
            writes.append("head" if "head%3A" in where or "head:" in where else where[-10:])

    client.observe = observe
    store = CouchAudit.for_prefix(client, couch_prefix)
    yield store, writes
    await store.close()


async def _key(store: CouchAudit, tmp_path: Path) -> ChainKey:
    key = await store.chain_key(key_from_file(tmp_path / "master.key", create=True), create=True)
    assert key is not None
    return key


async def _stored_head(store: CouchAudit) -> int:
    leaves = await store.client.leaves_by_id(store.db, [head_doc_id(CHAIN)])
    return int(leaves[head_doc_id(CHAIN)][0]["seq"])


async def test_appends_in_quick_succession_move_the_head_once_then_once_after(
    audit: tuple[CouchAudit, list[str]], tmp_path: Path
) -> None:
    store, writes = audit
    key = await _key(store, tmp_path)
    await store.start(key, CHAIN)
    writes.clear()
    for n in range(20):
        await store.append(key, CHAIN, reads(1, n))
    assert writes.count("head") <= 1, writes  # 20 appends: 20 entry writes, not 40
    assert len(writes) - writes.count("head") == 20
    await asyncio.sleep(couch_audit.HEAD_EVERY + 0.3)  # a moment after the last append
    assert await _stored_head(store) == 20


async def test_reading_the_head_of_ones_own_chain_moves_it_first(
    audit: tuple[CouchAudit, list[str]], tmp_path: Path
) -> None:
    store, _ = audit
    key = await _key(store, tmp_path)
    await store.start(key, CHAIN)
    await store.append(key, CHAIN, reads(3))
    await store.append(key, CHAIN, reads(4, 3))
    head = await store.head(CHAIN)
    assert head is not None and head.id == 7


async def test_close_moves_the_head_and_a_lagging_head_still_verifies(
    couchdb_url: str, couch_prefix: str, tmp_path: Path
) -> None:
    master = key_from_file(tmp_path / "master.key", create=True)
    store = CouchAudit.for_prefix(CouchClient(Endpoint.parse(couchdb_url)), couch_prefix)
    key = await store.chain_key(master, create=True)
    assert key is not None
    await store.start(key, CHAIN)
    await store.append(key, CHAIN, reads(1))
    await store.append(key, CHAIN, reads(5, 1))  # within the second: the head lags
    reader = CouchAudit.for_prefix(CouchClient(Endpoint.parse(couchdb_url)), couch_prefix)
    lagging = await reader.head(CHAIN)
    assert lagging is not None and lagging.id < 6
    report = {r.instance: r for r in await verify_chains(reader, master)}[CHAIN]
    assert report.ok and report.entries == 6, report.summary()  # entries past it: fine
    await store.close()
    head = await reader.head(CHAIN)
    assert head is not None and head.id == 6
    await reader.close()
