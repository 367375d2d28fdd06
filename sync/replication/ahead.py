"""Reads audited ahead: one audit entry for the documents a pull is about to read.

Every answer that carries a document's body waits until an audit entry naming it
is stored.  On the embedded store that is an append to a local journal and costs
nothing; on CouchDB each entry is a write the answer waits for, and a pull of
10,000 documents reads them in 100 ``_bulk_get``\\ s of 100: 100 writes, which on
shared cores cost CouchDB more than its own pull's checkpoints (ADR 0001, point 8).

A pull announces its documents first: PouchDB reads up to ten changes pages
ahead of the ``_bulk_get`` that fetches the first of them.  So, with a remote
audit trail, a read that must record an entry records beside it one more,
``read_ahead``, naming the documents this instance announced on its changes
pages to the same caller (user, device, database) that no entry names yet
(:class:`Ahead`).  Reads of documents named so, for the next :data:`WINDOW`
seconds and by the same caller, record nothing more; their answers wait until
the entry that named them is stored (its number becomes their stake).

The trail so names every document whose body went to a caller, stored before
the body went, at most :data:`WINDOW` seconds before; it may also name
documents announced and never read (a pull cut short).  Nothing here decides
what a caller may read: a read is checked as before, and only then is its
entry looked up.  What this process remembers is a bounded cache (at most
:data:`ANNOUNCED_KEPT` announced ids and :data:`NAMED_KEPT` named ones): a
restart, another instance, or an id pushed out costs one entry more, never one
less.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

WINDOW = 300.0  # seconds an entry covers later reads of what it names
AHEAD_KEPT = 1_000  # ids announced to one caller and named by no entry yet (ten pages)
ANNOUNCED_KEPT = 100_000  # such ids of all callers (the least recent callers' go first)
NAMED_KEPT = 100_000  # (caller, id) pairs an entry names, with its number

# (actor, device, database): whose reads one entry may cover.
CallerKey = tuple[str, str | None, str]


class Ahead:
    """What this process announced to each caller, and which entry names each id read."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._announced: OrderedDict[CallerKey, OrderedDict[str, None]] = OrderedDict()
        self._waiting = 0  # ids in all of ``_announced``
        self._named: OrderedDict[tuple[CallerKey, str], tuple[int, float]] = OrderedDict()

    def announce(self, key: CallerKey, doc_ids: Iterable[str]) -> None:
        """Ids a changes page just listed for ``key`` (the caller reads them next)."""
        waiting = self._announced.pop(key, None) or OrderedDict()
        self._waiting -= len(waiting)
        for doc_id in doc_ids:
            if self._entry(key, doc_id) is None:
                waiting[doc_id] = None
                waiting.move_to_end(doc_id)
        while len(waiting) > AHEAD_KEPT:
            waiting.popitem(last=False)
        self._announced[key] = waiting  # the most recent caller last
        self._waiting += len(waiting)
        while self._waiting > ANNOUNCED_KEPT:
            _, dropped = self._announced.popitem(last=False)
            self._waiting -= len(dropped)

    def reading(self, key: CallerKey, doc_ids: Sequence[str]) -> tuple[list[str], int]:
        """Of ``doc_ids`` about to be read by ``key``: those no entry names (they need
        one), and the highest number of the entries that name the others (0: none)."""
        unnamed, stake = [], 0
        for doc_id in doc_ids:
            number = self._entry(key, doc_id)
            if number is None:
                unnamed.append(doc_id)
            else:
                stake = max(stake, number)
        return unnamed, stake

    def ahead_of(self, key: CallerKey, reading: Iterable[str]) -> list[str]:
        """The ids announced to ``key`` that no entry names, other than ``reading``
        (the entry about to be recorded names those); taken, so no later entry repeats
        them."""
        waiting = self._announced.pop(key, None)
        if waiting is None:
            return []
        self._waiting -= len(waiting)
        skip = set(reading)
        return [i for i in waiting if i not in skip and self._entry(key, i) is None]

    def named(self, key: CallerKey, doc_ids: Iterable[str], number: int) -> None:
        """Entry ``number`` (recorded, stored before any answer relying on it) names these."""
        at = self._clock()
        for doc_id in doc_ids:
            self._named[(key, doc_id)] = (number, at)
            self._named.move_to_end((key, doc_id))
        while len(self._named) > NAMED_KEPT:
            self._named.popitem(last=False)

    def _entry(self, key: CallerKey, doc_id: str) -> int | None:
        found = self._named.get((key, doc_id))
        if found is None:
            return None
        number, at = found
        if self._clock() - at > WINDOW:
            del self._named[(key, doc_id)]
            return None
        return number
