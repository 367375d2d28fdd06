"""An embedded store's since-token, read by the CouchDB backend after ``fieldsync migrate``.

The same database is read twice with the same token: on the embedded store
before the move, and on CouchDB after it (ADR 0001, *Moving from the embedded
store*).  Both must send the same documents: a worker who had read part of
their set carries on where they stopped; one whose scope grew since the token
gets the new place from its start; an admin starts over.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import pytest
from sync_fixtures import Api, running, until_served

from sync.config import Config
from sync.keys import load_master_key
from sync.migrate import run
from sync.people_store import embedded_tables
from sync.replication import since
from sync.store.schema import with_file


@pytest.mark.parametrize(
    ("raw", "embedded"),
    [
        (0, False),
        ("0", False),
        ("now", False),
        (12, True),
        ("12", True),
        ("12-0123456789abcdef", True),
        ("12-0123456789abcdef-fedcba9876543210-7", True),
        ("v1-eJyLjgUAARUAuQ", False),
        (True, False),
        ("12-xyz", False),
    ],
)
def test_which_tokens_are_the_embedded_stores(raw: object, embedded: bool) -> None:
    assert since.is_embedded(raw) is embedded


async def _feed(api: Api, user: str, token: object) -> tuple[list[str], Any]:
    status, page = await api.call("GET", "/health/_changes", user, since=str(token), limit=1000)
    assert status == 200, page
    return sorted(r["id"] for r in page["results"]), page["last_seq"]


async def test_a_token_from_before_the_move_sends_what_it_would_have_sent(
    config: Config, couchdb_url: str, couch_prefix: str, tmp_path: Path
) -> None:
    a1 = [{"_id": f"a1-{n:02d}", "place": "area-a1"} for n in range(10)]
    a2 = [{"_id": f"a2-{n:02d}", "place": "area-a2"} for n in range(4)]
    async with running(config) as client:
        api = Api(client)
        await api.bulk(a1[:6] + a2[:2])
        status, page = await api.call("GET", "/health/_changes", "alice", since="0", limit=4)
        assert (status, len(page["results"])) == (200, 4)
        partway = page["last_seq"]  # alice read 4 of her documents
        _, whole = await _feed(api, "alice", "0")  # ... or all of them, at this moment
        await api.bulk(a1[6:] + a2[2:])
        await api.call("PUT", "/health/a1-02", "admin", {**a1[2], "_rev": await _rev(api, "a1-02")})
        expected = {t: (await _feed(api, "alice", t))[0] for t in (partway, whole)}
    with_file(
        config.data_dir,
        lambda c: embedded_tables.set_places(c, "alice", ["area-a1", "area-a2"], []),
    )

    couch = dataclasses.replace(config, couchdb_url=couchdb_url, couchdb_prefix=couch_prefix)
    out = io.StringIO()
    assert await run.migrate(couch, load_master_key(config.key_file, create=False), out) == 0, (
        out.getvalue()
    )
    async with running(couch) as client:
        api = await until_served(Api(client))
        for token, sent in expected.items():
            got, _ = await _feed(api, "alice", token)
            # Her old place resumes where the token stood; area-a2, new to her, from its start.
            assert got == sorted(set(sent) | {d["_id"] for d in a2}), token
        everything, _ = await _feed(api, "admin", whole)
        assert len(everything) == len(a1) + len(a2)  # an admin starts over


async def _rev(api: Api, doc_id: str) -> str:
    _, doc = await api.call("GET", f"/health/{doc_id}")
    return str(doc["_rev"])
