"""The next pages of a catch-up pull, read while the phone handles the one it was sent.

A phone catching up asks for changes a page at a time (PouchDB: ``limit`` 100),
and each page costs fieldsync two CouchDB round trips one after the other: the
log entries, then the metas they name.  When a page comes back full, the pages
after it are the ones the phone will ask for next (the first one's ``since`` is
this page's end), so they are read at once, in the background, and handed over
when asked.  PouchDB asks for its next page as soon as it has one, so reading
them one after the other still kept the phone waiting: each page's read could
start only once the one before it was walked (its end is the next one's start).
So they are read a few at a time (``store._PAGES_PER_READ_AHEAD``): one log
read and one meta read (``feed._METAS_PER_REQUEST`` ids) for the lot, then walked page
after page; the next lot is started when the phone has fewer than that many
pages waiting.

A page read ahead is as good as a page read from a replica a moment behind: the
walk's rules (``feed``) send a document only from the log entry of the version
its meta shows, and anything written after the read lies later in the log.  It
is kept for ``seconds`` and only for the exact request it answers; an unused
one is dropped, and a write through this instance drops the database's pages
(a ``_changes`` asked after a write shows it).  At most ``most`` pages are
kept (a few per phone catching up).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping

from sync.store.base import LogPage, Position

log = logging.getLogger(__name__)

Read = Callable[[Mapping[str, Position]], Awaitable[LogPage]]


def after(cursor: Mapping[str, Position], page: LogPage) -> dict[str, Position]:
    """The cursor a page leaves behind: where the next request will start."""
    moved = dict(cursor)
    for row in page.rows:
        moved[row.place] = row.after
    return moved


class PagesAhead:
    def __init__(self, seconds: float, most: int) -> None:
        self.seconds, self.most = seconds, most
        self._pages: OrderedDict[Hashable, tuple[float, asyncio.Future[LogPage]]] = OrderedDict()

    @staticmethod
    def key(
        space: str, places: frozenset[str], cursor: Mapping[str, Position], limit: int
    ) -> Hashable:
        return (space, places, tuple(sorted(cursor.items())), limit)

    def peek(self, key: Hashable) -> LogPage | bool:
        """The page read ahead for ``key``; True while it is being read; False: none."""
        found = self._pages.get(key)
        if found is None or time.monotonic() - found[0] > self.seconds:
            return False
        task = found[1]
        if not task.done():
            return True
        if task.cancelled() or task.exception() is not None:
            return False
        return task.result()

    async def take(self, key: Hashable) -> LogPage | None:
        """The page read ahead for exactly this request, or None (then read it now)."""
        found = self._pages.pop(key, None)
        if found is None:
            return None
        at, task = found
        if time.monotonic() - at > self.seconds:
            task.cancel()
            return None
        try:
            return await task
        except Exception:  # the request reads it itself, and meets the error there
            log.debug("page read ahead failed", exc_info=True)
            return None

    def start(self, key: Hashable, read: Awaitable[LogPage]) -> None:
        """Read the page for ``key`` in the background."""
        task = asyncio.ensure_future(read)
        task.add_done_callback(_retrieve)
        self._keep(key, task)

    def _keep(self, key: Hashable, task: asyncio.Future[LogPage]) -> None:
        old = self._pages.pop(key, None)
        if old is not None:
            old[1].cancel()
        self._pages[key] = (time.monotonic(), task)
        while len(self._pages) > self.most:
            _, (_, oldest) = self._pages.popitem(last=False)
            oldest.cancel()

    def put(self, key: Hashable, page: LogPage) -> None:
        """A page read along with another (a lot read ahead at once)."""
        done: asyncio.Future[LogPage] = asyncio.get_running_loop().create_future()
        done.set_result(page)
        self._keep(key, done)

    def forget(self, space: str) -> None:
        """A write through this instance: pages read ahead of it would not show it, and a
        ``_changes`` asked after a write must (read your writes): drop the database's."""
        for key in [k for k in self._pages if isinstance(k, tuple) and k[0] == space]:
            self._pages.pop(key)[1].cancel()

    async def close(self) -> None:
        tasks = [task for _, task in self._pages.values()]
        self._pages.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _retrieve(task: asyncio.Future[LogPage]) -> None:
    """A page nobody took: its error is not worth a warning (the request reads again)."""
    if not task.cancelled():
        task.exception()
