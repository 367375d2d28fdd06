"""The SMS port's contract (sms_gateway.ports), run against every adapter.

    embedded   sms_gateway.embedded on a real SQLite file (the server's single writer)
    couchdb    sms_gateway.couchdb on a CouchDB-API server (pouchdb-server, or a real
               CouchDB with FIELDSYNC_TEST_COUCHDB_URL); a second client and adapter on
               the same database stands for a second fieldsync instance

Every adapter stores a message once however often a gateway repeats it, finishes
it once, hands each outgoing message to one caller, ignores stale status
updates, and offers a silent message again under the same id.  Leases (claim,
expiry, take-over) are the CouchDB adapter's: the embedded one has one process,
whose rounds the service serialises.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from sms_gateway import couchdb_docs as shape
from sms_gateway.couchdb import CouchSms
from sms_gateway.embedded import EmbeddedSms
from sms_gateway.listing import Filters
from sms_gateway.outgoing import OutEvent, OutState, RetryPolicy
from sms_gateway.ports import Event, Finished, NewIncoming, NewOutgoing, SmsStore
from sync.config import Endpoint
from sync.store.couchdb.client import CouchClient
from sync.store.schema import db_path
from sync.store.sqlite import SqliteStore

NOW = dt.datetime(2026, 5, 4, 9, 0, tzinfo=dt.UTC)
LEASE = dt.timedelta(seconds=60)
POLICY = RetryPolicy(max_attempts=3, max_offers=2, offer_timeout=dt.timedelta(minutes=10))


@dataclass
class Backend:
    kind: str
    store: SmsStore
    second: SmsStore  # another instance (CouchDB) or the same writer (embedded)


@pytest.fixture(params=["embedded", "couchdb"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "embedded":
        sqlite = SqliteStore(db_path(tmp_path))
        store = EmbeddedSms(sqlite)
        await store.open()
        yield Backend("embedded", store, store)
        await sqlite.close()
        return
    url: str = request.getfixturevalue("couchdb_url")
    prefix: str = request.getfixturevalue("couch_prefix")
    clients = [CouchClient(Endpoint.parse(url)) for _ in range(2)]
    first, second = (CouchSms.for_prefix(c, prefix) for c in clients)
    await first.open()
    await second.open()
    yield Backend("couchdb", first, second)
    for client in clients:
        await client.close()


@pytest.fixture
async def couch(backend: Backend) -> Backend:
    """Leases are the CouchDB adapter's (one embedded writer needs none): the tests that
    take this fixture are parametrised for that adapter only."""
    assert backend.kind == "couchdb"
    return backend


ONLY_COUCHDB = pytest.mark.parametrize("backend", ["couchdb"], indirect=True)


def incoming(n: int, channel: str = "gateway") -> NewIncoming:
    return NewIncoming(
        key=f"key{n}" if channel == "gateway" else f"key{n}-{channel}",
        channel=channel,
        external_id=f"gw-{n}",
        phone=f"+2547000{n:05d}",
        key_ref="k1",
        content=f"sealed {n}".encode(),
        sent_at=None,
        received_at=NOW,
    )


def outgoing(n: int, incoming_id: int | None, kind: str = "reply") -> NewOutgoing:
    return NewOutgoing(
        id=f"key{n}-{kind}",
        channel="gateway",
        phone=f"+2547000{n:05d}",
        kind=kind,
        key_ref="k1",
        content=f"reply {n}".encode(),
        due_at=NOW,
        incoming_id=incoming_id,
        worker="alice",
        place="area-1",
        patient_id=f"P{n}",
    )


def finished(incoming_id: int, outcome: str = "registered") -> Finished:
    return Finished(
        incoming_id, outcome, "P", "alice", "SN1", "area-1", None, (), "k1", b"details", ()
    )


# -- incoming -------------------------------------------------------------------------------


async def test_a_repeated_message_is_stored_once(backend: Backend) -> None:
    assert await backend.store.receive([incoming(1), incoming(2)], NOW) == 2
    assert await backend.second.receive([incoming(1), incoming(3)], NOW) == 1
    assert await backend.store.receive([incoming(1, channel="africastalking")], NOW) == 1
    claimed = await backend.store.claim_incoming("a", NOW, 10)
    assert sorted(m.key for m in claimed) == ["key1", "key1-africastalking", "key2", "key3"]
    assert {m.content for m in claimed} >= {b"sealed 1", b"sealed 2", b"sealed 3"}


async def test_a_finished_message_is_not_taken_up_again_and_its_reply_is_made_once(
    backend: Backend,
) -> None:
    await backend.store.receive([incoming(1)], NOW)
    [message] = await backend.store.claim_incoming("a", NOW, 10)
    reply = outgoing(1, message.id)
    await backend.store.finish([finished(message.id)], [reply], [], NOW)
    # Finishing again (a claimer whose lease ran out, finishing late) changes nothing.
    await backend.store.finish([finished(message.id, "failed")], [reply], [], NOW)
    later = NOW + dt.timedelta(hours=1)
    assert await backend.second.claim_incoming("b", later, 10) == []
    [taken] = await backend.store.take_due("gateway", later, 10, reminders=True)
    assert (taken.id, taken.attempt, taken.content) == ("key1-reply", 1, b"reply 1")
    [row] = await backend.store.incoming_rows(Filters(), None)
    assert (row["state"], row["outcome"]) == ("processed", "registered")
    counts = await backend.store.counts()
    assert counts["incoming"] == [("processed", "registered", 1)]
    assert counts["outgoing"] == [("reply", "forwarded", 1)]


async def test_a_postponed_message_waits_until_its_retry_time(backend: Backend) -> None:
    await backend.store.receive([incoming(1)], NOW)
    [message] = await backend.store.claim_incoming("a", NOW, 10)
    retry_at = NOW + dt.timedelta(seconds=30)
    assert await backend.store.postpone(message.id, retry_at) == 1
    assert await backend.second.claim_incoming("b", NOW + dt.timedelta(seconds=29), 10) == []
    [again] = await backend.second.claim_incoming("b", retry_at, 10)
    assert (again.id, again.attempts) == (message.id, 1)


async def test_patient_ids_are_recorded_once(backend: Backend) -> None:
    await backend.store.receive([incoming(1)], NOW)
    [message] = await backend.store.claim_incoming("a", NOW, 10)
    assert await backend.store.assign_patient_ids({message.id: "10000X"}) == {message.id: "10000X"}
    # A second claimer (after a lease ran out) that allocated too gets the first ID back.
    assert await backend.second.assign_patient_ids({message.id: "10001V"}) == {message.id: "10000X"}
    await backend.store.postpone(message.id, NOW)
    [again] = await backend.store.claim_incoming("a", NOW, 10)
    assert again.patient_id == "10000X"


# -- leases (CouchDB) -------------------------------------------------------------------------


@ONLY_COUCHDB
async def test_a_claimed_message_is_nobody_elses_until_its_lease_runs_out(couch: Backend) -> None:
    await couch.store.receive([incoming(1), incoming(2)], NOW)
    mine = await couch.store.claim_incoming("a", NOW, 10, LEASE)
    assert len(mine) == 2
    assert await couch.second.claim_incoming("b", NOW + LEASE / 2, 10, LEASE) == []
    # Instance "a" died: once the lease has run out, "b" takes the work over.
    taken = await couch.second.claim_incoming("b", NOW + LEASE, 10, LEASE)
    assert sorted(m.id for m in taken) == sorted(m.id for m in mine)
    for message in taken:
        await couch.second.finish(
            [finished(message.id)], [outgoing(message.id, message.id)], [], NOW
        )
    assert await couch.store.claim_incoming("a", NOW + 10 * LEASE, 10, LEASE) == []


@ONLY_COUCHDB
async def test_200_concurrent_claimers_get_disjoint_messages(couch: Backend) -> None:
    await couch.store.receive([incoming(n) for n in range(120)], NOW)
    stores = [couch.store, couch.second]
    batches = await asyncio.gather(
        *(stores[n % 2].claim_incoming(f"c{n}", NOW, 3, LEASE) for n in range(200))
    )
    ids = [m.id for batch in batches for m in batch]
    assert len(ids) == len(set(ids)), "a message was claimed by two claimers"
    rest = await couch.store.claim_incoming("last", NOW, 500, LEASE)
    assert len(ids) + len(rest) == 120
    assert not set(ids) & {m.id for m in rest}


# -- outgoing -------------------------------------------------------------------------------


async def test_200_concurrent_takers_get_each_outgoing_message_once(backend: Backend) -> None:
    await backend.store.finish([], [outgoing(n, None) for n in range(100)], [], NOW)
    stores = [backend.store, backend.second]
    batches = await asyncio.gather(
        *(stores[n % 2].take_due("gateway", NOW, 2, reminders=True) for n in range(200))
    )
    ids = [o.id for batch in batches for o in batch]
    assert len(ids) == len(set(ids)), "an outgoing message was handed over twice"
    rest = await backend.store.take_due("gateway", NOW, 500, reminders=True)
    assert len(ids) + len(rest) == 100


async def test_reminders_wait_for_the_window_and_are_cleared_by_patient(backend: Backend) -> None:
    messages = [outgoing(1, None), outgoing(2, None, "reminder"), outgoing(3, None, "reminder")]
    await backend.store.finish([], messages, ["P2"], NOW)
    [reply] = await backend.store.take_due("gateway", NOW, 10, reminders=False)
    assert reply.id == "key1-reply"
    [reminder] = await backend.store.take_due("gateway", NOW, 10, reminders=True)
    assert reminder.id == "key3-reminder"  # key2's was cleared (its patient delivered)


async def test_status_updates_move_a_message_and_stale_ones_change_nothing(
    backend: Backend,
) -> None:
    await backend.store.finish([], [outgoing(1, None)], [], NOW)
    [first] = await backend.store.take_due("gateway", NOW, 10, reminders=True)
    failed = Event(first.id, 1, OutEvent.FAILED, "no signal")
    assert await backend.store.apply_events([failed], POLICY, NOW) == [OutState.PENDING]
    assert await backend.store.apply_events([failed], POLICY, NOW) == [None]  # attempt 1 is over
    [second] = await backend.second.take_due("gateway", NOW, 10, reminders=True)
    assert second.attempt == 2
    sent = Event(second.id, 2, OutEvent.SENT)
    assert await backend.store.apply_events([sent, sent], POLICY, NOW) == [OutState.SENT, None]
    assert await backend.store.apply_events([Event("nope", 1, OutEvent.SENT)], POLICY, NOW) == [
        None
    ]


async def test_a_silent_gateway_gets_the_message_again_under_the_same_id(
    backend: Backend,
) -> None:
    await backend.store.finish([], [outgoing(1, None)], [], NOW)
    [offered] = await backend.store.take_due("gateway", NOW, 10, reminders=True)
    assert await backend.second.expire_silent(POLICY, NOW + dt.timedelta(minutes=9)) == 0
    later = NOW + POLICY.offer_timeout
    assert await backend.second.expire_silent(POLICY, later) == 1
    assert await backend.store.expire_silent(POLICY, later) == 0  # moved once, not twice
    [again] = await backend.store.take_due("gateway", later, 10, reminders=True)
    assert (again.id, again.attempt) == (offered.id, offered.attempt)
    queues = {q.name: q.depth for q in await backend.store.queues(later)}
    assert queues == {"incoming": 0, "outgoing_due": 0, "outgoing_forwarded": 1}


async def test_a_provider_id_names_its_message(backend: Backend) -> None:
    await backend.store.finish([], [outgoing(1, None)], [], NOW)
    [offered] = await backend.store.take_due("gateway", NOW, 10, reminders=True)
    await backend.store.set_provider_id(offered.id, "ATXid_1")
    assert await backend.second.by_provider_id("ATXid_1") == (offered.id, 1)
    assert await backend.second.by_provider_id("ATXid_2") is None


@ONLY_COUCHDB
async def test_a_provider_id_is_found_by_id_not_by_a_view_that_may_lag(couch: Backend) -> None:
    """On a cluster a view may not list a write of a moment ago: the report of a message
    sent through one instance, arriving through another, must still find it."""
    await couch.store.finish([], [outgoing(1, None)], [], NOW)
    [offered] = await couch.store.take_due("gateway", NOW, 10, reminders=True)
    await couch.store.set_provider_id(offered.id, "ATXid_9")
    second = couch.second
    assert isinstance(second, CouchSms)
    asked: list[str] = []
    second._client.observe = lambda method, where, *_: asked.append(where)
    assert await second.by_provider_id("ATXid_9") == (offered.id, 1)
    second._client.observe = None
    assert asked and not any("_view" in where for where in asked), asked


@ONLY_COUCHDB
async def test_a_provider_id_without_its_pointer_is_found_by_the_view(couch: Backend) -> None:
    """Messages copied by ``fieldsync migrate`` carry the provider id but no pointer."""
    await couch.store.finish([], [outgoing(1, None)], [], NOW)
    [offered] = await couch.store.take_due("gateway", NOW, 10, reminders=True)
    store = couch.store
    assert isinstance(store, CouchSms)
    await store._update(f"out:{offered.id}", lambda doc: {**doc, "provider_id": "ATXold"})
    assert await couch.second.by_provider_id("ATXold") == (offered.id, 1)


def _reminders_view_lags(store: SmsStore) -> list[str]:
    """``store``'s ``reminders`` view answers no rows, as a cluster node that has not had
    the writes of a moment ago answers; the requests it made are listed."""
    assert isinstance(store, CouchSms)
    client = store._client
    json = client.json
    asked: list[str] = []

    async def lagging(method: str, where: str, **kw: object) -> object:
        asked.append(where)
        if "/_view/reminders" in where:
            return {"total_rows": 0, "offset": 0, "rows": []}
        return await json(method, where, **kw)  # type: ignore[arg-type]

    client.json = lagging  # type: ignore[method-assign]
    return asked


async def _state_of(store: SmsStore, message_id: str) -> str:
    assert isinstance(store, CouchSms)
    found = await store._client.leaves_by_id(store._db, [f"out:{message_id}"])
    return str(found[f"out:{message_id}"][0]["state"])


@ONLY_COUCHDB
async def test_a_reminder_made_a_moment_ago_is_cleared_through_another_instance(
    couch: Backend,
) -> None:
    """The registration that made a reminder and the delivery that clears it may come a
    moment apart through two instances: the reminder is found by its patient's pointer (a
    read by id), not only by a view, and does not go out."""
    await couch.store.finish([], [outgoing(2, None, "reminder")], [], NOW)
    asked = _reminders_view_lags(couch.second)
    await couch.second.finish([], [], ["P2"], NOW)
    assert any("/_view/reminders" in where for where in asked)  # the view was asked too
    assert await _state_of(couch.second, "key2-reminder") == OutState.CLEARED.value
    assert await _named("P2", couch.second) == set()  # cleared: named no more
    # A reminder of a later registration is named, and cleared by the next delivery.
    later = replace(outgoing(2, None, "reminder"), id="key2-later-reminder")
    await couch.store.finish([], [later], [], NOW)
    assert await _named("P2", couch.second) == {"key2-later-reminder"}
    await couch.second.finish([], [], ["P2"], NOW)
    assert await _state_of(couch.second, "key2-later-reminder") == OutState.CLEARED.value


async def _named(patient_id: str, store: SmsStore) -> set[str]:
    """The reminders a patient's pointer names."""
    assert isinstance(store, CouchSms)
    pointer = shape.reminders_doc_id(patient_id)
    found = await store._client.leaves_by_id(store._db, [pointer])
    return shape.reminder_ids(found.get(pointer, []))


@ONLY_COUCHDB
async def test_two_instances_adding_reminders_of_one_patient_at_once_keep_both(
    couch: Backend,
) -> None:
    first = outgoing(4, None, "reminder")
    others = [NewOutgoing(**{**vars(first), "id": f"key4-{n}-reminder"}) for n in range(1, 6)]
    await asyncio.gather(
        couch.store.finish([], [first], [], NOW),
        *(
            (couch.second if n % 2 else couch.store).finish([], [other], [], NOW)
            for n, other in enumerate(others)
        ),
    )
    _reminders_view_lags(couch.second)
    await couch.second.finish([], [], ["P4"], NOW)
    for message in [first, *others]:
        assert await _state_of(couch.second, message.id) == OutState.CLEARED.value


async def test_languages_and_notices(backend: Backend) -> None:
    await backend.store.set_language("alice", "sw")
    await backend.second.set_language("alice", "en")
    await backend.store.set_language("bob", "sw")
    assert await backend.store.languages(["alice", "bob", "carol"]) == {"alice": "en", "bob": "sw"}
    await backend.store.finish([], [outgoing(7, None, "notice")], [], NOW)
    since = NOW - dt.timedelta(days=1)
    assert await backend.second.noticed([outgoing(7, None).phone, "+1"], since) == {
        outgoing(7, None).phone
    }


async def test_the_listing_shows_a_message_with_what_it_caused(backend: Backend) -> None:
    await backend.store.receive([incoming(1), incoming(2)], NOW)
    batch = await backend.store.claim_incoming("a", NOW, 10)
    first = min(batch, key=lambda m: m.id)
    await backend.store.finish(
        [finished(first.id)], [outgoing(1, first.id), outgoing(1, first.id, "reminder")], [], NOW
    )
    row = await backend.second.incoming_one(first.id, frozenset({"area-1"}))
    assert row is not None and row["outcome"] == "registered" and row["content"] == b"sealed 1"
    assert await backend.second.incoming_one(first.id, frozenset({"area-9"})) is None
    caused = await backend.second.caused_by(first.id)
    assert {r["id"] for r in caused} == {"key1-reply", "key1-reminder"}
    rows = await backend.second.incoming_rows(Filters(outcome="registered"), None)
    assert [r["id"] for r in rows] == [first.id]
    out = await backend.second.outgoing_rows(Filters(kind="reminder"), None, by_seq=True)
    assert [r["id"] for r in out] == ["key1-reminder"]
