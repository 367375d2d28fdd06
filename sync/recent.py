"""Callers read a moment ago, answered again without asking the store.

A phone's sync is a burst of requests (PouchDB 9's no-op sync: nine in well
under a second), and on CouchDB each one read its caller afresh: most of what
CouchDB did for a fleet of phones.  :class:`RecentLookups` keeps each answer for
``seconds`` (``FIELDSYNC_ACCOUNTS_CACHE_SECONDS``), so a change made on another
instance (a user disabled, a scope changed, a session ended) applies here within
that bound; a change made through this instance applies at once, because the
adapter calls :meth:`forget` after every write.

An answer read while a write was under way is never kept: :meth:`put` takes the
generation seen *before* the read and drops the answer if a :meth:`forget` came
between.  Nothing here is shared between processes.  The device check keeps its
bindings here too (``device_registry.couchdb``), counted from when the read was
sent, and there every change that can refuse a phone waits the bound out before
it is answered (docs/adr/0006).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")
T = TypeVar("T")

MOST = 10_000  # answers kept at once; past it, all are dropped (names a guesser made up, say)


class RecentLookups(Generic[V]):
    def __init__(
        self, seconds: float, most: int = MOST, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.seconds = seconds
        self._most = most
        self._clock = clock
        self._kept: dict[Hashable, tuple[float, V]] = {}
        self._reading: dict[Hashable, tuple[float, int, asyncio.Future[V]]] = {}
        self.generation = 0

    async def read_once(
        self, key: Hashable, read: Callable[[], Awaitable[V]], keep: Callable[[V], bool]
    ) -> V:
        """The answer for ``key``: kept, or the one a read already under way will give (if
        it was sent less than ``seconds`` ago and no write came since), or ``read()``'s,
        kept if ``keep`` says so.  A joined answer that ``keep`` refuses is read again:
        only answers worth keeping are shared."""
        if self.seconds <= 0:
            return await read()
        if (kept := self.get(key)) is not None:
            return kept
        under_way = self._reading.get(key)
        if under_way is not None:
            sent, generation, future = under_way
            if generation == self.generation and self._clock() - sent < self.seconds:
                with_it = await asyncio.shield(future)
                if keep(with_it):
                    return with_it
        generation, sent = self.generation, self._clock()
        future = asyncio.get_running_loop().create_future()
        self._reading[key] = (sent, generation, future)
        try:
            found = await read()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # nobody may be waiting: no "never retrieved" warning
            raise
        finally:
            if self._reading.get(key, (0.0, 0, None))[2] is future:
                del self._reading[key]
        future.set_result(found)
        if keep(found):
            self.put(key, found, generation, read_at=sent)
        return found

    def get(self, key: Hashable) -> V | None:
        """The answer kept for ``key`` if it is younger than ``seconds``."""
        kept = self._kept.get(key)
        if kept is None:
            return None
        if self._clock() - kept[0] >= self.seconds:
            del self._kept[key]
            return None
        return kept[1]

    def now(self) -> float:
        """This cache's clock: what :meth:`put` takes as ``read_at``."""
        return self._clock()

    def put(self, key: Hashable, value: V, generation: int, read_at: float | None = None) -> None:
        """Keep ``value``, read when :attr:`generation` was ``generation``, unless a
        write came since (or keeping is off).  Its age counts from ``read_at`` (when
        the read was sent, :meth:`now`) if given, else from now."""
        if self.seconds <= 0 or generation != self.generation:
            return
        if len(self._kept) >= self._most:
            self._kept.clear()
        self._kept[key] = (self._clock() if read_at is None else read_at, value)

    def forget(self) -> None:
        """A write went through this instance: nothing read before it is answered again."""
        self.generation += 1
        self._kept.clear()


class OnOneFile(Generic[V]):
    """The embedded adapters' rule (docs/adr/0005 and 0006, their embedded parts).

    The server's adapter keeps answers for ``seconds`` in :attr:`kept` and forgets them
    after every change it makes.  A management command's (``beside_server``) keeps
    nothing: it is another process on the same file, so after a change that can refuse
    it waits ``seconds`` out before it answers, and every answer the server still keeps
    was read after the change.
    """

    def __init__(
        self,
        seconds: float,
        *,
        beside_server: bool,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.kept: RecentLookups[V] = RecentLookups(0.0 if beside_server else seconds, clock=clock)
        self._wait = seconds if beside_server else 0.0
        self._sleep = sleep

    async def change(self, write: Awaitable[T], refusing: bool) -> T:
        """``write``'s result: what is kept is forgotten whatever the outcome; once
        written, a refusing change of a command returns only after the bound."""
        try:
            result = await write
        finally:
            self.kept.forget()
        if refusing and self._wait > 0:
            await self._sleep(self._wait)
        return result
