"""``fieldsync keys list``, ``keys rewrap`` and ``audit verify`` with the keys in CouchDB.

With ``FIELDSYNC_COUCHDB_URL`` set, the data keys every instance shares live in
``<prefix>keys`` and the audit chain key in ``<prefix>audit``: master-key rotation
must re-wrap those (a server would otherwise refuse the new master key), the
listing must show them, and the chains must still verify under the new key.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import quote

import pytest
from couchdb_server import couch_request
from couchdb_server import db_path as couch_path
from shared_org import PLACES, seed

from sync import cli
from sync.audit import Entry, now
from sync.config import Endpoint
from sync.couchaudit import CouchChain, entry_doc_id
from sync.datakeys.couchdb import CouchDataKeys
from sync.errors import StoreError
from sync.keys import KeyError_, KeyRing, LocalMasterKey, key_from_file
from sync.store.couchdb.client import CouchClient

PLACES_WITH_KEYS = ["", "area-a1", "area-b1"]


async def _shared_state(url: str, prefix: str, master: LocalMasterKey) -> None:
    """What running instances leave in CouchDB: three data keys and one chain entry."""
    client = CouchClient(Endpoint.parse(url))
    try:
        ring = KeyRing(master, CouchDataKeys.for_prefix(client, prefix))
        for place in PLACES_WITH_KEYS:
            await asyncio.to_thread(ring.current, place)
        chain = CouchChain(client, prefix, master, "test-instance")
        await chain.append([Entry(now(), "alice", None, "read", "health", ("p1",))])
    finally:
        await client.close()


async def _opens(url: str, prefix: str, master: LocalMasterKey) -> None:
    client = CouchClient(Endpoint.parse(url))
    try:
        ring = KeyRing(master, CouchDataKeys.for_prefix(client, prefix))
        for place in PLACES_WITH_KEYS:
            await asyncio.to_thread(ring.by_ref, f"{place}:1")
    finally:
        await client.close()


def test_rewrap_moves_the_keys_every_instance_shares(
    tmp_path: Path,
    couchdb_url: str,
    couch_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "data"
    seed(data, PLACES)
    old = key_from_file(data / "master.key", create=True)
    monkeypatch.setenv("FIELDSYNC_COUCHDB_URL", couchdb_url)
    monkeypatch.setenv("FIELDSYNC_COUCHDB_PREFIX", couch_prefix)
    asyncio.run(_shared_state(couchdb_url, couch_prefix, old))
    listing = ["keys", "list", "--data-dir", str(data)]
    assert cli.main(listing) == 0
    assert capsys.readouterr().out.count(" opens") == 3

    new_file = tmp_path / "new-master.key"
    rewrap = ["keys", "rewrap", "--new-key-file", str(new_file), "--data-dir", str(data)]
    assert cli.main(rewrap) == 0
    assert "3 data keys re-wrapped, 0 already" in capsys.readouterr().out
    new = key_from_file(new_file, create=False)
    asyncio.run(_opens(couchdb_url, couch_prefix, new))
    with pytest.raises(KeyError_, match="wrong master key"):
        asyncio.run(_opens(couchdb_url, couch_prefix, old))
    assert cli.main(rewrap) == 0  # resumable: nothing left to do
    assert "0 data keys re-wrapped, 3 already" in capsys.readouterr().out

    monkeypatch.setenv("FIELDSYNC_MASTER_KEY_FILE", str(new_file))
    assert cli.main(listing) == 0
    assert capsys.readouterr().out.count(" opens") == 3
    assert cli.main(["audit", "verify", "--data-dir", str(data)]) == 0
    said = capsys.readouterr().out
    assert "instance test-instance: audit chain ok: 1 entries" in said, said


def test_a_second_writer_on_one_chain_is_refused_loudly(
    tmp_path: Path, couchdb_url: str, couch_prefix: str
) -> None:
    """Instance ids are new at every start; if one ever came twice, nothing is overwritten."""
    master = LocalMasterKey(key_from_file(tmp_path / "master.key", create=True).key)
    asyncio.run(_shared_state(couchdb_url, couch_prefix, master))
    with pytest.raises(StoreError, match="two writers on one chain"):
        asyncio.run(_shared_state(couchdb_url, couch_prefix, master))


def test_an_edited_or_truncated_chain_in_couchdb_fails_verification(
    tmp_path: Path,
    couchdb_url: str,
    couch_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "data"
    seed(data, PLACES)
    master = key_from_file(data / "master.key", create=True)
    monkeypatch.setenv("FIELDSYNC_COUCHDB_URL", couchdb_url)
    monkeypatch.setenv("FIELDSYNC_COUCHDB_PREFIX", couch_prefix)

    async def record(instance: str, count: int) -> None:
        client = CouchClient(Endpoint.parse(couchdb_url))
        try:
            chain = CouchChain(client, couch_prefix, master, instance)
            for n in range(count):
                await chain.append([Entry(now(), "alice", None, "read", "health", (f"p{n}",))])
            await chain.close()  # as a server stops: the head follows its entries
        finally:
            await client.close()

    asyncio.run(record("good", 3))
    asyncio.run(record("edited", 3))
    asyncio.run(record("cut", 3))
    verify = ["audit", "verify", "--data-dir", str(data)]
    assert cli.main(verify) == 0
    assert capsys.readouterr().out.count(": audit chain ok: 3 entries") == 3

    db = couch_path(couch_prefix + "audit")
    entry = db + "/" + quote(entry_doc_id("edited", 2), safe="")
    status, doc = couch_request(couchdb_url, "GET", entry)
    assert status == 200, doc
    status, _ = couch_request(couchdb_url, "PUT", entry, {**doc, "actor": "mallory"})
    assert status == 201
    last = db + "/" + quote(entry_doc_id("cut", 3), safe="")
    status, doc = couch_request(couchdb_url, "GET", last)
    status, _ = couch_request(couchdb_url, "DELETE", f"{last}?rev={doc['_rev']}")
    assert status == 200

    assert cli.main(verify) == 1
    said = capsys.readouterr().out
    assert "instance good: audit chain ok: 3 entries" in said
    assert "instance edited: audit chain BROKEN at entry 2 (" in said
    assert "hash mismatch" in said
    assert "instance cut: audit chain BROKEN at entry 3: tail truncated" in said, said
