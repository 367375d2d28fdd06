"""A document made once and used by every instance (``sync.store.couchdb.first``).

A place's first data key, made by two instances at once on a cluster: the one
whose write got a 202 takes its leaf back, but until then the leaf is in CouchDB
— CouchDB's winner of the moment, or the only leaf a reader's quorum read saw if
it came before the rival's 201 landed.  A reader that took that key would seal
bodies under a key about to vanish.  So a key is made pending and used only once
its maker's write stood.  Here the states between the writes are put in the
test's real store by hand, and a reader is asked while they hold.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from couchdb_server import couch_request, db_path

from sync.config import Endpoint
from sync.datakeys.couchdb import CouchDataKeys, doc_id
from sync.store.couchdb import first
from sync.store.couchdb.client import CouchClient

DOOMED, STANDING = b"key-of-a-202-being-taken-back", b"key-whose-write-stood"


@dataclass
class Keys:
    keys: CouchDataKeys
    url: str

    def where(self, version: int = 1) -> str:
        return f"{db_path(self.keys.db)}/{quote(doc_id('area-1', version), safe='')}"

    def put(self, wrapped: bytes, maker: str, **extra: Any) -> str:
        body = {
            "place": "area-1",
            "version": 1,
            "created": "2026-12-04T10:00:00Z",
            "wrapped": base64.b64encode(wrapped).decode(),
            "creator": maker,
            **extra,
        }
        status, answer = couch_request(self.url, "PUT", self.where(), body)
        assert status in (201, 202), answer
        return str(answer["rev"])

    def stored(self) -> dict[str, Any]:
        status, doc = couch_request(self.url, "GET", self.where())
        assert status == 200, doc
        return doc


@pytest.fixture
async def keys(couchdb_url: str, couch_prefix: str) -> AsyncIterator[Keys]:
    client = CouchClient(Endpoint.parse(couchdb_url))
    made = CouchDataKeys.for_prefix(client, couch_prefix)
    await made.latest_async("area-1")  # the database exists
    yield Keys(made, couchdb_url)
    await client.close()


async def test_a_reader_never_uses_a_key_whose_makers_write_may_not_stand(keys: Keys) -> None:
    rev = keys.put(DOOMED, "loser", pending=True)  # written; its 202 not yet taken back
    reading = asyncio.create_task(keys.keys.wrapped_async("area-1", 1))
    await asyncio.sleep(0.3)
    assert not reading.done()  # waiting: the key may vanish
    couch_request(keys.url, "DELETE", f"{keys.where()}?rev={rev}")  # taken back
    keys.put(DOOMED + b"!", "winner", pending=True)  # the rival's, whose 201 came
    await asyncio.sleep(0.1)
    assert not reading.done()
    pending = keys.stored()
    cleared = {k: v for k, v in pending.items() if k != "pending"}
    cleared["wrapped"] = base64.b64encode(STANDING).decode()
    status, answer = couch_request(keys.url, "PUT", keys.where(), cleared)  # its maker clears
    assert status in (201, 202), answer
    assert await asyncio.wait_for(reading, 5) == STANDING


async def test_a_key_made_here_is_used_once_cleared(keys: Keys) -> None:
    made = await keys.keys.add_async("area-1", 1, STANDING, "2026-12-04T10:00:00Z")
    assert made == STANDING
    stored = keys.stored()
    assert "pending" not in stored and stored["_rev"].startswith("2-")  # made, then cleared
    assert await keys.keys.wrapped_async("area-1", 1) == STANDING
    # a second maker finds it and takes it, not its own
    assert await keys.keys.add_async("area-1", 1, DOOMED, "2026-12-04T10:00:01Z") == STANDING


async def test_a_pending_key_whose_maker_died_is_cleared_by_a_reader(
    keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(first, "ADOPT_AFTER", 0.3)
    keys.put(STANDING, "gone", pending=True)  # its 201 came; it died before clearing
    assert await keys.keys.wrapped_async("area-1", 1) == STANDING
    assert "pending" not in keys.stored()
