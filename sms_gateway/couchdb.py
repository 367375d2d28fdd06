"""The CouchDB adapter of the SMS port (sms_gateway.ports): safe with many instances.

One database, ``<prefix>sms``, holds these kinds of document::

    in:<digest of channel + gateway id>   a received message: {"type": "in", "id": N, "key",
                                          "channel", "external_id", "phone", "key_ref",
                                          "content" (sealed, base64), "state", "due",
                                          "lease": {"owner", "until", "token"} | null, ...}
    out:<outgoing id>                     a reply, reminder or notice: {"type": "out", "seq": N,
                                          "state", "attempt", "offers", "offered_at", ...}
    worker:<name>                         {"type": "worker", "language"}
    pid:<digest of a provider's id>       {"type": "pid", "message"}: the message it names
    rem:<digest of a patient id>          {"type": "rem", "reminders": [outgoing id, ...]}:
                                          the patient's reminders not yet cleared

and the design document ``_design/sms`` (views: what is due, by state, by id);
the pointers are read by id, a quorum read, where a view on a cluster may not list a
write of a moment ago (a delivery report, a reminder to clear);
their shapes and views are written down in :mod:`sms_gateway.couchdb_docs`.

**Exactly once across instances.**  Every change of a message is a ``PUT``
against the ``_rev`` it was read at, so of two instances changing one message
at once, one gets 409 and re-reads (or, when it was claiming, leaves the
message to the other).  A 202 (fewer than a quorum of copies took the write,
so a rival write through another node may also have landed) is read back: a
claim counts only if it is the message's one live leaf.

- A received message is created without a ``_rev`` under an id derived from
  its channel and gateway id: a repeat, on any instance, is a 409 and changes
  nothing.
- Processing claims a message by writing a *lease* (owner, expiry) on it; its
  ``due`` moves to the expiry, so the ``todo`` view offers it to nobody else
  until then.  If the instance dies, the lease runs out and the next instance
  to look claims it.  Finishing creates the outgoing messages first (ids derived
  from the message: a second creation is a 409, ignored), then marks the
  message processed only if it is still ``stored``.  A message whose lease
  ran out while its first claimer was still working is finished by both, and
  the second finish changes nothing.
- Handing outgoing messages over marks each ``forwarded`` with ``_rev`` before
  it leaves; a 409 means another instance's poll took it.

Numbers (the ``id`` of received messages, the ``seq`` of outgoing ones, which
the supervisor pages use as cursors) are microseconds since 2020 times 16 plus
4 random bits: increasing within one instance, unique across instances unless
two pick the same microsecond and bits, which only mixes the order of two rows
on a page.  The supervisor listing filters rows here rather than by an index:
its cost grows with the messages scanned (a limit of this adapter).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

from sms_gateway import couchdb_docs as shape
from sms_gateway import listing, sealing
from sms_gateway.couchdb_docs import Doc
from sms_gateway.listing import Filters
from sms_gateway.outgoing import OutEvent, OutState, RetryPolicy, step
from sms_gateway.ports import (
    LEASE,
    Event,
    Finished,
    NewIncoming,
    NewOutgoing,
    Offered,
    Queue,
    Row,
    StoredIncoming,
    iso,
)
from sync.errors import Conflict, PreconditionFailed, StoreError, StoreUnavailable
from sync.store.couchdb.client import CouchClient, path
from sync.store.couchdb.lease import Lease, claim_write, once_per_tick

DB_NAME = sealing.COUCH_DB  # "sms", after the deployment's prefix
DESIGN = "_design/sms"
_TRIES = 30
TICK_LEASE = "sms-scheduler"  # in <prefix>leases: who does the scheduler's work
_EPOCH_US = 1_577_836_800_000_000  # 2020-01-01 in microseconds since 1970
_PAGE = 200  # rows read at a time when the listing filters rows itself


class CouchSms:
    def __init__(self, client: CouchClient, db: str, prefix: str = "") -> None:
        self._client = client
        self._db = db
        self._prefix = prefix  # of <prefix>leases (the scheduler's lease)
        self._ticks: dict[tuple[str, float], Lease] = {}
        self._last_number = 0
        self._docs: dict[int, str] = {}  # incoming id -> document id, for messages we claimed
        self._owner: str | None = None  # who claimed them: recorded as ``processed_by``

    @classmethod
    def for_prefix(cls, client: CouchClient, prefix: str) -> CouchSms:
        return cls(client, prefix + DB_NAME, prefix)

    async def open(self) -> None:
        """Create the database and the design document (another instance may have made them)."""
        with contextlib.suppress(PreconditionFailed):
            await self._client.json("PUT", path(self._db))
        views: dict[str, Any] = {
            name: {"map": f"function (doc) {{ {body} }}"} for name, body in shape.VIEWS.items()
        }
        views["counts"] = {"map": f"function (doc) {{ {shape.COUNTS} }}", "reduce": "_count"}
        design = {"_id": DESIGN, "language": "javascript", "views": views}
        for _ in range(_TRIES):
            current = await self._winner(DESIGN)
            if current is not None and current.get("views") == views:
                return
            if current is not None:
                design["_rev"] = current["_rev"]
            try:
                await self._client.put_status(self._path(DESIGN), design)
                return
            except Conflict:  # another instance wrote it meanwhile: compare again
                continue
        raise StoreUnavailable(f"Could not write {DESIGN} in CouchDB database {self._db}.")

    # -- incoming -------------------------------------------------------------------------
    async def receive(self, messages: Sequence[NewIncoming], now: dt.datetime) -> int:
        docs = [self._incoming_doc(m, now) for m in messages]
        if not docs:
            return 0
        unique = list({d["_id"]: d for d in docs}.values())  # a repeat inside one poll
        answer = await self._client.json("POST", self._path("_bulk_docs"), body={"docs": unique})
        return sum(1 for result in answer if "error" not in shape.checked(result, "message"))

    def _incoming_doc(self, m: NewIncoming, now: dt.datetime) -> Doc:
        stored = iso(now)
        return {
            "_id": shape.incoming_doc_id(m.channel, m.external_id),
            "type": "in",
            "id": self._number(),
            "key": m.key,
            "channel": m.channel,
            "external_id": m.external_id,
            "phone": m.phone,
            "key_ref": m.key_ref,
            "content": shape.b64(m.content),
            "sent_at": None if m.sent_at is None else iso(m.sent_at),
            "received_at": iso(m.received_at),
            "stored_at": stored,
            "state": "stored",
            "attempts": 0,
            "retry_at": None,
            "due": stored,
            "lease": None,
            "patient_id": None,
        }

    async def claim_incoming(
        self, owner: str, now: dt.datetime, limit: int, lease: dt.timedelta = LEASE
    ) -> list[StoredIncoming]:
        params = {"endkey": shape.key(iso(now)), "include_docs": "true", "limit": str(limit)}
        rows = await self._view("todo", params)
        # A view row may be older than the document it brings (an index catching up): the
        # document itself must still be claimable, or it is someone else's by now.
        candidates = [
            doc for doc in shape.docs(rows) if doc["state"] == "stored" and doc["due"] <= iso(now)
        ]
        until = iso(now + lease)
        self._owner = owner
        claimed = []
        for doc in candidates:
            token = uuid.uuid4().hex
            body = {**doc, "lease": {"owner": owner, "until": until}, "due": until, "claim": token}
            if await self._claim(body):
                self._docs[int(doc["id"])] = doc["_id"]
                claimed.append(shape.stored(body))
        return claimed

    async def assign_patient_ids(self, assigned: dict[int, str]) -> dict[int, str]:
        carried = {}
        for incoming_id, patient_id in assigned.items():
            seen: list[str] = []

            def assign(doc: Doc, pid: str = patient_id, seen: list[str] = seen) -> Doc | None:
                seen[:] = [doc["patient_id"]] if doc.get("patient_id") else []
                return None if seen else {**doc, "patient_id": pid}

            written = await self._update(await self._incoming_id(incoming_id), assign)
            found = [written["patient_id"]] if written is not None else seen
            if found:
                carried[incoming_id] = str(found[0])
        return carried

    async def postpone(self, incoming_id: int, retry_at: dt.datetime) -> int:
        def count(doc: Doc) -> Doc:
            at = iso(retry_at)
            attempts = int(doc["attempts"]) + 1
            return {**doc, "attempts": attempts, "retry_at": at, "due": at, "lease": None}

        doc = await self._update(await self._incoming_id(incoming_id), count)
        return 0 if doc is None else int(doc["attempts"])

    async def finish(
        self,
        done: Sequence[Finished],
        outgoing: Sequence[NewOutgoing],
        clear_reminders_of: Iterable[str],
        now: dt.datetime,
    ) -> None:
        # Replies first, then the outcome: a crash in between leaves the message stored,
        # and the next claimer's replies are the same documents (a 409 each, ignored).
        await self._create_outgoing(outgoing, now)
        for patient_id in clear_reminders_of:
            await self._clear_reminders(patient_id, now)
        for finished in done:
            await self._update(
                await self._incoming_id(finished.incoming_id),
                partial(shape.processed, f=finished, now=now, by=self._owner),
            )
            self._docs.pop(finished.incoming_id, None)  # done with it: the map stays small

    async def _create_outgoing(self, messages: Sequence[NewOutgoing], now: dt.datetime) -> None:
        if not messages:
            return
        patients: dict[str, set[str]] = {}
        for m in messages:
            if m.kind == "reminder" and m.patient_id:
                patients.setdefault(m.patient_id, set()).add(m.id)
        for patient_id, ids in sorted(patients.items()):  # named before they exist
            await self._point_reminders(patient_id, ids.union)
        docs = [self._outgoing_doc(m, now) for m in messages]
        answer = await self._client.json("POST", self._path("_bulk_docs"), body={"docs": docs})
        for result in answer:
            shape.checked(result, "outgoing message")

    def _outgoing_doc(self, m: NewOutgoing, now: dt.datetime) -> Doc:
        return {
            "_id": f"out:{m.id}",
            "type": "out",
            "seq": self._number(),
            "id": m.id,
            "channel": m.channel,
            "phone": m.phone,
            "kind": m.kind,
            "key_ref": m.key_ref,
            "content": shape.b64(m.content),
            "state": OutState.PENDING.value,
            "due_at": iso(m.due_at),
            "attempt": 1,
            "offers": 0,
            "offered_at": None,
            "provider_id": None,
            "reason": None,
            "incoming_id": m.incoming_id,
            "worker": m.worker,
            "place": m.place,
            "patient_id": m.patient_id,
            "created_at": iso(now),
            "updated_at": iso(now),
        }

    async def _clear_reminders(self, patient_id: str, now: dt.datetime) -> None:
        """Every pending reminder of the patient is cleared: those the pointer names (a
        reminder made a moment ago, which the view may not list yet) and those the view
        lists (copied by ``fieldsync migrate``, without a pointer)."""
        pointer = shape.reminders_doc_id(patient_id)
        named = shape.reminder_ids(
            (await self._client.leaves_by_id(self._db, [pointer])).get(pointer, [])
        )
        rows = await self._view("reminders", {"key": shape.key(patient_id)})
        listed = {str(row["id"])[len("out:") :] for row in rows}

        def clear(doc: Doc) -> Doc | None:
            if doc.get("kind") != "reminder" or doc.get("state") != OutState.PENDING.value:
                return None
            return {**doc, "state": OutState.CLEARED.value, "updated_at": iso(now)}

        for reminder_id in sorted(named | listed):
            await self._update(f"out:{reminder_id}", clear)
        if named:  # pending no more: the pointer keeps only reminders added since
            await self._point_reminders(patient_id, lambda ids: ids - named)

    async def _point_reminders(
        self, patient_id: str, change: Callable[[set[str]], set[str]]
    ) -> None:
        """Change the reminders a patient's pointer names: written over its winner with
        what every leaf named, then the other leaves go (409: read again)."""
        doc_id = shape.reminders_doc_id(patient_id)
        for _ in range(_TRIES):
            leaves = (await self._client.leaves_by_id(self._db, [doc_id])).get(doc_id, [])
            named = shape.reminder_ids(leaves)
            wanted = change(named)
            if leaves and len(leaves) == 1 and wanted == named:
                return
            body: Doc = {"_id": doc_id, "type": "rem", "reminders": sorted(wanted)}
            if leaves:
                body["_rev"] = leaves[0]["_rev"]
            try:
                await self._client.put_status(self._path(doc_id), body)
            except Conflict:
                await asyncio.sleep(random.uniform(0, 0.02))  # let the rival finish
                continue
            await self._client.delete_leaves(self._db, doc_id, leaves[1:])
            return
        raise StoreUnavailable(f"Could not update {doc_id} in {self._db}: too many rival writes.")

    async def noticed(self, phones: Iterable[str], since: dt.datetime) -> set[str]:
        found = set()
        for phone in set(phones):
            params = {"startkey": shape.key([phone, iso(since)]), "endkey": shape.key([phone, {}])}
            if await self._view("notices", {**params, "limit": "1"}):
                found.add(phone)
        return found

    # -- outgoing -------------------------------------------------------------------------
    async def take_due(
        self, channel: str, now: dt.datetime, limit: int, reminders: bool
    ) -> list[Offered]:
        candidates: list[Doc] = []
        for reminder in (False, True) if reminders else (False,):
            params = {
                "startkey": shape.key([channel, reminder, ""]),
                "endkey": shape.key([channel, reminder, iso(now)]),
                "include_docs": "true",
                "limit": str(limit),
            }
            candidates += shape.docs(await self._view("due", params))
        candidates = [doc for doc in candidates if shape.due(doc, channel, iso(now), reminders)]
        candidates.sort(key=lambda d: (d["due_at"], d["id"]))
        offered: list[Offered] = []
        for doc in candidates:
            if len(offered) >= limit:
                break
            token = uuid.uuid4().hex
            body = {
                **doc,
                "state": OutState.FORWARDED.value,
                "offers": int(doc["offers"]) + 1,
                "offered_at": iso(now),
                "updated_at": iso(now),
                "claim": token,
            }
            if await self._claim(body):
                content = shape.unb64(doc["content"])
                offered.append(
                    Offered(doc["id"], int(doc["attempt"]), doc["phone"], doc["key_ref"], content)
                )
        return offered

    async def apply_events(
        self, events: Sequence[Event], policy: RetryPolicy, now: dt.datetime
    ) -> list[OutState | None]:
        moved = []
        for event in events:
            moved.append(await self._move(event, policy, now))
        return moved

    async def _move(
        self,
        event: Event,
        policy: RetryPolicy,
        now: dt.datetime,
        still: Callable[[Doc], bool] = lambda doc: True,
    ) -> OutState | None:
        outcome: list[OutState] = []

        def change(doc: Doc) -> Doc | None:
            outcome.clear()
            if not still(doc) or (event.attempt is not None and event.attempt != doc["attempt"]):
                return None  # another attempt, or no longer what we were asked to move
            found = step(OutState(doc["state"]), event.event, doc["attempt"], doc["offers"], policy)
            if found is None:
                return None
            reason = (
                f"{found.reason} (last: {event.reason})"
                if found.reason and event.reason
                else found.reason or event.reason or doc.get("reason")
            )
            outcome.append(found.state)
            return {
                **doc,
                "state": found.state.value,
                "attempt": int(doc["attempt"]) + (1 if found.new_attempt else 0),
                "offers": 0 if found.new_attempt else doc["offers"],
                "reason": reason,
                "updated_at": iso(now),
            }

        written = await self._update(f"out:{event.message_id}", change)
        return outcome[0] if written is not None and outcome else None

    async def claim_tick(self, owner: str, seconds: float) -> bool:
        lease = self._ticks.get((owner, seconds))
        if lease is None:
            lease = Lease(self._client, self._prefix, TICK_LEASE, owner, seconds, "SMS scheduler")
            self._ticks = {(owner, seconds): lease}
        return await once_per_tick(lease)

    async def expire_silent(self, policy: RetryPolicy, now: dt.datetime) -> int:
        cutoff = iso(now - policy.offer_timeout)
        rows = await self._view("forwarded", {"endkey": shape.key(cutoff)})

        def silent(doc: Doc) -> bool:  # not offered again meanwhile (by another instance)
            return doc.get("state") == "forwarded" and str(doc.get("offered_at")) <= cutoff

        moved = 0
        for row in rows:
            event = Event(row["id"].removeprefix("out:"), None, OutEvent.TIMEOUT)
            moved += await self._move(event, policy, now, silent) is not None
        return moved

    async def set_provider_id(self, message_id: str, provider_id: str) -> None:
        def point(doc: Doc) -> Doc:
            return {**doc, "type": "pid", "message": message_id}

        await self._update(shape.provider_doc_id(provider_id), point, create=True)
        await self._update(f"out:{message_id}", lambda doc: {**doc, "provider_id": provider_id})

    async def by_provider_id(self, provider_id: str) -> tuple[str, int] | None:
        """By the pointer document (read by id); messages copied by ``fieldsync migrate``
        have none, and are found by the ``provider`` view."""
        pointer = await self._winner(shape.provider_doc_id(provider_id))
        if pointer is not None:
            out = await self._winner(f"out:{pointer['message']}")
            if out is not None and out.get("provider_id") == provider_id:
                return str(out["id"]), int(out["attempt"])
        params = {"key": shape.key(provider_id), "include_docs": "true", "limit": "1"}
        rows = [row["doc"] for row in await self._view("provider", params) if row.get("doc")]
        return (rows[0]["id"], int(rows[0]["attempt"])) if rows else None

    # -- workers ----------------------------------------------------------------------------
    async def set_language(self, worker: str, language: str) -> None:
        def choose(doc: Doc) -> Doc:
            return {**doc, "type": "worker", "worker": worker, "language": language}

        await self._update(f"worker:{worker}", choose, create=True)

    async def languages(self, workers: Iterable[str]) -> dict[str, str]:
        names = sorted(set(workers))
        if not names:
            return {}
        found = await self._client.leaves_by_id(self._db, [f"worker:{n}" for n in names])
        return {leaves[0]["worker"]: leaves[0]["language"] for leaves in found.values()}

    # -- supervisors and metrics ---------------------------------------------------------
    async def queues(self, moment: dt.datetime) -> list[Queue]:
        stored = [row["value"] for row in await self._view("todo", {})]
        due = [
            row["key"] for row in await self._view("pending", {"endkey": shape.key(iso(moment))})
        ]
        forwarded = [row["key"] for row in await self._view("forwarded", {})]
        return [
            shape.queue("incoming", stored),
            shape.queue("outgoing_due", due),
            shape.queue("outgoing_forwarded", forwarded),
        ]

    async def counts(self) -> dict[str, list[tuple[str, str, int]]]:
        rows = await self._view("counts", {"group": "true"})
        found: dict[str, list[tuple[str, str, int]]] = {"incoming": [], "outgoing": []}
        for row in rows:
            box, first, second = row["key"]
            found[box].append((str(first), str(second), int(row["value"])))
        return found

    async def incoming_rows(self, filters: Filters, places: frozenset[str] | None) -> list[Row]:
        forward = filters.after is not None
        found = []
        async for doc in self._scan("by_num", descending=not forward):
            row = shape.incoming_row(doc)
            if listing.matches(row, filters, places, incoming=True):
                found.append(row)
                if len(found) >= filters.limit:
                    break
        return found[::-1] if forward else found

    async def outgoing_rows(
        self, filters: Filters, places: frozenset[str] | None, by_seq: bool = False
    ) -> list[Row]:
        forward = by_seq and filters.after is not None
        if not by_seq:
            filters = Filters(**{**filters.__dict__, "before": None, "after": None})
        found = []
        async for doc in self._scan("out_seq", descending=not forward):
            row = {"seq": doc["seq"], **shape.outgoing_row(doc)}
            if listing.matches(row, filters, places, incoming=False):
                found.append(row)
                if len(found) >= filters.limit:
                    break
        return found[::-1] if forward else found

    async def incoming_one(self, message_id: int, places: frozenset[str] | None) -> Row | None:
        params = {"key": shape.key(message_id), "include_docs": "true"}
        for row in await self._view("by_num", params):
            found = shape.incoming_row(row["doc"])
            if listing.matches({**found, "seq": 0}, Filters(), places, incoming=True):
                found.pop("seq")
                return found
        return None

    async def caused_by(self, message_id: int) -> list[Row]:
        params = {
            "startkey": shape.key([message_id]),
            "endkey": shape.key([message_id, {}]),
            "include_docs": "true",
        }
        return [shape.outgoing_row(row["doc"]) for row in await self._view("caused", params)]

    # -- CouchDB ------------------------------------------------------------------------
    def _path(self, *segments: str) -> str:
        if segments and segments[0].startswith("_design/"):
            return path(self._db, "_design", segments[0].removeprefix("_design/"))
        return path(self._db, *segments)

    def _number(self) -> int:
        """Increasing within this process; see the module's docstring across instances."""
        now = (time.time_ns() // 1000 - _EPOCH_US) * 16 + random.randrange(16)
        self._last_number = max(now, self._last_number + 1)
        return self._last_number

    async def _view(self, name: str, params: Mapping[str, str]) -> list[Doc]:
        where = path(self._db, "_design", "sms", "_view", name)
        answer = await self._client.json("GET", where, params=dict(params))
        return list(answer.get("rows", []))

    async def _scan(self, view: str, descending: bool) -> AsyncIterator[Doc]:
        """Every document of ``view``, in its order (or reversed), a page at a time."""
        params: dict[str, str] = {"include_docs": "true", "limit": str(_PAGE + 1)}
        if descending:
            params["descending"] = "true"
        while True:
            rows = await self._view(view, params)
            for row in rows[:_PAGE]:
                if row.get("doc"):
                    yield row["doc"]
            if len(rows) <= _PAGE:
                return
            params.update(startkey=shape.key(rows[_PAGE]["key"]), startkey_docid=rows[_PAGE]["id"])

    async def _winner(self, doc_id: str) -> Doc | None:
        found = await self._client.leaves_by_id(self._db, [doc_id])
        leaves = found.get(doc_id, [])
        return leaves[0] if leaves else None

    async def _incoming_id(self, incoming_id: int) -> str:
        known = self._docs.get(incoming_id)
        if known is not None:
            return known
        rows = await self._view("by_num", {"key": shape.key(incoming_id)})
        if not rows:
            raise StoreError(f"No received SMS with id {incoming_id} in {self._db}.")
        return str(rows[0]["id"])

    async def _claim(self, body: Doc) -> bool:
        """Write ``body`` (with a fresh ``claim`` token) against its ``_rev``: True if this
        write is the one that holds (:func:`sync.store.couchdb.lease.claim_write`)."""
        return await claim_write(self._client, self._db, body)

    async def _update(
        self, doc_id: str, change: Callable[[Doc], Doc | None], create: bool = False
    ) -> Doc | None:
        """Apply ``change`` to the current document until a write holds (409: read again);
        the document written, or None when ``change`` changes nothing or it is missing."""
        for _ in range(_TRIES):
            current = await self._winner(doc_id)
            if current is None and not create:
                return None
            changed = change(dict(current) if current is not None else {"_id": doc_id})
            if changed is None:
                return None
            try:
                await self._client.put_status(self._path(doc_id), changed)
            except Conflict:
                await asyncio.sleep(random.uniform(0, 0.02))  # let the rival finish
                continue
            return changed
        raise StoreUnavailable(f"Could not update {doc_id} in {self._db}: too many rival writes.")
