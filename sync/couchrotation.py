"""Data-key rotation with the documents in CouchDB, while fieldsync instances keep serving.

``fieldsync keys rotate`` with ``FIELDSYNC_COUCHDB_URL`` set runs this instead of
:mod:`sync.datakeys.embedded_rotation` (whose data dir holds no documents then).  The steps:

1. **Lease.**  The run holds the lease ``key-rotation`` in ``<prefix>leases``
   (:mod:`sync.store.couchdb.lease`), renewed while it runs, so two operators or
   machines never rotate at once: the second is refused with the holder's name.
2. **New versions.**  Each chosen place gets a new version in ``<prefix>keys``
   (the data-key port), the one new data is sealed with from now on.
3. **Wait.**  Every instance asks for a place's newest version at least every
   ``FIELDSYNC_KEY_REFRESH_SECONDS`` and keeps sealed bodies in memory no longer
   than that (:class:`sync.keys.KeyRing`, :class:`sync.store.couchdb.bodies.BodyCache`),
   so after three times that (plus 5 s: :func:`settling_seconds`) no instance
   seals under an old version any more and a write sealed just before has landed.
4. **Re-seal.**  Every sealed blob in CouchDB under an older version of a chosen
   place (:mod:`sync.couchsealed`: bodies, attachments, checkpoints, bodies held
   in metas, and the packages', SMS texts) is opened and sealed again under the
   newest, written back against its CouchDB ``_rev``: the same document ids and
   revisions, only the sealed blob changes.  A document changed meanwhile (409) is
   read again by the next pass; passes go on until one finds no old blob left.
5. **Retire.**  The older versions are deleted from ``<prefix>keys``.

Readers open every blob meanwhile: they find the version in the blob's key ref,
and every version exists until step 5, when nothing refers to the old ones.  A
run killed at any point is finished by running the command again (a new version
again; everything older is re-sealed and retired).  The shared key's old
versions are kept: refused records are still kept in each instance's data dir
(:mod:`sync.refusals`), sealed under it, where this command cannot see them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import secrets
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sync.audit import Entry, cli_actor
from sync.audit import now as audit_now
from sync.couchaudit import CouchChain
from sync.couchsealed import Doc, SealedDocs, Slot, sealed_docs
from sync.datakeys.couchdb import CouchDataKeys
from sync.errors import FieldsyncError, NotFound
from sync.keyadmin import describe
from sync.keys import KeyError_, MasterKey, key_ref, label, parse_key_ref, seal, unseal
from sync.store.base import SHARED
from sync.store.couchdb import layout
from sync.store.couchdb.bases import drop_all
from sync.store.couchdb.client import CouchClient, path
from sync.store.couchdb.lease import Lease, holding, new_owner
from sync.store.couchdb.store import RECENT_SECONDS

LEASE_NAME = "key-rotation"
LEASE_SECONDS = 60.0
MAX_PASSES = 10
Report = Callable[[str], None]


@dataclass
class Pass:
    """What one pass over every sealed document found."""

    looked: Counter[str] = field(default_factory=Counter)  # per SealedDocs name
    resealed: Counter[str] = field(default_factory=Counter)
    left: Counter[str] = field(default_factory=Counter)  # old refs not re-sealed (changed)


@dataclass(frozen=True)
class Rotated:
    newest: dict[str, int]
    deleted: list[str]
    kept: list[str]


class Rotation:
    """One run of the steps above, for ``places`` (None: every place with a key)."""

    def __init__(
        self,
        client: CouchClient,
        prefix: str,
        master: MasterKey,
        lease: Lease,
        packages: Sequence[SealedDocs],
        report: Report,
    ) -> None:
        self.client, self.prefix, self.master = client, prefix, master
        self.lease, self.report = lease, report
        self.every = sealed_docs(packages)
        self.keys = CouchDataKeys.for_prefix(client, prefix)
        self._opened: dict[str, AESGCM] = {}

    # -- step 2 ----------------------------------------------------------------------------
    async def add_versions(self, places: Sequence[str] | None) -> dict[str, int]:
        stored = await self.keys.all_async()
        latest: dict[str, int] = {}
        for key in stored:
            latest[key.place] = max(latest.get(key.place, 0), key.version)
        chosen = sorted(latest) if places is None else list(dict.fromkeys(places))
        if not chosen:
            raise KeyError_(
                f"there is no data key in CouchDB ({self.keys.db}) yet: nothing to rotate"
            )
        newest = {}
        for place in chosen:
            if place not in latest:
                raise KeyError_(f"place {place or '(shared)'} has no data key to rotate")
            version = latest[place] + 1
            wrapped = self.master.wrap(label(place, version), secrets.token_bytes(32))
            created = dt.datetime.now(dt.UTC).isoformat()
            await self.keys.add_async(place, version, wrapped, created)
            newest[place] = version
        return newest

    # -- step 4 ----------------------------------------------------------------------------
    async def reseal(self, newest: dict[str, int]) -> None:
        """Passes over every sealed document until one finds no old blob."""
        dbs = await fieldsync_dbs(self.client, self.prefix)
        for number in range(1, MAX_PASSES + 1):
            found = await self.one_pass(dbs, newest)
            for name in found.looked:
                self.report(
                    f"  pass {number}, {name}: {found.looked[name]:,} looked at, "
                    f"{found.resealed[name]:,} re-sealed"
                )
            if not found.resealed and not found.left:
                return
        raise KeyError_(
            f"blobs under the old data keys were still changing after {MAX_PASSES} passes; "
            "nothing was deleted: run `fieldsync keys rotate` again"
        )

    async def one_pass(self, dbs: Sequence[str], newest: dict[str, int]) -> Pass:
        found = Pass()
        for docs in self.every:
            for couch_db, db in docs.databases(self.prefix, dbs):
                await self._pass_over(docs, couch_db, db, newest, found)
        return found

    async def _pass_over(
        self, docs: SealedDocs, couch_db: str, db: str, newest: dict[str, int], found: Pass
    ) -> None:
        after: str | None = None
        pages = 0
        while True:
            self._check_lease()
            page = await self._page(docs, couch_db, after)
            if not page:
                return
            pages += 1
            if pages % 50 == 0:
                self.report(
                    f"  {docs.name} in {couch_db}: {found.looked[docs.name]:,} looked at, "
                    f"{found.resealed[docs.name]:,} re-sealed so far"
                )
            after = str(page[-1]["_id"])
            changed = []
            for doc in page:
                found.looked[docs.name] += 1
                new = await self._resealed(docs.slots(db, doc), newest)
                if new:
                    changed.append(docs.replaced(doc, new))
            if changed:
                done = await self._write(couch_db, changed)
                found.resealed[docs.name] += done
                found.left[docs.name] += len(changed) - done

    async def _page(self, docs: SealedDocs, couch_db: str, after: str | None) -> list[Doc]:
        params = {
            "startkey": _key(docs.low if after is None else after),
            "endkey": _key(docs.high),
            "include_docs": "true",
            "conflicts": "true",
            "limit": str(docs.page + (after is not None)),
        }
        if docs.attachments:
            params["attachments"] = "true"
        try:
            answer = await self.client.json("GET", path(couch_db, "_all_docs"), params=params)
        except NotFound:  # a database not made yet (no SMS ever received): nothing sealed
            return []
        if answer is None:
            return []
        rows = answer.get("rows", [])
        found = [row["doc"] for row in rows if row.get("doc") and row["id"] != after]
        # a meta or body that forked on a cluster and is not settled yet: every leaf holds
        # blobs sealed under the keys that go
        every = await self.client.with_losers(couch_db, found, attachments=docs.attachments)
        return [leaf for leaves in every for leaf in leaves]

    async def _resealed(
        self, slots: Sequence[Slot], newest: dict[str, int]
    ) -> dict[str, tuple[str, bytes]]:
        new = {}
        for slot in slots:
            place, version = parse_key_ref(slot.key_ref)
            target = newest.get(place)
            if target is None or version >= target:
                continue
            plain = unseal(await self._key(slot.key_ref), slot.aad, slot.blob)
            new_ref = key_ref(place, target)
            new[slot.name] = (new_ref, seal(await self._key(new_ref), slot.aad, plain))
        return new

    async def _write(self, couch_db: str, docs: Sequence[Doc]) -> int:
        """Write the re-sealed documents against their ``_rev``; how many held (a 409: the
        document changed meanwhile, the next pass reads it again)."""
        answer = await self.client.json("POST", path(couch_db, "_bulk_docs"), body={"docs": docs})
        return sum(1 for row in answer if not row.get("error"))

    async def _key(self, ref: str) -> AESGCM:
        key = self._opened.get(ref)
        if key is None:
            place, version = parse_key_ref(ref)
            wrapped = await self.keys.wrapped_async(place, version)
            if wrapped is None:
                raise KeyError_(f"data key {describe(place, version)} is gone (shredded?)")
            key = self._opened[ref] = AESGCM(self.master.unwrap(label(place, version), wrapped))
        return key

    def _check_lease(self) -> None:
        if self.lease.lost:
            raise KeyError_(
                f"the lease {self.lease.name} ran out and another run took it; this run "
                "stopped and deleted nothing (the other run finishes the rotation)"
            )

    # -- step 5 ----------------------------------------------------------------------------
    async def retire(self, newest: dict[str, int]) -> tuple[list[str], list[str]]:
        """Delete the versions older than ``newest`` (the shared key's are kept)."""
        self._check_lease()
        deleted, kept = [], []
        for key in await self.keys.all_async():
            target = newest.get(key.place)
            if target is None or key.version >= target:
                continue
            name = describe(key.place, key.version)
            if key.place == SHARED:
                kept.append(name)
            elif await self.keys.remove_async(key.place, key.version):
                deleted.append(name)
        if deleted:
            await compact(self.client, self.keys.db)
        return deleted, kept


async def rotate(
    client: CouchClient,
    prefix: str,
    master: MasterKey,
    places: Sequence[str] | None,
    refresh_seconds: float,
    packages: Sequence[SealedDocs],
    report: Report,
) -> Rotated:
    """The five steps; ``places=None``: every place with a key.  Audited in the CLI's own
    chain in ``<prefix>audit`` (``fieldsync audit verify`` checks it with the others)."""
    owner = new_owner()
    lease = Lease(client, prefix, LEASE_NAME, owner, LEASE_SECONDS, "fieldsync keys rotate")
    chain = CouchChain(client, prefix, master, f"cli-{owner}")
    async with holding(lease, "cannot rotate the data keys now"):
        run = Rotation(client, prefix, master, lease, packages, report)
        newest = await run.add_versions(places)
        made = ", ".join(describe(p, v) for p, v in newest.items())
        report(f"new data keys: {made}")
        await chain.append([_entry("key_rotate", f"new data keys: {made}")])
        seconds = settling_seconds(refresh_seconds)
        report(f"waiting {seconds:g} s for every instance to seal with the new keys")
        await asyncio.sleep(seconds)
        await run.reseal(newest)
        # bases hold bodies sealed under the keys that go: they are made again by first pulls
        for db in await fieldsync_dbs(client, prefix):
            await drop_all(client, layout.data_db(prefix, db))
        deleted, kept = await run.retire(newest)
    done = Rotated(newest, deleted, kept)
    await chain.append([_entry("key_retire", audit_detail(done))])
    return done


def settling_seconds(refresh_seconds: float) -> float:
    """How long after a new version every instance seals with it, and no sealed copy under
    an older one is kept in an instance's memory: three refresh periods, plus the few
    seconds metas and pages read ahead are kept (they hold winners' sealed bodies)."""
    return 3 * refresh_seconds + RECENT_SECONDS


def _entry(action: str, detail: str) -> Entry:
    return Entry(audit_now(), cli_actor(), None, action, None, (), detail)


async def compact(client: CouchClient, couch_db: str) -> None:
    """Ask CouchDB to compact ``couch_db``, so that the old revisions of deleted key documents
    (the wrapped keys) are dropped from its files; a server that refuses is left alone."""
    with contextlib.suppress(FieldsyncError):
        await client.json("POST", path(couch_db, "_compact"), body={})


async def fieldsync_dbs(client: CouchClient, prefix: str) -> list[str]:
    """The fieldsync databases: every ``<prefix>D`` with a ``<prefix>D$data`` beside it (the
    other databases with the prefix are the domains': keys, sms, leases, audit ...)."""
    names = set(await client.json("GET", "/_all_dbs"))
    cut = len(prefix)
    return sorted(
        n[cut:] for n in names if n.startswith(prefix) and layout.data_db(prefix, n[cut:]) in names
    )


def _key(text: str) -> str:
    return orjson.dumps(text).decode()


def audit_detail(done: Rotated) -> str:
    return (
        f"old data keys deleted: {', '.join(done.deleted) or 'none'}; "
        f"kept: {', '.join(done.kept) or 'none'}"
    )
