"""The CouchDB / Cloudant document store (layout: :mod:`sync.store.couchdb.layout`).

A write, for each document, in this order:

1. read its meta (by key: a quorum read), apply :mod:`sync.store.rules`;
2. create the sealed body and attachments (create-only; a 409 means "already there");
3. update the meta with CouchDB's optimistic concurrency (``_rev``), marked
   ``pending``; a 409 means another instance won the race: back to 1;
4. append one entry per place to the place's change log;
5. clear ``pending``.

A crash between 3 and 5 leaves a pending meta; :meth:`CouchStore.settle`
(run in the background) appends its entry late.  Readers of the log check each
entry against the meta it names (its version), so an entry seen before its
meta is visible makes them stop and retry, never skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from sync.errors import (
    Conflict,
    NotFound,
    PreconditionFailed,
    StoreError,
    StoreUnavailable,
    TooLarge,
)
from sync.replication import revtree
from sync.store import rules
from sync.store.base import (
    AllDocsQuery,
    AttachmentBlob,
    Change,
    DbInfo,
    DocMeta,
    GlobalPage,
    LocalDoc,
    LogPage,
    LogRow,
    LogStore,
    Position,
    RevisionWrite,
    StoredRevision,
    WriteResult,
)
from sync.store.couchdb import layout, metas
from sync.store.couchdb.client import CouchClient, path
from sync.store.couchdb.log import Entry, PlaceLog

if TYPE_CHECKING:
    from sync.audit import AuditStamp

# Appends the audit entry of a write (until the audit trail lives in CouchDB too).
AuditSink = Callable[["AuditStamp", str, list[str]], Awaitable[None]]

_MISSING_DB = "Database does not exist."
_RACE_TRIES = 20
_SETTINGS_TTL = 10.0
_REQUEST_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Settings:
    revs_limit: int
    uuid: str
    read_at: float


@dataclass(slots=True)
class _Plan:
    index: int
    write: RevisionWrite
    doc: dict[str, Any]
    old: metas.Meta | None


class CouchStore(LogStore):
    def __init__(
        self, client: CouchClient, prefix: str = "fieldsync_", max_document_bytes: int = 8_000_000
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.max_document_bytes = max_document_bytes
        self.log = PlaceLog(client)
        self.audit_sink: AuditSink | None = None
        self._settings: dict[str, _Settings] = {}
        self._watched: dict[str, str] = {}
        self._cursors: dict[
            tuple[str, str], dict[str, Position]
        ] = {}  # db -> CouchDB since of the log watcher

    # -- names ------------------------------------------------------------
    def _meta(self, db: str) -> str:
        return layout.meta_db(self.prefix, db)

    def _data(self, db: str) -> str:
        return layout.data_db(self.prefix, db)

    def _log(self, db: str) -> str:
        return layout.log_db(self.prefix, db)

    async def close(self) -> None:
        await self.client.close()

    # -- databases ----------------------------------------------------------
    async def create_db(self, name: str) -> None:
        try:
            await self.client.json("PUT", path(self._meta(name)))
        except PreconditionFailed:
            raise PreconditionFailed(
                "The database could not be created, the file already exists.",
                error="file_exists",
            ) from None
        for other in (self._data(name), self._log(name)):
            with contextlib.suppress(PreconditionFailed):  # left by a create stopped half-way
                await self.client.json("PUT", path(other))
        await self.client.json("PUT", path(self._meta(name), layout.DESIGN), body=_design())
        settings = {"revs_limit": 1000, "uuid": uuid.uuid4().hex, "created": time.time()}
        await self._put_settings(name, settings)

    async def delete_db(self, name: str) -> None:
        self._settings.pop(name, None)
        try:
            await self.client.json("DELETE", path(self._meta(name)))
        except NotFound:
            raise NotFound(_MISSING_DB) from None
        for other in (self._data(name), self._log(name)):
            with contextlib.suppress(NotFound):
                await self.client.json("DELETE", path(other))

    async def list_dbs(self) -> list[str]:
        names = await self.client.json("GET", "/_all_dbs")
        cut = len(self.prefix)
        return sorted(n[cut:] for n in names if n.startswith(self.prefix) and "$" not in n[cut:])

    async def db_info(self, name: str, places: frozenset[str] | None) -> DbInfo:
        settings = await self._settings_of(name)
        info = await self.client.json("GET", path(self._meta(name)))
        live, deleted = await self._counts(name, places)
        seq = info.get("update_seq", 0)
        return DbInfo(name, seq, live, deleted, settings.revs_limit, "0", settings.uuid)

    async def _counts(self, db: str, places: frozenset[str] | None) -> tuple[int, int]:
        if places is not None and not places:
            return 0, 0  # an existence check (every write asks one): no view query
        view = _view(self._meta(db), "counts")
        if places is None:
            answer = await self.client.json("GET", view, params={"group_level": "2"})
            rows = answer.get("rows", [])
        else:
            keys = [[p, flag] for p in sorted(places) for flag in (0, 1)]
            answer = await self.client.json(
                "POST", view, params={"group": "true"}, body={"keys": keys}
            )
            rows = answer.get("rows", [])
        counts = [0, 0]
        for row in rows:
            key = row.get("key")
            if isinstance(key, list) and len(key) == 2 and row.get("value") is not None:
                counts[int(key[1])] += int(row["value"])
        return counts[0], counts[1]

    async def set_revs_limit(self, name: str, limit: int) -> None:
        where = path(self._data(name), layout.SETTINGS)
        for _ in range(_RACE_TRIES):
            doc = await self._get(name, where)
            if doc is None:
                raise NotFound(_MISSING_DB)
            doc["revs_limit"] = limit
            try:
                await self.client.json("PUT", where, body=doc)
            except Conflict:
                continue
            self._settings.pop(name, None)
            return
        raise StoreUnavailable("The database settings are being changed by others; retry.")

    async def _put_settings(self, name: str, settings: dict[str, Any]) -> None:
        await self.client.json("PUT", path(self._data(name), layout.SETTINGS), body=settings)

    async def _settings_of(self, name: str) -> _Settings:
        """The database's settings (cached briefly); NotFound if the database is missing."""
        known = self._settings.get(name)
        if known is not None and time.monotonic() - known.read_at < _SETTINGS_TTL:
            return known
        doc = await self._get(name, path(self._data(name), layout.SETTINGS))
        if doc is None:
            raise NotFound(_MISSING_DB)
        settings = _Settings(int(doc["revs_limit"]), str(doc["uuid"]), time.monotonic())
        self._settings[name] = settings
        return settings

    async def _get(self, db: str, where: str, **params: str) -> dict[str, Any] | None:
        """A document, or None; NotFound when the database itself is missing."""
        try:
            found: dict[str, Any] = await self.client.json("GET", where, params=params or None)
        except NotFound as exc:
            if _MISSING_DB.lower() in exc.reason.lower() or exc.reason == "no_db_file":
                self._settings.pop(db, None)
                raise NotFound(_MISSING_DB) from None
            return None
        return found

    # -- documents ------------------------------------------------------------
    async def get_metas(self, db: str, ids: Sequence[str]) -> dict[str, DocMeta]:
        await self._settings_of(db)
        found = await metas.load(self.client, self._meta(db), ids)
        return {i: m.as_doc_meta() for i, m in found.items()}

    async def get_revisions(
        self, db: str, wanted: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], StoredRevision]:
        await self._settings_of(db)
        keys = [layout.body_id(doc_id, rev) for doc_id, rev in wanted]
        found: dict[tuple[str, str], StoredRevision] = {}
        for doc in await self._docs_by_key(self._data(db), keys):
            doc_id, rev = _body_key(str(doc["_id"]))
            found[(doc_id, rev)] = StoredRevision(
                doc_id,
                rev,
                str(doc["place"]),
                bool(doc["deleted"]),
                str(doc["key_ref"]),
                layout.unb64(doc["body"]),
            )
        return found

    async def _docs_by_key(self, couch_db: str, keys: Sequence[str]) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = []
        for start in range(0, len(keys), 500):
            answer = await self.client.json(
                "POST",
                path(couch_db, "_all_docs"),
                params={"include_docs": "true"},
                body={"keys": list(keys[start : start + 500])},
            )
            docs += [row["doc"] for row in answer.get("rows", []) if row.get("doc")]
        return docs

    async def write(
        self, db: str, writes: Sequence[RevisionWrite], audit: AuditStamp | None = None
    ) -> list[WriteResult]:
        settings = await self._settings_of(db)
        results: list[WriteResult | None] = [None] * len(writes)
        done: list[_Plan] = []
        queue = list(enumerate(writes))
        while queue:  # the same document twice in one batch: one after the other
            seen: set[str] = set()
            now: list[tuple[int, RevisionWrite]] = []
            later: list[tuple[int, RevisionWrite]] = []
            for item in queue:
                (later if item[1].doc_id in seen else now).append(item)
                seen.add(item[1].doc_id)
            done += await self._write_round(db, settings.revs_limit, now, results)
            queue = later
        await self._log_writes(db, done)
        if audit is not None and self.audit_sink is not None and done:
            await self.audit_sink(audit, db, sorted({p.write.doc_id for p in done}))
        return [
            r if r is not None else WriteResult(w.doc_id, w.path[0])
            for r, w in zip(results, writes, strict=True)
        ]

    async def _write_round(
        self,
        db: str,
        revs_limit: int,
        todo: list[tuple[int, RevisionWrite]],
        results: list[WriteResult | None],
    ) -> list[_Plan]:
        done: list[_Plan] = []
        for _ in range(_RACE_TRIES):
            found = await metas.load(self.client, self._meta(db), [w.doc_id for _, w in todo])
            plans = [p for i, w in todo if (p := self._plan(i, w, found, revs_limit, results))]
            if not plans:
                return done
            await self._save_data(db, [p.write for p in plans])
            raced = await self._save_metas(db, plans)
            done += [p for p in plans if p.index not in raced]
            for p in plans:
                if p.index not in raced:
                    results[p.index] = WriteResult(p.write.doc_id, p.write.path[0])
            todo = [(i, w) for i, w in todo if i in raced]
            if not todo:
                return done
        raise StoreUnavailable("Too many concurrent writes to the same documents; retry.")

    def _plan(
        self,
        index: int,
        w: RevisionWrite,
        found: Mapping[str, metas.Meta],
        revs_limit: int,
        results: list[WriteResult | None],
    ) -> _Plan | None:
        old = found.get(w.doc_id)
        tree = old.tree if old else {}
        refused = rules.refusal(old.place if old else None, tree, w) or self._too_large(w)
        if refused is not None:
            results[index] = WriteResult(w.doc_id, w.path[0], refused)
            return None
        merged = rules.merge(tree, w, revs_limit)
        if merged is None:
            results[index] = WriteResult(w.doc_id, w.path[0])
            return None
        places = {r: p for r, p in (old.places if old else {}).items() if r in merged.tree}
        places[w.path[0]] = w.place
        place = rules.winner_place(merged, w, places.get, old.place if old else None)
        version = (old.version if old else 0) + 1
        doc = metas.body(w.doc_id, place, version, merged.tree, places)
        doc["pending"] = time.time()
        if old is not None:
            doc["_rev"] = old.couch_rev
        return _Plan(index, w, doc, old)

    def _too_large(self, w: RevisionWrite) -> TooLarge | None:
        """CouchDB refuses a document over its ``max_document_size`` (Cloudant: 1 MB), and
        with it the whole ``_bulk_docs``: refuse that one revision here instead."""
        biggest = max([len(w.body), *(b.length + 32 for b in w.attachments)])
        if _encoded(biggest) <= self.max_document_bytes:
            return None
        return TooLarge(
            f"Document or attachment too large for the document store: about "
            f"{_encoded(biggest)} bytes sealed, the limit is {self.max_document_bytes} "
            "(FIELDSYNC_COUCHDB_MAX_DOCUMENT_BYTES)."
        )

    async def _save_data(self, db: str, writes: Sequence[RevisionWrite]) -> None:
        """Bodies and attachments, created once (ids name their content: a 409 is "there")."""
        docs: list[dict[str, Any]] = []
        for w in writes:
            docs.append(
                {
                    "_id": layout.body_id(w.doc_id, w.path[0]),
                    "place": w.place,
                    "deleted": w.deleted,
                    "key_ref": w.key_ref,
                    "body": layout.b64(w.body),
                }
            )
            docs += [_attachment_doc(blob) for blob in w.attachments]
        batch: list[dict[str, Any]] = []
        size = 0
        for doc in docs:  # requests of a bounded size (Cloudant takes 64 MB at most)
            weight = sum(len(v) for v in _strings_of(doc))
            if batch and size + weight > _REQUEST_BYTES:
                await self._bulk(self._data(db), batch, conflicts_ok=True)
                batch, size = [], 0
            batch.append(doc)
            size += weight
        await self._bulk(self._data(db), batch, conflicts_ok=True)

    async def _save_metas(self, db: str, plans: Sequence[_Plan]) -> set[int]:
        """Update the metas; the indexes of the plans another writer overtook."""
        answers = await self._bulk(self._meta(db), [p.doc for p in plans], conflicts_ok=True)
        raced: set[int] = set()
        for p, answer in zip(plans, answers, strict=True):
            if answer.get("error"):
                raced.add(p.index)
            else:
                p.doc["_rev"] = answer["rev"]
        # A forked meta's other branches go once the merged tree is saved, not before:
        # deleting them first could lose their revisions if the save then lost a race.
        losers = [
            {"_id": p.doc["_id"], "_rev": r, "_deleted": True}
            for p in plans
            if p.index not in raced and p.old is not None
            for r in p.old.losers
        ]
        await self._bulk(self._meta(db), losers, conflicts_ok=True)
        return raced

    async def _log_writes(self, db: str, plans: Sequence[_Plan]) -> None:
        """Step 4 and 5: one log entry per place, then the metas are settled."""
        if not plans:
            return
        latest: dict[str, _Plan] = {}
        for p in plans:
            latest[p.write.doc_id] = p
        by_place: dict[str, list[tuple[str, int]]] = {}
        for doc_id, p in latest.items():
            by_place.setdefault(str(p.doc["place"]), []).append((doc_id, int(p.doc["v"])))
        await asyncio.gather(
            *(self.log.append(self._log(db), place, ids) for place, ids in by_place.items())
        )
        settled = []
        for p in latest.values():
            doc = dict(p.doc)
            doc.pop("pending", None)
            settled.append(doc)
        await self._bulk(self._meta(db), settled, conflicts_ok=True)

    async def settle(self, db: str, older_than: float = 30.0) -> int:
        """Append the log entries of writes whose writer stopped before it did; merge forks.

        Run by every instance now and then; a duplicate entry only costs a reader
        a second look at the same document.
        """
        view = _view(self._meta(db), "unsettled")
        answer = await self.client.json("GET", view, params={"limit": "500"})
        cutoff = time.time() - older_than
        ids = [
            str(row["id"])[len(layout.META_PREFIX) :]
            for row in answer.get("rows", [])
            if float(row.get("key") or 0) < cutoff
        ]
        found = await metas.load(self.client, self._meta(db), ids)
        plans = []
        for meta in found.values():
            doc = metas.body(meta.doc_id, meta.place, meta.version, meta.tree, meta.places)
            doc["_rev"] = meta.couch_rev
            plans.append(_Plan(0, _no_write(meta.doc_id), doc, meta))
        for p in plans:  # forks first: one meta again, then its entry
            if p.old is not None and p.old.losers:
                p.doc["pending"] = time.time()
                await self._save_metas(db, [p])
        await self._log_writes(db, plans)
        return len(plans)

    async def _bulk(
        self, couch_db: str, docs: Sequence[Mapping[str, Any]], *, conflicts_ok: bool
    ) -> list[dict[str, Any]]:
        if not docs:
            return []
        answers: list[dict[str, Any]] = await self.client.json(
            "POST", path(couch_db, "_bulk_docs"), body={"docs": list(docs)}
        )
        for answer in answers:
            error = answer.get("error")
            if error and not (conflicts_ok and error == "conflict"):
                raise StoreError(f"CouchDB refused a write: {error}: {answer.get('reason', '')}")
        return answers

    # -- changes ------------------------------------------------------------------
    async def place_changes(
        self, db: str, places: frozenset[str], cursor: Mapping[str, Position], limit: int
    ) -> LogPage:
        await self._settings_of(db)
        order = sorted(places)
        done = {p: cursor.get(p, (0, 0))[0] for p in order}
        runs: dict[str, list[Entry]] = {p: [] for p in order}
        window, open_places = 2, order
        while open_places:  # one key per place first: a no-op sync costs one request
            got = await self.log.read(self._log(db), done, open_places, window)
            full = []
            for p in open_places:
                runs[p] += got[p]
                if got[p]:
                    done[p] = got[p][-1].position
                if len(got[p]) == window - 1:
                    full.append(p)
            open_places, window = full, min(window * 4, limit + 1)
            if sum(len(e.ids) for run in runs.values() for e in run) >= limit:
                break
        ids = [i for run in runs.values() for e in run for i, _ in e.ids]
        found = await metas.load(self.client, self._meta(db), ids)
        rows, walked_all = _walk(order, runs, cursor, found, limit)
        return LogPage(rows, walked_all and not open_places)

    async def global_changes(
        self, db: str, since: str | None, limit: int, descending: bool = False
    ) -> GlobalPage:
        await self._settings_of(db)
        params = {"include_docs": "true", "limit": str(limit), "style": "all_docs"}
        if descending:
            params["descending"] = "true"
        if since is not None:
            params["since"] = since
        answer = await self.client.json("GET", path(self._meta(db), "_changes"), params=params)
        rows: list[tuple[Change, str]] = []
        for row in answer.get("results", []):
            doc = row.get("doc")
            token = _seq_text(row.get("seq"))
            if not doc or "tree" not in doc:
                continue
            meta = metas._parse(doc)
            tree = meta.tree
            leaves = tuple((r, tree[r].deleted) for r in revtree.sorted_leaves(tree))
            win = meta.winner
            rows.append(
                (
                    Change(meta.version, meta.doc_id, meta.place, win, tree[win].deleted, leaves),
                    token,
                )
            )
        return GlobalPage(rows, _seq_text(answer.get("last_seq")))

    async def log_tails(self, db: str, places: frozenset[str]) -> dict[str, int]:
        await self._settings_of(db)
        return await self.log.tails(self._log(db), sorted(places))

    async def save_cursor(self, db: str, key: str, positions: Mapping[str, Position]) -> None:
        if (db, key) in self._cursors:
            return
        doc = {"positions": [[p, d, o] for p, (d, o) in sorted(positions.items())]}
        with contextlib.suppress(Conflict):  # named by its content: already kept
            await self.client.json("PUT", path(self._data(db), f"t:{key}"), body=doc)
        self._remember_cursor(db, key, dict(positions))

    async def load_cursor(self, db: str, key: str) -> dict[str, Position] | None:
        known = self._cursors.get((db, key))
        if known is not None:
            return known
        doc = await self._get(db, path(self._data(db), f"t:{key}"))
        if doc is None:
            return None
        found = {str(p): (int(d), int(o)) for p, d, o in doc["positions"]}
        self._remember_cursor(db, key, found)
        return found

    def _remember_cursor(self, db: str, key: str, positions: dict[str, Position]) -> None:
        if len(self._cursors) > 10_000:
            self._cursors.clear()
        self._cursors[(db, key)] = positions

    async def wait_for_change(self, db: str, timeout: float) -> bool:
        since = self._watched.get(db, "now")
        params = {
            "feed": "longpoll",
            "since": since,
            "timeout": str(int(timeout * 1000)),
            "limit": "1",
        }
        answer = await self.client.json(
            "GET", path(self._log(db), "_changes"), params=params, timeout=timeout + 10
        )
        self._watched[db] = _seq_text(answer.get("last_seq", since))
        return bool(answer.get("results"))

    async def all_docs(
        self, db: str, places: frozenset[str] | None, query: AllDocsQuery
    ) -> tuple[int, list[Change]]:
        await self._settings_of(db)
        if places is None:
            return await self._all_docs_everywhere(db, query)
        total = (await self._counts(db, places))[0]
        stop = None if query.limit is None else query.skip + query.limit
        runs = await asyncio.gather(*(self._live_in(db, p, query, stop) for p in sorted(places)))
        merged = sorted(
            (c for run in runs for c in run), key=lambda c: c.id, reverse=query.descending
        )
        return total, merged[query.skip : stop]

    async def _all_docs_everywhere(self, db: str, query: AllDocsQuery) -> tuple[int, list[Change]]:
        view = _view(self._meta(db), "live")
        total_rows = (await self.client.json("GET", view)).get("rows", [])
        total = int(total_rows[0]["value"]) if total_rows else 0
        params = _range_params(query.start, query.end, query)
        params.update(reduce="false", include_docs="true", skip=str(query.skip))
        if query.limit is not None:
            params["limit"] = str(query.limit)
        answer = await self.client.json("GET", view, params=params)
        return total, [_change_of(row["doc"]) for row in answer.get("rows", []) if row.get("doc")]

    async def _live_in(
        self, db: str, place: str, query: AllDocsQuery, stop: int | None
    ) -> list[Change]:
        view = _view(self._meta(db), "live_by_place")
        low: list[Any] = [place] if query.start is None else [place, query.start]
        high: list[Any] = [place, {}] if query.end is None else [place, query.end]
        if query.descending:
            low = [place, {}] if query.start is None else [place, query.start]
            high = [place] if query.end is None else [place, query.end]
        params = {
            "startkey": orjson.dumps(low).decode(),
            "endkey": orjson.dumps(high).decode(),
            "inclusive_end": "true" if query.inclusive_end else "false",
            "include_docs": "true",
        }
        if query.descending:
            params["descending"] = "true"
        if stop is not None:
            params["limit"] = str(stop)
        answer = await self.client.json("GET", view, params=params)
        return [_change_of(row["doc"]) for row in answer.get("rows", []) if row.get("doc")]

    # -- attachments ------------------------------------------------------------
    async def get_attachment(
        self, db: str, digest: str, places: frozenset[str] | None
    ) -> AttachmentBlob | None:
        await self._settings_of(db)
        if places is None:
            low = layout.attachment_id(digest, "")
            params = {
                "startkey": orjson.dumps(low).decode(),
                "endkey": orjson.dumps(low + "\ufff0").decode(),
                "limit": "1",
            }
            answer = await self.client.json("GET", path(self._data(db), "_all_docs"), params=params)
            ids = [str(r["id"]) for r in answer.get("rows", [])]
        else:
            keys = [layout.attachment_id(digest, p) for p in sorted(places)]
            ids = [str(d["_id"]) for d in await self._docs_by_key(self._data(db), keys)]
        if not ids:
            return None
        doc = await self._get(db, path(self._data(db), ids[0]), attachments="true")
        if doc is None:
            return None
        data = layout.unb64(doc["_attachments"]["blob"]["data"])
        place = ids[0][len(layout.attachment_id(digest, "")) :]
        return AttachmentBlob(digest, place, str(doc["key_ref"]), int(doc["length"]), data)

    # -- local documents ----------------------------------------------------------
    async def get_local(self, db: str, owner: str, doc_id: str) -> LocalDoc | None:
        await self._settings_of(db)
        doc = await self._get(db, path(self._data(db), layout.local_id(owner, doc_id)))
        return None if doc is None else LocalDoc(doc_id, str(doc["rev"]), layout.unb64(doc["body"]))

    async def put_local(
        self, db: str, owner: str, doc_id: str, expected_rev: str | None, body: bytes
    ) -> str:
        await self._settings_of(db)
        where = path(self._data(db), layout.local_id(owner, doc_id))
        current = await self._get(db, where)
        if expected_rev != (None if current is None else current["rev"]):
            raise Conflict()
        number = 0 if current is None else int(str(current["rev"]).split("-", 1)[1])
        rev = f"0-{number + 1}"
        doc: dict[str, Any] = {"owner": owner, "id": doc_id, "rev": rev, "body": layout.b64(body)}
        if current is not None:
            doc["_rev"] = current["_rev"]
        await self.client.json("PUT", where, body=doc)  # a 409: someone saved it meanwhile
        return rev

    async def delete_local(self, db: str, owner: str, doc_id: str, rev: str | None) -> None:
        await self._settings_of(db)
        where = path(self._data(db), layout.local_id(owner, doc_id))
        current = await self._get(db, where)
        if current is None:
            raise NotFound("missing")
        if rev != current["rev"]:
            raise Conflict()
        await self.client.json("DELETE", where, params={"rev": str(current["_rev"])})


def _encoded(length: int) -> int:
    """Bytes of ``length`` bytes of sealed data once base64 in a JSON document."""
    return (length + 2) // 3 * 4 + 512


def _strings_of(doc: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    for value in doc.values():
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, Mapping):
            found += _strings_of(value)
    return found


def _view(meta_db: str, name: str) -> str:
    return path(meta_db) + f"/{layout.DESIGN}/_view/{name}"


def _design() -> dict[str, Any]:
    doc = dict(layout.DESIGN_DOC)
    doc.pop("_id")
    return doc


def _attachment_doc(blob: AttachmentBlob) -> dict[str, Any]:
    return {
        "_id": layout.attachment_id(blob.digest, blob.place),
        "key_ref": blob.key_ref,
        "length": blob.length,
        "_attachments": {
            "blob": {"content_type": "application/octet-stream", "data": layout.b64(blob.data)}
        },
    }


def _body_key(couch_id: str) -> tuple[str, str]:
    """``r:REV:DOCID`` -> (doc id, rev); a rev never holds a colon."""
    _, rev, doc_id = couch_id.split(":", 2)
    return doc_id, rev


def _no_write(doc_id: str) -> RevisionWrite:
    return RevisionWrite(doc_id, ("0-settle",), False, "", "", b"", False)


def _change_of(doc: Mapping[str, Any]) -> Change:
    meta = metas._parse(doc)
    tree, win = meta.tree, meta.winner
    leaves = tuple((r, tree[r].deleted) for r in revtree.sorted_leaves(tree))
    return Change(meta.version, meta.doc_id, meta.place, win, tree[win].deleted, leaves)


def _seq_text(seq: object) -> str:
    return seq if isinstance(seq, str) else orjson.dumps(seq).decode()


def _range_params(start: str | None, end: str | None, query: AllDocsQuery) -> dict[str, str]:
    params: dict[str, str] = {"inclusive_end": "true" if query.inclusive_end else "false"}
    if start is not None:
        params["startkey"] = orjson.dumps(start).decode()
    if end is not None:
        params["endkey"] = orjson.dumps(end).decode()
    if query.descending:
        params["descending"] = "true"
    return params


def _walk(
    order: Sequence[str],
    runs: Mapping[str, Sequence[Entry]],
    cursor: Mapping[str, Position],
    found: Mapping[str, metas.Meta],
    limit: int,
) -> tuple[list[LogRow], bool]:
    """The rows of the entries read, place after place; stops a place at an entry whose
    documents' metas are older than the entry says (not visible yet)."""
    rows: list[LogRow] = []
    sent = 0
    seen: set[str] = set()
    for place in order:
        position, offset = cursor.get(place, (0, 0))
        for entry in runs[place]:
            if any(found.get(i) is None or found[i].version < v for i, v in entry.ids):
                break  # the entry is ahead of the metas we can see: stop here, retry later
            ids = entry.ids[offset:] if entry.position == position + 1 else entry.ids
            skipped = len(entry.ids) - len(ids)
            for n, (doc_id, _) in enumerate(ids, start=skipped + 1):
                meta = found[doc_id]
                last = n == len(entry.ids)
                after = (entry.position, 0) if last else (entry.position - 1, n)
                fresh = meta.place == place and doc_id not in seen
                change = _change_of_meta(meta) if fresh else None
                seen.add(doc_id)
                rows.append(LogRow(change, place, after))
                sent += change is not None
                if sent >= limit:
                    return rows, False
            offset = 0
            position = entry.position
    return rows, True


def _change_of_meta(meta: metas.Meta) -> Change:
    tree, win = meta.tree, meta.winner
    leaves = tuple((r, tree[r].deleted) for r in revtree.sorted_leaves(tree))
    return Change(meta.version, meta.doc_id, meta.place, win, tree[win].deleted, leaves)
