"""The changes feed for a caller's set: ``GET|POST /db/_changes``.

Reads as the protocol does: plan the phases the since-token asks for
(back-fill new places, then carry on after ``since``), walk them page by page
from the (place, seq) index, filter, render.  ``descending=true`` walks the
same index from the end down, as CouchDB does (``since`` ignored).  Only the caller's places are
ever read, so the cost follows the size of their set.
https://docs.couchdb.org/en/stable/api/database/changes.html
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from sync.errors import BadRequest
from sync.replication import since as tokens
from sync.replication import vector
from sync.replication.context import Caller, Parts
from sync.replication.reads import Reader, ReadOptions
from sync.replication.selector import Selector
from sync.replication.since import Backfill, SinceToken
from sync.replication.vector import GlobalToken, VectorToken
from sync.store.base import Change, DbInfo, LogStore, Position, SeqStore

log = structlog.get_logger()

# A client's place in the feed: one sequence (SQLite), or a position per place (CouchDB).
Token = SinceToken | VectorToken | GlobalToken


@dataclass(frozen=True)
class ChangesQuery:
    since: Token | None  # None: "now"
    limit: int
    style_all_docs: bool = False
    include_docs: bool = False
    descending: bool = False
    doc_ids: frozenset[str] | None = None
    selector: Selector | None = None
    design_only: bool = False
    read: ReadOptions = field(default_factory=ReadOptions)


@dataclass(frozen=True)
class ChangesPage:
    results: list[dict[str, Any]]
    last_seq: str | int
    pending: int


class SnapshotRegistry:
    """Place sets named by hash, so tokens stay short (``scope_snapshots``)."""

    def __init__(
        self,
        save: Callable[[str, frozenset[str]], Awaitable[None]],
        load: Callable[[str], Awaitable[frozenset[str] | None]],
    ) -> None:
        self._save, self._load = save, load
        self._known: dict[str, frozenset[str]] = {}

    async def name(self, places: frozenset[str]) -> str:
        digest = tokens.snapshot_hash(places)
        if digest not in self._known:
            await self._save(digest, places)
            self._known[digest] = places
        return digest

    async def places(self, digest: str) -> frozenset[str] | None:
        if digest not in self._known:
            found = await self._load(digest)
            if found is None:
                return None
            self._known[digest] = found
        return self._known[digest]


class ChangesFeed:
    def __init__(self, parts: Parts, reader: Reader, snapshots: SnapshotRegistry) -> None:
        self.parts, self.reader, self.snapshots = parts, reader, snapshots

    def parse_since(self, raw: object, caller: Caller) -> Token:
        """``since`` as the client sent it, in the form this store's feed reads."""
        if isinstance(self.parts.store, LogStore):
            admin = caller.scope.read is None
            if tokens.is_embedded(raw):  # a checkpoint made before `fieldsync migrate`
                # An admin's feed is CouchDB's own, unrelated to the embedded sequence:
                # it starts over (sends everything again, skips nothing).
                return GlobalToken(None) if admin else tokens.parse(raw)
            return vector.parse(raw, admin=admin)
        return tokens.parse(raw)

    async def described(self, db: str, caller: Caller) -> tuple[DbInfo, str | int]:
        """The database's info for this caller, and its ``update_seq`` as they see it; a
        worker's on a log store read together (the counts and the places' tails)."""
        store, read = self.parts.store, caller.scope.read
        if isinstance(store, LogStore) and read is not None:
            info, tails = await asyncio.gather(store.db_info(db, read), store.log_tails(db, read))
            return info, VectorToken({p: (n, 0) for p, n in tails.items()}).render()
        info = await store.db_info(db, read)
        return info, await self.update_seq(db, caller, info)

    async def update_seq(self, db: str, caller: Caller, info: DbInfo) -> str | int:
        """The database's ``update_seq`` as this caller sees it: a token of "now"."""
        read, store_seq = caller.scope.read, info.update_seq
        store = self.parts.store
        if isinstance(store, LogStore):
            if read is None:
                return _now(info).render()
            tails = await store.log_tails(db, read)
            return VectorToken({p: (n, 0) for p, n in tails.items()}).render()
        if read is None:
            return store_seq
        return f"{store_seq}-{await self.snapshots.name(read)}"

    async def page(self, db: str, caller: Caller, query: ChangesQuery) -> ChangesPage:
        page = await self._page(db, caller, query)
        if not query.include_docs:  # with the bodies, the page recorded their read
            self.parts.announced(db, caller, (str(row["id"]) for row in page.results))
        return page

    async def _page(self, db: str, caller: Caller, query: ChangesQuery) -> ChangesPage:
        if isinstance(self.parts.store, LogStore):
            return await self._log_page(self.parts.store, db, caller, query)
        info = await self.parts.store.db_info(db, frozenset())
        upto = int(info.update_seq)
        read = caller.scope.read
        current = None if read is None else await self.snapshots.name(read)
        if query.descending:
            return await self._descending_page(db, caller, query, current, upto)
        assert query.since is None or isinstance(query.since, SinceToken)
        start = query.since or SinceToken(upto, current)
        walk = self._walk(db, read, current, start, upto, _page_size(query))
        results, seen, exhausted = await self._collect(db, caller, query, walk)
        last = seen if isinstance(seen, SinceToken) and not exhausted else SinceToken(upto, current)
        pending = 0 if last.backfill else await self._seq.count_changes(db, read, last.seq)
        return ChangesPage(results, last.render(), pending)

    async def _log_page(
        self, store: LogStore, db: str, caller: Caller, query: ChangesQuery
    ) -> ChangesPage:
        """The feed of a log store: a cursor per place (workers) or CouchDB's own (admins)."""
        read = caller.scope.read
        size = _page_size(query)
        if read is None:
            start = query.since if isinstance(query.since, GlobalToken) else GlobalToken(None)
            if query.since is None:  # "now", or descending: counted from the whole database
                info = await store.db_info(db, None)
                start = GlobalToken(None if query.descending else "now", _count(info))
            whole = _GlobalWalk(start)
            walk = whole.walk(store, db, size, query.descending)
            results, last, exhausted = await self._collect(db, caller, query, walk)
            if exhausted or last is None:
                last = whole.end
            return ChangesPage(results, last.render(), 0 if exhausted else 1)
        if query.descending:
            raise BadRequest("descending=true is only supported for admins on this database")
        if isinstance(query.since, VectorToken):
            known = await _resolve(store, db, query.since)
            positions = {p: known.get(p, (0, 0)) for p in read}
        elif isinstance(query.since, SinceToken):
            positions = await self._migrated(store, db, read, query.since)
        else:  # "now"
            tails = await store.log_tails(db, read)
            positions = {p: (n, 0) for p, n in tails.items()}
        base = None
        if len(read) > _INLINE_PLACES:  # tokens name a stored start and carry what moved
            base = vector.base_key(positions)
            await store.save_cursor(db, base, positions)
        state = _LogWalk(positions, base)
        walk = state.walk(store, db, read, size)
        results, last, exhausted = await self._collect(db, caller, query, walk)
        if exhausted or last is None:
            last = state.token()
        return ChangesPage(results, last.render(), 0 if exhausted else 1)

    async def _migrated(
        self, store: LogStore, db: str, read: frozenset[str], since: SinceToken
    ) -> dict[str, Position]:
        """Where an embedded store's token stands in the logs ``fieldsync migrate`` wrote
        (ADR 0001, *Moving from the embedded store*): the places its snapshot covered at
        their position for ``since.seq``, those a back-fill had reached at theirs for the
        back-fill's sequence, the others (new to the scope) from their start."""
        covered = read
        if since.snapshot is not None:
            covered = read & (await self.snapshots.places(since.snapshot) or frozenset())
        positions = {
            p: (n, 0) for p, n in (await store.migrated_positions(db, since.seq, covered)).items()
        }
        fill = since.backfill
        if fill is not None and fill.target == tokens.snapshot_hash(read):
            filled = read - covered
            for p, n in (await store.migrated_positions(db, fill.done_upto, filled)).items():
                positions[p] = (n, 0)
        return {p: positions.get(p, (0, 0)) for p in read}

    async def _descending_page(
        self, db: str, caller: Caller, query: ChangesQuery, current: str | None, upto: int
    ) -> ChangesPage:
        """``descending=true``: the caller's set newest first, from the database's end.

        As CouchDB does (fabric ``get_start_seq``), ``since`` is ignored: the walk
        starts at the current update sequence.  ``last_seq`` is the token of the
        last (oldest) change the walk looked at, filtered out or not, or the end
        of the database when it looked at none.  The back-fill phase of
        since-tokens does not apply: the walk reads every place of the caller's
        current set (their read scope, never more) down to the first sequence.
        ``pending`` counts the caller's changes older than ``last_seq``.
        """
        read = caller.scope.read
        walk = self._walk_descending(db, read, current, upto, _page_size(query))
        results, last, exhausted = await self._collect(db, caller, query, walk)
        if not isinstance(last, SinceToken):
            return ChangesPage(results, SinceToken(upto, current).render(), 0)
        pending = 0 if exhausted else await self._older(db, read, last.seq)
        return ChangesPage(results, last.render(), pending)

    async def _collect(
        self,
        db: str,
        caller: Caller,
        query: ChangesQuery,
        walk: AsyncGenerator[tuple[Change, Token], None],
    ) -> tuple[list[dict[str, Any]], Token | None, bool]:
        """The rows of ``walk`` that pass the filters, up to ``limit``.

        Also the token of the last change looked at (None if none) and whether
        the walk ran out rather than stopping at the limit.  Bodies (for a
        selector or ``include_docs``) are opened a chunk of changes at a time,
        in one store call per chunk.
        """
        results: list[dict[str, Any]] = []
        last: Token | None = None
        try:
            async for chunk in _chunks(walk, min(_CHUNK, _page_size(query))):
                marked = [(c, t, self._cheap_match(c, query)) for c, t in chunk]
                wanted = [c for c, _, passed in marked if passed]
                if query.selector is None:  # every one is sent: open no more than fit
                    wanted = wanted[: query.limit - len(results)]
                docs = await self._docs(db, caller, wanted, query)
                for change, token, passed in marked:
                    last = token
                    if not passed:
                        continue
                    doc = docs.get(change.id)
                    if query.selector is not None and (
                        change.deleted or doc is None or not query.selector.matches(doc)
                    ):
                        continue
                    results.append(await self._render(db, caller, change, token, query, doc))
                    if len(results) >= query.limit:
                        return results, last, False
        finally:
            await walk.aclose()
        return results, last, True

    @property
    def _seq(self) -> SeqStore:
        store = self.parts.store
        assert isinstance(store, SeqStore)
        return store

    async def _older(self, db: str, read: frozenset[str] | None, seq: int) -> int:
        """How many of the set's changes lie below ``seq``."""
        store = self._seq
        return await store.count_changes(db, read, 0) - await store.count_changes(db, read, seq - 1)

    async def _walk(
        self,
        db: str,
        read: frozenset[str] | None,
        current: str | None,
        start: SinceToken,
        upto: int,
        page: int,
    ) -> AsyncGenerator[tuple[Change, SinceToken], None]:
        """Every change after ``start`` up to ``upto``, with the token that follows it."""
        if read is not None and current is not None and start.seq > 0:
            async for item in self._backfill(db, read, current, start, page):
                yield item
        since = start.seq
        while since < upto:
            rows = await self._seq.changes(db, read, since, page, upto=upto)
            for row in rows:
                yield row, SinceToken(row.seq, current)
            if len(rows) < page:
                return
            since = rows[-1].seq

    async def _walk_descending(
        self, db: str, read: frozenset[str] | None, current: str | None, upto: int, page: int
    ) -> AsyncGenerator[tuple[Change, SinceToken], None]:
        """Every change of the set at or below ``upto``, newest first, with its own token."""
        while upto > 0:
            rows = await self._seq.changes(db, read, 0, page, upto=upto, descending=True)
            for row in rows:
                yield row, SinceToken(row.seq, current)
            if len(rows) < page:
                return
            upto = rows[-1].seq - 1

    async def _backfill(
        self, db: str, read: frozenset[str], current: str, start: SinceToken, page: int
    ) -> AsyncIterator[tuple[Change, SinceToken]]:
        """Older documents of places the token does not cover yet (scope growth)."""
        if start.snapshot is None:
            return
        old = await self.snapshots.places(start.snapshot)
        new = read - (old or frozenset())
        if not new:
            return
        done = (
            start.backfill.done_upto if start.backfill and start.backfill.target == current else 0
        )
        while True:
            rows = await self._seq.changes(
                db, new, done, page, upto=start.seq, include_deleted=False
            )
            for row in rows:
                yield row, SinceToken(start.seq, start.snapshot, Backfill(current, row.seq))
            if len(rows) < page:
                return
            done = rows[-1].seq

    @staticmethod
    def _cheap_match(change: Change, query: ChangesQuery) -> bool:
        """The filters that need no body."""
        if query.doc_ids is not None and change.id not in query.doc_ids:
            return False
        return not (query.design_only and not change.id.startswith("_design/"))

    async def _docs(
        self, db: str, caller: Caller, changes: list[Change], query: ChangesQuery
    ) -> dict[str, dict[str, Any]]:
        """The winning revisions of ``changes``, if the query needs bodies at all."""
        if query.selector is None and not query.include_docs:
            return {}
        if query.selector is not None and not query.include_docs:
            changes = [c for c in changes if not c.deleted]  # a selector never matches those
        if not changes:
            return {}
        opts = query.read if query.include_docs else ReadOptions()
        wanted = [{"id": c.id, "rev": c.winner} for c in changes]
        answer = await self.reader.bulk_get(db, caller, wanted, opts)
        return {
            row["id"]: entry["ok"]
            for row in answer["results"]
            for entry in row["docs"]
            if "ok" in entry
        }

    async def _render(
        self,
        db: str,
        caller: Caller,
        change: Change,
        token: Token,
        query: ChangesQuery,
        doc: dict[str, Any] | None,
    ) -> dict[str, Any]:
        revs = await self._leaves(db, caller, change) if query.style_all_docs else [change.winner]
        row: dict[str, Any] = {
            "seq": token.render(),
            "id": change.id,
            "changes": [{"rev": r} for r in revs],
        }
        if change.deleted:
            row["deleted"] = True
        if query.include_docs:
            row["doc"] = doc
        return row

    async def _leaves(self, db: str, caller: Caller, change: Change) -> list[str]:
        """The leaves (``style=all_docs``) the caller may fetch.

        A branch may lie in a place outside the caller's set; advertising it would
        make ``_bulk_get`` answer an error, and PouchDB fails the whole batch on one.
        """
        revs = [rev for rev, _ in change.leaves]
        if len(revs) == 1:  # the winner: the change itself is in the caller's set
            return revs
        return await self.parts.readable_revs(db, caller, change.id, revs)


def _now(info: DbInfo) -> GlobalToken:
    """An admin's token of "now": CouchDB's own, after every document."""
    return GlobalToken(str(info.update_seq), _count(info))


def _count(info: DbInfo) -> int:
    """The rows of a whole feed read from the start: one per document, deleted ones too."""
    return info.doc_count + info.doc_del_count


class _GlobalWalk:
    """Walks the whole database's changes (CouchDB's own feed), remembering where it ended
    and counting the rows it gave (descending: down from the count it started at)."""

    def __init__(self, start: GlobalToken) -> None:
        self.end = start

    async def walk(
        self, store: LogStore, db: str, size: int, descending: bool
    ) -> AsyncGenerator[tuple[Change, Token], None]:
        since, count = self.end.seq, self.end.count
        step = -1 if descending else 1
        while True:
            page = await store.global_changes(db, since, size, descending)
            for change, token in page.rows:
                count = max(0, count + step)
                yield change, GlobalToken(token, count)
            self.end = GlobalToken(page.last, count)
            if len(page.rows) < size or page.last == since or descending:
                return
            since = page.last


class _LogWalk:
    """Walks place logs from ``positions``, keeping them up to date as rows go by."""

    def __init__(self, positions: dict[str, Position], base: str | None = None) -> None:
        self.positions = positions
        self.start = dict(positions)
        self.base = base

    def token(self) -> VectorToken:
        if self.base is None:
            return VectorToken(dict(self.positions))
        moved = {p: v for p, v in self.positions.items() if v != self.start.get(p)}
        return VectorToken(moved, self.base)

    async def walk(
        self, store: LogStore, db: str, places: frozenset[str], size: int
    ) -> AsyncGenerator[tuple[Change, Token], None]:
        while True:
            page = await store.place_changes(db, places, self.positions, size)
            for row in page.rows:
                self.positions[row.place] = row.after
                if row.change is not None:
                    yield row.change, self.token()
            if page.exhausted or not page.rows:
                return


async def _resolve(store: LogStore, db: str, token: VectorToken) -> dict[str, Position]:
    """The positions a token stands for; a stored start that is gone counts from 0."""
    if token.base is None:
        return dict(token.positions)
    stored = await store.load_cursor(db, token.base)
    if stored is None:
        log.warning("since_token_base_missing", db=db, base=token.base)
        return {}
    return {**stored, **token.positions}


# Scopes of more places than this get short tokens naming a stored start (vector.py).
_INLINE_PLACES = 24
_CHUNK = 100  # changes whose bodies are opened together


async def _chunks(
    walk: AsyncIterator[tuple[Change, Token]], size: int
) -> AsyncIterator[list[tuple[Change, Token]]]:
    chunk: list[tuple[Change, Token]] = []
    async for item in walk:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _page_size(query: ChangesQuery) -> int:
    filtered = query.doc_ids is not None or query.selector is not None or query.design_only
    return 500 if filtered else max(1, min(query.limit, 1000))


def parse_doc_ids(raw: Any) -> frozenset[str]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # the stdlib parser recurses per level
            raise BadRequest("doc_ids must be a JSON array of strings") from exc
    if not isinstance(raw, list) or not all(isinstance(i, str) for i in raw):
        raise BadRequest("doc_ids must be a JSON array of strings")
    return frozenset(raw)
