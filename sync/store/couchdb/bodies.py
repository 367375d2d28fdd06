"""Sealed bodies of revisions, kept a while in memory and fetched ahead of the reader.

A revision's body never changes once the revision is in its document's tree
(:meth:`CouchStore._replace_stale`: the body written with the tree is the one
kept), so a body read once can be served again without asking CouchDB.  Bodies
are kept by the database's uuid (a database deleted and created again is another
database), document id and revision, sealed exactly as CouchDB holds them: this
cache holds no plaintext.

A pull asks for the bodies of the changes it was just sent (PouchDB: ``_changes``,
``_revs_diff``, then ``_bulk_get`` of the same revisions).  When a page of changes
is a catch-up (many changes), the store fetches the bodies of its leaves in the
background while the page travels (:meth:`BodyCache.ahead`); the ``_bulk_get``
that follows finds them here, or waits for the fetch under way instead of asking
CouchDB a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence

from sync.store.base import DocMeta, StoredRevision

Pair = tuple[str, str]  # (doc id, rev)
Fetch = Callable[[Sequence[Pair]], Awaitable[Mapping[Pair, StoredRevision]]]

log = logging.getLogger(__name__)


class BodyCache:
    """Bodies by (database uuid, doc id, rev), least recently used out past ``max_bytes``.

    A body is kept at most ``max_age`` seconds: a data-key rotation re-seals the
    bodies in CouchDB and then deletes the old key versions
    (:mod:`sync.couchrotation`), so a sealed copy kept here must not outlive the
    rotation's wait (``2 * FIELDSYNC_KEY_REFRESH_SECONDS`` at least).
    """

    def __init__(self, max_bytes: int, max_age: float = 30.0) -> None:
        self.max_bytes, self.max_age = max_bytes, max_age
        self._when: dict[tuple[str, str, str], float] = {}
        self.hits = self.misses = 0
        self._kept: OrderedDict[tuple[str, str, str], StoredRevision] = OrderedDict()
        self._bytes = 0
        self._coming: dict[tuple[str, str, str], asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(
        self, space: str, wanted: Sequence[Pair], fetch: Fetch
    ) -> dict[Pair, StoredRevision]:
        """The bodies of ``wanted`` that exist: kept ones, awaited ones, the rest fetched."""
        pending = {self._coming[k] for p in wanted if (k := (space, *p)) in self._coming}
        if pending:  # fetched ahead for this very read: do not ask twice
            await asyncio.wait([asyncio.shield(f) for f in pending])
        found: dict[Pair, StoredRevision] = {}
        missing: list[Pair] = []
        oldest = time.monotonic() - self.max_age
        for pair in dict.fromkeys(wanted):
            kept = self._kept.get((space, *pair))
            if kept is not None and self._when.get((space, *pair), 0.0) < oldest:
                self.forget(space, [pair])
                kept = None
            if kept is None:
                missing.append(pair)
            else:
                self._kept.move_to_end((space, *pair))
                found[pair] = kept
        self.hits += len(found)
        self.misses += len(missing)
        if missing:
            fetched = await fetch(missing)
            self.keep(space, fetched)
            found.update(fetched)
        return found

    def ahead(self, space: str, wanted: Sequence[Pair], fetch: Fetch) -> None:
        """Fetch the bodies of ``wanted`` not kept yet, in the background."""
        todo = [p for p in dict.fromkeys(wanted) if (space, *p) not in self._kept]
        todo = [p for p in todo if (space, *p) not in self._coming]
        if not todo:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for pair in todo:
            self._coming[(space, *pair)] = done
        task = asyncio.create_task(self._fetch_ahead(space, todo, fetch, done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch_ahead(
        self, space: str, todo: Sequence[Pair], fetch: Fetch, done: asyncio.Future[None]
    ) -> None:
        try:
            self.keep(space, await fetch(todo))
        except Exception as exc:  # a reader that needs them fetches them itself
            log.debug("fetching bodies ahead failed: %s", exc)
        finally:
            for pair in todo:
                if self._coming.get((space, *pair)) is done:
                    del self._coming[(space, *pair)]
            if not done.done():
                done.set_result(None)

    def keep(self, space: str, bodies: Mapping[Pair, StoredRevision]) -> None:
        """Keep ``bodies`` (fetched, or held inline by the metas just read)."""
        for pair, stored in bodies.items():
            key = (space, *pair)
            old = self._kept.pop(key, None)
            if old is not None:
                self._bytes -= _size(old)
            self._kept[key] = stored
            self._when[key] = time.monotonic()
            self._bytes += _size(stored)
        while self._bytes > self.max_bytes and self._kept:
            gone, dropped = self._kept.popitem(last=False)
            self._when.pop(gone, None)
            self._bytes -= _size(dropped)

    def forget(self, space: str, pairs: Sequence[Pair]) -> None:
        """Drop bodies this instance deleted (stemmed out of their trees)."""
        for pair in pairs:
            old = self._kept.pop((space, *pair), None)
            self._when.pop((space, *pair), None)
            if old is not None:
                self._bytes -= _size(old)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _size(stored: StoredRevision) -> int:
    return len(stored.body) + len(stored.doc_id) + len(stored.rev) + 64


class RecentMetas:
    """Metas a changes page just read, by (database uuid, doc id), for ``seconds``.

    The ``_bulk_get`` that follows a page asks for the revisions the page named;
    a meta read a moment ago holds them (a revision tree only grows).  A write
    through this instance makes its documents' metas *stale*: they no longer
    answer for themselves, but the fresh read that replaces them is merged with
    them (:meth:`stale`), so a revision the page named is never lost to a read
    from a replica that has not seen it yet.  A write through another instance
    is seen once they expire, as a lagging replica's would be.
    """

    def __init__(self, seconds: float, most: int) -> None:
        self.seconds, self.most = seconds, most
        self._kept: OrderedDict[tuple[str, str], tuple[float, DocMeta, bool]] = OrderedDict()

    def keep(self, space: str, found: Mapping[str, DocMeta]) -> None:
        """Metas just read; one kept already is merged in, as a read from a replica behind
        the one that answered before must not take back a revision a page has named."""
        now = time.monotonic()
        oldest = now - self.seconds
        for doc_id, meta in found.items():
            kept = self._kept.pop((space, doc_id), None)
            if kept is not None and kept[0] >= oldest:
                meta = kept[1].merged(meta)
            self._kept[(space, doc_id)] = (now, meta, False)
        while len(self._kept) > self.most:
            self._kept.popitem(last=False)

    def get(self, space: str, ids: Sequence[str]) -> dict[str, DocMeta]:
        """The metas that still answer for themselves (read recently, not written since)."""
        return {i: meta for i, (meta, stale) in self._live(space, ids).items() if not stale}

    def stale(self, space: str, ids: Sequence[str]) -> dict[str, DocMeta]:
        """The recent metas of documents written since: to merge into a fresh read."""
        return {i: meta for i, (meta, stale) in self._live(space, ids).items() if stale}

    def _live(self, space: str, ids: Sequence[str]) -> dict[str, tuple[DocMeta, bool]]:
        oldest = time.monotonic() - self.seconds
        found = {}
        for doc_id in ids:
            kept = self._kept.get((space, doc_id))
            if kept is not None and kept[0] >= oldest:
                found[doc_id] = (kept[1], kept[2])
        return found

    def forget(self, space: str, ids: Sequence[str]) -> None:
        """Documents written through this instance: their kept metas turn stale."""
        for doc_id in ids:
            kept = self._kept.get((space, doc_id))
            if kept is not None:
                self._kept[(space, doc_id)] = (kept[0], kept[1], True)
