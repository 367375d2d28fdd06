"""Who is asking, what they may see, and the parts every protocol step shares."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

import orjson

from sync.audit import AuditLog, AuditStamp
from sync.errors import Forbidden
from sync.extensions import Validator
from sync.replication import revtree
from sync.replication.ahead import Ahead
from sync.replication.notifier import Notifier
from sync.scopes import PlaceTree, Scope, User
from sync.store.base import SHARED, DocMeta, DocStore, StoredRevision
from sync.vault import Vault

READ_AHEAD_DETAIL = "announced to this device by a changes page: read in the next minutes"

# Sealed local documents are ``LOCAL_SEALED key_ref NUL ciphertext``; older ones are plain JSON.
LOCAL_SEALED = b"fs-local-1\x00"


class WriteRefused(Forbidden):
    """A document refused per document (403 ``forbidden``), with why in the words of the
    refused-records list (:mod:`sync.refusals.reasons`): ``code`` (``outside_scope``,
    ``unknown_place``, ``retired_place``, ``no_place``, ``form_schema``, ``validator``)
    and, for a supervisor, ``detail`` (the reason itself when None)."""

    def __init__(self, reason: str, *, code: str, detail: str | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.detail = detail or reason


@dataclass(frozen=True)
class Caller:
    user: User
    scope: Scope
    tree: PlaceTree
    device: str | None = None

    @property
    def name(self) -> str:
        return self.user.name

    @property
    def is_admin(self) -> bool:
        return self.user.is_admin

    def place_exists(self, place: str) -> bool:
        return place == SHARED or place in self.tree.places


@dataclass
class Parts:
    store: DocStore
    vault: Vault
    notifier: Notifier
    validators: tuple[Validator, ...] = ()  # the packages' (sync.extensions)
    audit: AuditLog | None = None
    # With a remote audit trail: reads of what changes pages announced share entries.
    ahead: Ahead | None = None
    # Writes refused because the document lives in a place outside the writer's
    # capture scope (each also audited as "write_refused"): a count to watch.
    refused_writes: int = 0

    def record(
        self,
        caller: Caller,
        action: str,
        db: str,
        doc_ids: Iterable[str],
        *,
        detail: str | None = None,
    ) -> None:
        """Add an entry to the audit trail (who, device, what, which documents).

        Written before the answer goes out (:func:`sync.audit.flush_before_answer`).
        Reads of nothing are not recorded; refusals (an action ending in
        ``_refused``) are, with or without document ids.
        """
        ids = sorted(set(doc_ids))
        if self.audit is not None and (ids or action.endswith("_refused")):
            self.audit.record(caller.name, action, db, ids, device=caller.device, detail=detail)

    def stamp(self, caller: Caller, action: str = "write") -> AuditStamp | None:
        """The audit entry a store write appends inside its own transaction."""
        if self.audit is None:
            return None
        return self.audit.stamp(caller.name, caller.device, action)

    def refused(self, caller: Caller, db: str, doc_ids: Iterable[str]) -> None:
        """Writes refused because their documents live elsewhere: audited and counted."""
        ids = sorted(set(doc_ids))
        self.refused_writes += len(ids)
        self.record(caller, "write_refused", db, ids)

    async def visible_metas(
        self, db: str, caller: Caller, ids: Iterable[str], *, recent: bool = False
    ) -> dict[str, DocMeta]:
        """Metadata of the documents in the caller's set; the rest do not exist for them.

        Each tree holds only the branches the caller may know of (:meth:`branches`).
        Documents that exist in a place the caller may not read are answered as
        missing, and recorded in the audit trail as a refused read (someone probing
        another area's ids shows up there).
        """
        metas = await self.store.get_metas(db, list(dict.fromkeys(ids)), recent=recent)
        shown = {i: m for i, m in metas.items() if caller.scope.can_read(m.place)}
        if len(shown) < len(metas):
            self.record(caller, "read_refused", db, (i for i in metas if i not in shown))
        return await self.branches(db, caller, shown)

    async def branches(
        self, db: str, caller: Caller, metas: Mapping[str, DocMeta]
    ) -> dict[str, DocMeta]:
        """The documents (all in the caller's set) with their trees cut to what the caller may know.

        A caller knows a leaf whose revision lies in a place they may read (the
        winner always does: it decides the document's place) and every ancestor
        of such a leaf (the shared history they need to replicate).  Revisions that
        exist only on branches of other places are not there for them: not in
        ``_revs_diff``, not as a parent to edit, not in ``open_revs`` or conflicts.
        An admin, or a document with one leaf, costs nothing; the documents with
        several leaves cost one store call together.
        """
        if caller.scope.read is None:
            return dict(metas)
        every = {i: revtree.leaves(m.tree) for i, m in metas.items()}
        branched = {i: leaves for i, leaves in every.items() if len(leaves) > 1}
        if not branched:
            return dict(metas)
        wanted = [
            (i, leaf)
            for i, leaves in branched.items()
            for leaf in leaves
            if leaf != metas[i].winner
        ]
        stored = await self.store.get_revisions(db, wanted)
        cut = dict(metas)
        for doc_id, leaves in branched.items():
            meta = metas[doc_id]
            found = {leaf: stored.get((doc_id, leaf)) for leaf in leaves}
            readable = [
                leaf
                for leaf, s in found.items()
                if leaf == meta.winner or (s is not None and caller.scope.can_read(s.place))
            ]
            tree = MappingProxyType(revtree.known_from(meta.tree, readable))
            cut[doc_id] = replace(meta, tree=tree)
        return cut

    async def readable_revs(
        self, db: str, caller: Caller, doc_id: str, revs: list[str]
    ) -> list[str]:
        """The revisions of ``doc_id`` whose place the caller may read, in order.

        One document's branches may lie in different places (a record moved, or
        edited on two devices of different areas); a branch outside the caller's
        set does not exist for them, not even as a rev id.
        """
        if caller.scope.read is None or not revs:
            return revs
        stored = await self.store.get_revisions(db, [(doc_id, r) for r in revs])
        return [
            r
            for r in revs
            if (found := stored.get((doc_id, r))) and caller.scope.can_read(found.place)
        ]

    async def open_revisions(
        self, db: str, caller: Caller, wanted: list[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[StoredRevision, dict[str, Any]]]:
        """Bodies of the wanted revisions the caller may read, opened."""
        stored = await self.store.get_revisions(db, wanted)
        readable = {k: s for k, s in stored.items() if caller.scope.can_read(s.place)}
        await self.vault.warm_refs({s.key_ref for s in readable.values()})
        self.record_read(caller, db, sorted({doc_id for doc_id, _ in readable}))
        if self.audit is not None:  # stored while the bodies are opened and encoded
            self.audit.send_early()
        return {k: (s, self.vault.open_body(db, s)) for k, s in readable.items()}

    def announced(self, db: str, caller: Caller, doc_ids: Iterable[str]) -> None:
        """A changes page listed these to the caller, who reads them next."""
        if self.ahead is not None:
            self.ahead.announce((caller.name, caller.device, db), doc_ids)

    def record_read(self, caller: Caller, db: str, doc_ids: list[str]) -> None:
        """The entry of a read; with :attr:`ahead`, it also names what the caller was
        announced and will read next, and reads an entry names already record nothing
        (their answer waits for that entry instead)."""
        if self.ahead is None or self.audit is None:
            self.record(caller, "read", db, doc_ids)
            return
        key = (caller.name, caller.device, db)
        unnamed, stake = self.ahead.reading(key, doc_ids)
        self.audit.wait_for(stake)
        if not unnamed:
            return
        self.record(caller, "read", db, unnamed)
        ahead = self.ahead.ahead_of(key, unnamed)
        if ahead:
            self.record(caller, "read_ahead", db, ahead, detail=READ_AHEAD_DETAIL)
        self.ahead.named(key, [*unnamed, *ahead], self.audit.last_number)

    async def seal_local(self, db: str, owner: str, doc_id: str, body: dict[str, Any]) -> bytes:
        """A ``_local`` body sealed like any other (clients may keep PHI in them).

        Local documents belong to a user, not a place: the shared place's key
        seals them and the associated data binds them to their owner and id.
        """
        await self.vault.warm({SHARED})
        key_ref, sealed = self.vault.seal_body(db, local_name(owner, doc_id), "", SHARED, body)
        return LOCAL_SEALED + key_ref.encode() + b"\x00" + sealed

    async def open_local(self, db: str, owner: str, doc_id: str, raw: bytes) -> dict[str, Any]:
        if not raw.startswith(LOCAL_SEALED):
            body: dict[str, Any] = orjson.loads(raw)
            return body
        key_ref, _, sealed = raw[len(LOCAL_SEALED) :].partition(b"\x00")
        stored = StoredRevision(
            local_name(owner, doc_id), "", SHARED, False, key_ref.decode(), sealed
        )
        await self.vault.warm_refs({stored.key_ref})
        return self.vault.open_body(db, stored)


def local_name(owner: str, doc_id: str) -> str:
    return f"{doc_id}\x1f{owner}"


def require_write(caller: Caller, place: str) -> None:
    """The document may be written into ``place`` (the place it will be in).

    A retired place takes nothing, from anyone: neither new documents nor edits of
    the ones it holds.  A document may still be moved out of it (its new place is
    the one checked here), by someone whose capture scope covers both places.
    """
    if not caller.place_exists(place):
        raise WriteRefused(f"unknown place {place!r}", code="unknown_place")
    if place in caller.tree.retired:
        raise WriteRefused(
            f"place {place!r} is retired: it takes no new documents or edits", code="retired_place"
        )
    if not caller.scope.can_write(place):
        raise WriteRefused(f"place {place!r} is outside your capture scope", code="outside_scope")
