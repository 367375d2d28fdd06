"""The server's writes into the data dir's chain: group commits and read-journal moves.

The read journal (:mod:`sync.auditjournal`) is a file beside the data dir's
SQLite file; what it holds moves into the chain here, in one transaction of the
store's single writer, with the last journal ``seq`` moved kept in ``meta``
(:func:`sync.audit_store.embedded.committed_seq`) in that same transaction, so
a crash between that commit and emptying the file never appends an entry twice.
At start the server moves whatever a crash left in the file (:func:`recover`).

:class:`ServerChain` is the :class:`sync.audit.Local` of the server's
:class:`sync.audit.AuditLog`: each call one transaction of the store's writer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import structlog

from sync.audit_store import embedded
from sync.audit_store.links import ChainKey, Entry
from sync.auditjournal import read

log = structlog.get_logger("fieldsync.audit")

Writer = Callable[[Callable[[sqlite3.Connection], object]], Awaitable[object]]


def move(conn: sqlite3.Connection, chain: ChainKey, entries: Sequence[tuple[int, Entry]]) -> None:
    """Append journaled entries to the chain, once each (inside the caller's transaction)."""
    done = embedded.committed_seq(conn)
    fresh = [entry for seq, entry in entries if seq > done]
    embedded.append(conn, chain, fresh)
    if entries:
        embedded.set_committed_seq(conn, max(done, max(seq for seq, _ in entries)))


def recover(conn: sqlite3.Connection, chain: ChainKey, path: Path) -> tuple[int, int]:
    """Move what a crash left in the journal into the chain (caller's transaction).

    Returns (entries moved, the next sequence number to use).  Lines that cannot be
    trusted are not moved; the chain records that they were refused.
    """
    done = embedded.committed_seq(conn)
    contents = read(path, chain, done)
    move(conn, chain, contents.entries)
    if contents.problem is not None:
        detail = f"{contents.rejected} journal line(s) refused: {contents.problem}"
        embedded.note(conn, chain, "server", "journal_rejected", detail)
        log.error("audit_journal_rejected", problem=contents.problem, lines=contents.rejected)
    last = contents.entries[-1][0] if contents.entries else done
    return len(contents.entries), max(done, last) + 1


class ServerChain:
    """The data dir's chain, written through ``write`` (the store's single writer)."""

    def __init__(self, write: Writer, chain: ChainKey) -> None:
        self._write = write
        self.chain = chain

    async def append(self, entries: Sequence[Entry]) -> None:
        await self._write(lambda conn: embedded.append(conn, self.chain, entries))

    async def move(self, entries: Sequence[tuple[int, Entry]]) -> None:
        await self._write(lambda conn: move(conn, self.chain, entries))
