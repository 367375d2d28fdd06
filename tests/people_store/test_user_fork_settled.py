"""A user document forked by a 202: no writer's change is lost, and reads are strict.

On a cluster a change of a user can be taken by fewer than a quorum of copies (202)
while a rival's change from the same revision stands on the others.  The writer of
the 202 used to write its own change again on CouchDB's winner and delete every
other leaf: a rival's disable or narrowing of places was lost when it lost the
tie, and the disabled worker logged in again.  A proxy in front of the test's
store answers one ``PUT`` with 202 after putting a rival's write beside it (see
``couch_proxy``); what is stored is then read from the store itself.

Settling a fork needs a store that shows every live leaf of a document, as CouchDB
does; behind the proxy pouchdb-server (CI's stand-in) does too (``couch_proxy``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestServer
from couch_proxy import Proxy
from couchdb_server import couch_request, db_path

from sync import accounts as accounts_module
from sync.config import Endpoint
from sync.errors import Conflict
from sync.people_store.couchdb import CouchAccounts
from sync.people_store.couchdocs import user_doc_id
from sync.people_store.ports import Actor
from sync.scopes import Role, UserStatus
from sync.store.couchdb.client import CouchClient

PASSWORD = "correct horse"
ADMIN = Actor("boss")
ALICE = user_doc_id("alice")


@dataclass
class Fixture:
    store: CouchAccounts  # through the proxy
    proxy: Proxy
    url: str
    db: str

    def leaves(self) -> list[dict[str, Any]]:
        where = f"{db_path(self.db)}/{quote(ALICE, safe='')}?open_revs=all"
        status, answer = couch_request(self.url, "GET", where)
        assert status == 200, answer
        return [row["ok"] for row in answer if "ok" in row and not row["ok"].get("_deleted")]


@pytest.fixture
async def accounts(
    aiohttp_server: Callable[..., Awaitable[TestServer]], couchdb_url: str, couch_prefix: str
) -> AsyncIterator[Fixture]:
    proxy = Proxy(couchdb_url)
    server = await aiohttp_server(proxy.app(), host="127.0.0.1")
    client = CouchClient(Endpoint.parse(f"http://127.0.0.1:{server.port}"))
    store = CouchAccounts.for_prefix(client, couch_prefix)
    await store.add_place("country", None, "Country", ADMIN)
    await store.add_place("area-1", "country", None, ADMIN)
    await store.add_place("area-2", "country", None, ADMIN)
    await store.add_user("boss", Role.ADMIN, PASSWORD, [], [], ADMIN)
    await store.add_user("alice", Role.CHW, PASSWORD, ["area-1", "area-2"], [], ADMIN)
    yield Fixture(store, proxy, couchdb_url, await store.database())
    await client.close()
    await proxy.close()


async def test_a_202_with_no_rival_keeps_the_change(accounts: Fixture) -> None:
    accounts.proxy.arm(ALICE)
    await accounts.store.set_language("alice", "sw", ADMIN)
    (leaf,) = accounts.leaves()
    assert leaf["language"] == "sw" and leaf["status"] == "active"


async def test_a_rivals_disable_survives_a_change_that_won_the_tie(accounts: Fixture) -> None:
    accounts.proxy.arm(ALICE, {"status": "disabled"})  # the rival's leaf loses the tie
    await accounts.store.set_language("alice", "sw", ADMIN)
    (leaf,) = accounts.leaves()  # settled: one leaf, with both changes
    assert (leaf["status"], leaf["language"]) == ("disabled", "sw")
    user = await accounts.store.get_user("alice")
    assert user is not None and user.status is UserStatus.DISABLED


async def test_a_rivals_narrowing_survives_a_new_password(accounts: Fixture) -> None:
    accounts.proxy.arm(ALICE, {"places": ["area-1"]})
    await accounts.store.set_password("alice", "a new passphrase", ADMIN)
    (leaf,) = accounts.leaves()
    assert leaf["places"] == ["area-1"]
    user = await accounts.store.get_user("alice")
    assert user is not None and user.places == ("area-1",)
    assert accounts_module.verify_password("a new passphrase", user.password_hash)


async def test_a_change_the_rivals_write_forbids_is_taken_back(accounts: Fixture) -> None:
    accounts.proxy.arm(ALICE, {"status": "removed"})  # removed meanwhile, elsewhere
    with pytest.raises(Conflict, match="removed"):
        await accounts.store.set_language("alice", "sw", ADMIN)
    (leaf,) = accounts.leaves()
    assert leaf["status"] == "removed" and leaf.get("language") != "sw"


async def test_an_unsettled_fork_reads_as_strict_as_all_its_leaves(accounts: Fixture) -> None:
    """A writer that died before settling leaves the fork: a user reads as every leaf
    allows (the strictest status, the places all grant)."""
    stored = accounts.leaves()[0]
    assert str(stored["_rev"]).startswith("1-")  # alice as added: one revision
    branch = {**stored, "places": ["area-2"], "_rev": "1-" + "0" * 31 + "1"}  # it loses
    status, answer = couch_request(
        accounts.url,
        "POST",
        f"{db_path(accounts.db)}/_bulk_docs",
        {"docs": [branch], "new_edits": False},
    )
    assert status == 201, answer
    user = await accounts.store.get_user("alice")
    assert user is not None and (user.places, user.status) == (("area-2",), UserStatus.ACTIVE)
