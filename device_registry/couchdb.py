"""The CouchDB adapter of the device port (device_registry.ports): safe with many instances.

Documents: :mod:`device_registry.couchdb_docs`.  How each guarantee of the port
holds when several instances share the database:

- **Changes** read the device document, ask :mod:`device_registry.inventory`
  what the change does, and write it against the ``_rev`` they read; a 409
  (another instance or a last-sync update wrote first) reads again and decides
  again, so no change is made on a stale device.
- **IMEIs and numbers** are claimed before the device is written: a claim
  document named by the value, created without ``_rev`` (409: someone holds
  it).  A claim whose device no longer has the value (an edit, a phone that
  left service, an add that failed) is stale and taken over against its
  ``_rev``; a claim younger than ``CLAIM_GRACE`` whose device does not exist
  yet is an add in progress, and holds.  A serial is claimed by creating its
  device document without ``_rev``.
- **Codes** are redeemed by writing ``used`` into the code document against the
  ``_rev`` read: of any number of redemptions at once only one write wins, the
  others read again and find it used.  A 202 (not a quorum) is confirmed by
  reading every leaf back: the redemption counts only if its write is the one
  leaf.
- **Revocation** is a field of the device document (``token``: the one live
  token's hash), written with the change that revokes; :meth:`binding` reads
  the token and device documents in one ``_bulk_get`` (the token's serial,
  which never changes, is remembered to name the device).  A live binding is
  answered again for ``recent_seconds`` (``FIELDSYNC_DEVICES_CACHE_SECONDS``),
  counted from when its read was *sent*; so every change that can refuse a
  phone (edit, assign, mark, enrol) waits that long after its write before it
  returns: once it is answered, every instance's kept binding was read after
  the write, and the phone's next request through any instance is refused
  (docs/adr/0006).  Every instance must have the same bound.
- **History** entries and refused attempts are documents of their own, named
  uniquely: written by any number of instances, none is lost.
- **Audit**: an admin change's entry is recorded right after its write and made
  safe before the answer goes out (the audit trail's flush).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from device_registry import codes, couchdb_docs, inventory
from device_registry.couchdb_base import DevicesDatabase
from device_registry.couchdb_docs import Doc, claim_id, code_id, device_id, gone_id, token_id
from device_registry.dump import TABLES
from device_registry.enrolment import (
    CODE_LIFETIME,
    Enrolment,
    EnrolmentRefused,
    IssuedCode,
    NotAssigned,
    RefusedAttempt,
    StoredCode,
    code_key,
    stamp,
)
from device_registry.inventory import Change
from device_registry.lookup import GONE, number
from device_registry.model import Device, DeviceOwner, HistoryEntry, NewDevice
from device_registry.ports import Bound, DeviceKey, Heard, Note
from device_registry.status import ACTIVE, DeviceStatus
from device_registry.verdict import TokenBinding, worth_keeping
from sync.errors import Conflict, NotFound, StoreUnavailable
from sync.people_store.ports import AccountStore
from sync.recent import RecentLookups
from sync.scopes import Scope, User
from sync.store.couchdb.client import CouchClient, path

CLAIM_GRACE = 120.0  # seconds a claim without its device yet counts as an add in progress
_TRIES = 50
_SERIALS_KEPT = 100_000  # token hash -> serial, remembered (a token's device never changes)
_REFUSALS_READ = 5_000  # newest refused attempts looked through for one scope's
_BINDING_FIELDS = ("token", "status", "worker")  # what a binding reads of a device document


class CouchDevices(DevicesDatabase):
    def __init__(
        self,
        client: CouchClient,
        db: str,
        accounts: AccountStore,
        recent_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        super().__init__(client, db)
        self._accounts = accounts
        self._serials: OrderedDict[str, str] = OrderedDict()
        self._read_docs: OrderedDict[str, Doc] = OrderedDict()  # serial -> device, last read
        # Live bindings read a moment ago (module docstring): forgotten after every change here.
        self._recent: RecentLookups[Bound | None] = RecentLookups(recent_seconds, clock=clock)
        self._sleep = sleep

    @classmethod
    def for_prefix(
        cls, client: CouchClient, prefix: str, accounts: AccountStore, recent_seconds: float = 0.0
    ) -> CouchDevices:
        return cls(client, prefix + couchdb_docs.DB_NAME, accounts, recent_seconds)

    async def _wait_out(self) -> None:
        """After a change that can refuse a phone: forget what is kept here, and return only
        once every instance's kept binding must have been read after the change."""
        self._recent.forget()
        if self._recent.seconds > 0:
            await self._sleep(self._recent.seconds)

    # -- reading ---------------------------------------------------------------------------
    async def get(self, serial: str) -> Device | None:
        doc = await self._doc(device_id(serial))
        return None if doc is None else await self._device(doc)

    async def list_all(self) -> list[Device]:
        docs = await self._range("device:")
        users = {u.name: u for u in await self._accounts.list_users()}
        devices = [couchdb_docs.device_of(d, users.get(d.get("worker") or "")) for d in docs]
        return sorted(devices, key=lambda d: d.serial)

    async def history(self, serial: str) -> list[HistoryEntry]:
        docs = await self._range(f"history:{serial.strip().upper()}:")
        return [couchdb_docs.history_of(d) for d in reversed(docs)]

    async def owner_of_phone(self, phone: str) -> DeviceOwner | None:
        found = number(phone)
        if found is None:
            return None
        claim = await self._doc(claim_id("phone", found))
        doc = None if claim is None else await self._assigned(device_id(str(claim["serial"])))
        if doc is None:
            doc = await self._latest_gone(found)
        if doc is None or doc.get("phone") != found or not doc.get("worker"):
            return None
        user = await self._accounts.get_user(str(doc["worker"]))
        if user is None:
            return None
        return DeviceOwner(str(doc["serial"]), user.name, user.places, str(doc["status"]))

    async def _assigned(self, doc_id: str) -> Doc | None:
        """The device, if every live leaf has it assigned to one worker on one number: a
        fork a writer has not settled (a revocation on one side) answers as the
        strictest side would, never as CouchDB's winner alone."""
        leaves = await self._leaves(doc_id)
        held = {(leaf.get("status"), leaf.get("worker"), leaf.get("phone")) for leaf in leaves}
        if len(held) != 1 or leaves[0].get("status") != DeviceStatus.ASSIGNED.value:
            return None
        return leaves[0]

    async def _latest_gone(self, phone: str) -> Doc | None:
        """The number's latest lost or stolen phone (``gone:<number>`` names it)."""
        mark = await self._doc(gone_id(phone))
        doc = None if mark is None else await self._doc(device_id(str(mark["serial"])))
        return doc if doc is not None and doc.get("status") in GONE else None

    async def _mark_gone(self, after: Doc) -> None:
        """Name the phone as its number's latest lost or stolen one (a write per loss)."""
        body: Doc = {"_id": gone_id(str(after["phone"])), "type": "gone", "serial": after["serial"]}
        for _ in range(_TRIES):
            leaves = await self._leaves(body["_id"])
            if leaves:
                body["_rev"] = leaves[0]["_rev"]
            try:
                await self._put(body)
            except Conflict:
                continue
            return

    # -- changing the inventory ------------------------------------------------------------
    async def add(
        self, new: NewDevice, actor: str, scope: Scope, worker: str | None, note: Note | None
    ) -> Device:
        if await self._doc(device_id(new.serial)) is not None:
            raise inventory.serial_taken(new.serial)
        inventory.check_new(new, await self._accounts.place_tree(), scope)
        device, entry = inventory.added(new, actor)
        body, entries = couchdb_docs.device_doc(device), [entry]
        if worker is not None:  # assigned in the same write: never left half done
            user = inventory.check_worker(await self._accounts.get_user(worker), worker, scope)
            assigned = inventory.plan_assign(device, user, actor)
            body.update(assigned.fields)
            entries += [assigned.entry] if assigned.entry is not None else []
        await self._claim_all(new, scope, body)
        for each in entries:
            await self._create(couchdb_docs.history_doc(new.serial, each))
        self._noted(note)
        return await self._device(body)

    async def _claim_all(self, new: NewDevice, scope: Scope, body: Doc) -> None:
        """Claim the new device's IMEIs and number, then create it; or let go and Conflict."""
        claims = [("imei", v) for v in (new.imei, new.imei2) if v]
        claims += [("phone", new.phone)] if new.phone else []
        taken: list[tuple[str, str]] = []
        try:
            for kind, value in claims:
                await self._claim(kind, value, new.serial, scope)
                taken.append((kind, value))
            try:
                await self._create(body)
            except Conflict as exc:  # the same serial, added meanwhile through another instance
                raise inventory.serial_taken(new.serial) from exc
        except Conflict:
            for kind, value in taken:
                await self._release(kind, value, new.serial)
            raise

    async def edit(
        self,
        serial: str,
        changes: Mapping[str, str | None],
        actor: str,
        scope: Scope,
        note: Note | None,
    ) -> Device:
        async def plan(device: Device) -> Change:
            tree = await self._accounts.place_tree()
            return inventory.plan_edit(device, changes, actor, scope, tree)

        device = await self._change(serial, scope, plan)
        self._noted(note)
        return device

    async def assign(
        self, serial: str, worker: str, actor: str, scope: Scope, reason: str, note: Note | None
    ) -> Device:
        device = await self._change(serial, scope, self._plan_assign(worker, actor, scope, reason))
        self._noted(note)
        return device

    def _plan_assign(
        self, worker: str, actor: str, scope: Scope, reason: str
    ) -> Callable[[Device], Awaitable[Change]]:
        async def plan(device: Device) -> Change:
            user = await self._accounts.get_user(worker)
            return inventory.plan_assign(
                device, inventory.check_worker(user, worker, scope), actor, reason
            )

        return plan

    async def mark(
        self,
        serial: str,
        target: DeviceStatus,
        actor: str,
        scope: Scope,
        reason: str,
        note: Note | None,
    ) -> Device:
        async def plan(device: Device) -> Change:
            return inventory.plan_mark(device, target, actor, reason)

        device = await self._change(serial, scope, plan)
        self._noted(note)
        return device

    async def _change(
        self, serial: str, scope: Scope, plan: Callable[[Device], Awaitable[Change]]
    ) -> Device:
        """Read, plan and write against the ``_rev`` read; 409: all again."""
        for _ in range(_TRIES):
            doc = await self._doc(device_id(serial))
            device = inventory.managed(
                None if doc is None else await self._device(doc), serial, scope
            )
            assert doc is not None
            change = await plan(device)
            await self._claim_for(change, scope)
            body = _applied(doc, change)
            if not await self._stands(body):
                continue
            try:
                await self._after(doc, body, change)
                return await self._device(body)
            finally:  # it stands, whatever follows
                if any(doc.get(k) != body.get(k) for k in _BINDING_FIELDS):
                    await self._wait_out()
                else:
                    self._recent.forget()
        raise StoreUnavailable(f"Could not change device {serial}: too busy; try again.")

    async def _claim_for(self, change: Change, scope: Scope) -> None:
        serial = change.device.serial
        for value in change.imeis:
            await self._claim("imei", value, serial, scope)
        if change.phone:
            await self._claim("phone", change.phone, serial, scope)

    async def _after(self, before: Doc, after: Doc, change: Change) -> None:
        """What follows a change's write: its history entry, claims it let go, records of
        the token it revoked."""
        serial = str(after["serial"])
        if change.entry is not None:
            await self._create(couchdb_docs.history_doc(serial, change.entry))
        if before.get("imei2") and before.get("imei2") != after.get("imei2"):
            await self._release("imei", str(before["imei2"]), serial)
        if before.get("phone") and not _holds(after, "phone", str(before["phone"])):
            await self._release("phone", str(before["phone"]), serial)
        if change.revoke is not None and before.get("token"):
            await self._note_revoked(str(before["token"]), change.revoke)
        if after.get("phone") and after.get("status") in GONE and after.get("worker"):
            await self._mark_gone(after)

    # -- claims ------------------------------------------------------------------------------
    async def _claim(self, kind: str, value: str, serial: str, scope: Scope) -> None:
        """Make ``serial`` the holder of ``value`` (an IMEI, a number), or Conflict."""
        doc_id = claim_id(kind, value)
        for _ in range(_TRIES):
            leaves = await self._leaves(doc_id)
            body: Doc = {"_id": doc_id, "type": "claim", "serial": serial, "at": _seconds()}
            if leaves:
                if str(leaves[0].get("serial")) == serial:
                    return
                for leaf in leaves:  # a fork's other leaf may name the phone that holds it
                    holder = str(leaf.get("serial"))
                    if holder != serial and await self._still_held(leaf, kind, value):
                        other = await self.get(holder)
                        if kind == "imei":
                            raise inventory.imei_taken(value, other, holder, scope)
                        raise inventory.phone_taken(value, other, holder, scope)
                body["_rev"] = leaves[0]["_rev"]
            if await self._stands(body):  # a 202 never holds a claim: read again
                return
        raise StoreUnavailable(f"Could not claim {kind} {value}: too busy; try again.")

    async def _still_held(self, claim: Mapping[str, Any], kind: str, value: str) -> bool:
        holder = await self._doc(device_id(str(claim.get("serial"))))
        if holder is None:  # an add in progress, or one that failed long ago
            return _seconds() - float(claim.get("at") or 0) < CLAIM_GRACE
        return _holds(holder, kind, value)

    async def _release(self, kind: str, value: str, serial: str) -> None:
        """Let go of a claim ``serial`` holds (a claim left behind is stale, never wrong)."""
        doc_id = claim_id(kind, value)
        for leaf in await self._leaves(doc_id):
            if leaf.get("serial") == serial:
                try:
                    where = path(self._db, doc_id)
                    await self._client.json("DELETE", where, params={"rev": str(leaf["_rev"])})
                except (Conflict, NotFound):
                    pass

    # -- enrolment ---------------------------------------------------------------------------
    async def issue_code(
        self, serial: str, actor: str, scope: Scope, now: dt.datetime | None, note: Note | None
    ) -> IssuedCode:
        moment = now or dt.datetime.now(dt.UTC)
        code = codes.new_code()
        key = code_key(code)
        for _ in range(_TRIES):
            doc = await self._doc(device_id(serial))
            device = inventory.managed(
                None if doc is None else await self._device(doc), serial, scope
            )
            assert doc is not None
            if device.status is not DeviceStatus.ASSIGNED or device.worker is None:
                raise NotAssigned(device)
            expires = stamp(moment + CODE_LIFETIME)
            await self._ensure_code(key, device, actor, stamp(moment), expires)
            if not await self._stands({**without(doc), "code": key}):
                continue
            entry = inventory.note_entry(
                device, actor, "enrolment code issued", f"for {device.worker}"
            )
            await self._create(couchdb_docs.history_doc(device.serial, entry))
            self._noted(note)
            return IssuedCode(code, device.serial, device.worker, expires)
        raise StoreUnavailable(f"Could not issue a code for device {serial}; try again.")

    async def _ensure_code(
        self, key: str, device: Device, actor: str, created: str, expires: str
    ) -> None:
        body = {
            "_id": code_id(key),
            "type": "code",
            "serial": device.serial,
            "worker": device.worker,
            "issued_by": actor,
            "created": created,
            "expires": expires,
            "used": None,
        }
        leaves = await self._leaves(code_id(key))
        if leaves:  # a retry: the code is written; its worker follows the device now
            body["_rev"] = leaves[0]["_rev"]
        await self._put(body)

    async def check_known(self, code: str) -> None:
        if not await self._leaves(code_id(code_key(code))):
            raise EnrolmentRefused("unknown enrolment code; check it or ask for a new one")

    async def enrol(
        self,
        code: str,
        serial: str,
        worker: str,
        now: dt.datetime | None = None,
        versions: tuple[str, str] = ("", ""),
    ) -> Enrolment:
        moment = stamp(now or dt.datetime.now(dt.UTC))
        key = code_key(code)
        device = await self._redeem(key, serial, worker, moment)
        token = codes.new_token()
        digest = codes.token_hash(token)
        await self._create(
            {
                "_id": token_id(digest),
                "type": "token",
                "serial": device,
                "worker": worker,
                "created": moment,
            }
        )
        before, after = await self._bind(device, key, digest, worker, moment, versions)
        if before.get("token"):  # the older token is revoked
            await self._wait_out()
        else:
            self._recent.forget()
        if before.get("token"):
            await self._note_revoked(str(before["token"]), "re_enrolled")
        entry = inventory.note_entry(await self._device(after), worker, "enrolled")
        await self._create(couchdb_docs.history_doc(device, entry))
        return Enrolment(token, device, worker)

    async def _redeem(self, key: str, serial: str, worker: str, moment: str) -> str:
        """Mark the code used by this redemption; the serial it enrols; or EnrolmentRefused."""
        mine = secrets.token_hex(8)
        for _ in range(_TRIES):
            leaves = await self._leaves(code_id(key))
            if not leaves:
                raise EnrolmentRefused("unknown enrolment code; check it or ask for a new one")
            used = next((leaf["used"] for leaf in leaves if leaf.get("used")), None)
            stored = await self._stored(leaves[0], key, used)
            stored.check(serial, worker, moment)
            body = {**without(leaves[0]), "used": moment, "by": mine}
            try:
                status = await self._client.put_status(path(self._db, code_id(key)), body)
            except Conflict:
                continue  # another redemption wrote first: read again (it is used now)
            if status == 201 or await self._confirmed(code_id(key), mine):
                return stored.serial
        raise EnrolmentRefused("this enrolment code was already used; ask for a new one")

    async def _stored(self, leaf: Mapping[str, Any], key: str, used: str | None) -> StoredCode:
        doc = await self._doc(device_id(str(leaf["serial"])))
        if doc is None:
            raise EnrolmentRefused("unknown enrolment code; check it or ask for a new one")
        return StoredCode(
            0,
            str(leaf["worker"]),
            str(leaf["expires"]),
            used,
            doc.get("code") != key,
            str(doc["serial"]),
            str(doc["status"]),
            doc.get("worker"),
        )

    async def _confirmed(self, doc_id: str, mine: str) -> bool:
        """After a 202: ours is the one leaf (no rival redemption through another node)."""
        leaves = await self._leaves(doc_id)
        return len(leaves) == 1 and leaves[0].get("by") == mine

    async def _bind(
        self,
        serial: str,
        key: str,
        digest: str,
        worker: str,
        moment: str,
        versions: tuple[str, str],
    ) -> tuple[Doc, Doc]:
        """Make ``digest`` the device's live token (the code's device, still the worker's)."""
        app_version, os_version = versions
        for _ in range(_TRIES):
            doc = await self._doc(device_id(serial))
            assert doc is not None
            if (
                doc.get("code") != key
                or doc.get("worker") != worker
                or (doc.get("status") != DeviceStatus.ASSIGNED.value)
            ):
                raise EnrolmentRefused(
                    "this enrolment code is void: a newer one was issued or the device "
                    "changed hands"
                )
            body = {**without(doc), "token": digest, "code": None, "last_sync": moment}
            body["revoked"] = "re_enrolled" if doc.get("token") else doc.get("revoked")
            body["app_version"] = app_version or doc.get("app_version", "")
            body["os_version"] = os_version or doc.get("os_version", "")
            if not await self._stands(body):
                continue
            return doc, body
        raise StoreUnavailable(f"Could not enrol device {serial}: too busy; try again.")

    async def _note_revoked(self, digest: str, reason: str) -> None:
        """Write the reason into the revoked token's own document (the device already says
        it is not live; this keeps why, as the embedded store does)."""
        for _ in range(_TRIES):
            leaves = await self._leaves(token_id(digest))
            if not leaves or leaves[0].get("revoked"):
                return
            body = {**without(leaves[0]), "revoked": inventory.now(), "revoked_reason": reason}
            try:
                await self._put(body)
            except Conflict:
                continue
            return

    # -- every request -----------------------------------------------------------------------
    async def binding(self, token_hash: str) -> Bound | None:
        """Read, or answered again (a live binding only) within the bound from the read's
        send, or shared with a read of it already under way (module docstring)."""
        return await self._recent.read_once(
            token_hash, lambda: self._read_binding(token_hash), worth_keeping
        )

    async def _read_binding(self, token_hash: str) -> Bound | None:
        ids = [token_id(token_hash)]
        serial = self._serials.get(token_hash)
        if serial is not None:
            ids.append(device_id(serial))
        found = await self._client.leaves_by_id(self._db, ids)
        token = _first(found.get(ids[0]))
        if token is None:
            return None
        serial = str(token["serial"])
        self._remember(token_hash, serial)
        leaves = found.get(device_id(serial)) or await self._leaves(device_id(serial))
        if not leaves:  # (the second read: first sight of this token in this process)
            return None
        device = strictest_leaf(leaves, token_hash)
        if len(leaves) == 1:  # what the next last-sync write starts from (heard)
            self._read_docs[serial] = leaves[0]
            if len(self._read_docs) > _SERIALS_KEPT:
                self._read_docs.popitem(last=False)
        revoked = None
        if device.get("token") != token_hash:
            revoked = token.get("revoked_reason") or device.get("revoked") or "revoked"
        status = DeviceStatus(device["status"])
        return serial, TokenBinding(serial, token["worker"], revoked, status, device.get("worker"))

    def _remember(self, token_hash: str, serial: str) -> None:
        self._serials[token_hash] = serial
        self._serials.move_to_end(token_hash)
        if len(self._serials) > _SERIALS_KEPT:
            self._serials.popitem(last=False)

    async def heard(self, heard: Mapping[DeviceKey, Heard]) -> None:
        for serial, seen in heard.items():
            read = self._read_docs.pop(serial, None)  # the device check's read: 409 if stale
            for _ in range(_TRIES):
                doc, read = read or await self._doc(device_id(serial)), None
                if doc is None:
                    break
                body = {**without(doc), "last_sync": seen.at}
                if seen.app_version:
                    body["app_version"] = seen.app_version
                if seen.os_version:
                    body["os_version"] = seen.os_version
                if await self._stands(body):
                    break

    async def record_refusals(self, attempts: Sequence[RefusedAttempt]) -> None:
        if not attempts:
            return
        docs = [
            {
                "_id": f"refusal:{couchdb_docs.unique_suffix()}",
                "type": "refusal",
                **asdict(a),
                "path": a.path[:300],
            }
            for a in attempts
        ]
        await self._bulk(docs)

    async def refusals(self, serials: frozenset[str] | None, limit: int) -> list[dict[str, Any]]:
        read = limit if serials is None else _REFUSALS_READ
        docs = await self._range("refusal:", descending=True, limit=read)
        columns = TABLES["device_refusals"][1:]
        return [
            {c: d.get(c) for c in columns}
            for d in docs
            if serials is None or d.get("serial") in serials
        ][:limit]

    # -- moving a deployment -------------------------------------------------------------------
    async def export_all(self) -> dict[str, list[dict[str, Any]]]:
        from device_registry.couchdb_dump import export_docs

        return await export_docs(self)

    async def import_all(self, dump: Mapping[str, Sequence[Mapping[str, Any]]]) -> int:
        from device_registry.couchdb_dump import import_rows

        return await import_rows(self, dump)

    # -- the registry's values ------------------------------------------------------------------
    async def _device(self, doc: Mapping[str, Any]) -> Device:
        worker = doc.get("worker")
        user: User | None = None if not worker else await self._accounts.get_user(str(worker))
        return couchdb_docs.device_of(doc, user)

    def _noted(self, note: Note | None) -> None:
        """Record ``note``'s audit entry (the trail makes it safe before the answer)."""
        if note is not None:
            note.log.record(note.actor, note.action, None, (), note.device, detail=note.detail)


def _applied(doc: Doc, change: Change) -> Doc:
    """The device document after ``change`` (revoking: no live token, no live code)."""
    body = {**without(doc), **change.fields}
    if change.revoke is not None:
        body.update(token=None, code=None, revoked=change.revoke)
    return body


def _holds(doc: Mapping[str, Any], kind: str, value: str) -> bool:
    """Whether the device document ``doc`` still has ``value`` as it would claim it."""
    if kind == "imei":
        return value in (doc.get("imei"), doc.get("imei2"))
    active = {s.value for s in ACTIVE}
    return doc.get("phone") == value and doc.get("status") in active


def strictest_leaf(leaves: Sequence[Doc], token_hash: str) -> Doc:
    """The leaf of a device document to judge a token by: a write that went to fewer than a
    quorum of copies (202) may have forked the document, and a revocation on any side of
    the fork must hold, so a leaf that no longer names the token, or that takes the
    device from its worker, wins over CouchDB's winner."""
    for leaf in leaves:
        if leaf.get("token") != token_hash or leaf.get("status") != DeviceStatus.ASSIGNED.value:
            return leaf
    return leaves[0]


def _first(leaves: list[Doc] | None) -> Doc | None:
    return leaves[0] if leaves else None


def without(doc: Mapping[str, Any]) -> Doc:
    return couchdb_docs.without_meta(doc)


def _seconds() -> float:
    return dt.datetime.now(dt.UTC).timestamp()
