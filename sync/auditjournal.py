"""The read journal: audit entries made safe against a crash before their answer goes out.

Committing a SQLite transaction for every answer that carries patient data
would make every reader of the store drop its page cache on every request (a
commit by one connection invalidates the others'), which measurably slows sync
down.  Instead, entries that no document write carries (reads, refusals,
failed logins) are appended to this file before the answer is sent: a
``write(2)`` to an ``O_APPEND`` file, in the kernel's hands once it returns, so
``kill -9`` of the server cannot lose it.  A background task then moves them
into the keyed chain in one transaction every fraction of a second
(:class:`sync.audit.AuditLog`), and empties the file once nothing in it is left
to move.

Each line is ``[seq, ts, actor, device, action, db, doc_ids, detail]``; ``seq``
grows by one per entry across the file's lifetime, and the last ``seq`` moved
into the chain is kept in ``meta`` in the same transaction as the move, so a
crash between that commit and emptying the file never appends an entry twice.
At start the server moves whatever a crash left here (:func:`recover`).  A torn
last line (a crash in the middle of a write) is not an entry whose answer was
sent, and is dropped.

What this does not cover: a power cut or kernel crash can lose the last fraction
of a second of *read* entries (the file is not ``fsync``-ed per answer); document
writes and their entries are synchronous and durable as before.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from sync.audit import Chain, Entry

JOURNAL_FILE = "audit-journal.jsonl"
SEQ_META = "audit_journal_seq"


def journal_path(data_dir: Path) -> Path:
    return data_dir / JOURNAL_FILE


def _line(seq: int, entry: Entry) -> bytes:
    fields = [seq, entry.ts, entry.actor, entry.device, entry.action, entry.db]
    fields += [list(entry.doc_ids), entry.detail]
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _entry(fields: list[object]) -> tuple[int, Entry]:
    seq, ts, actor, device, action, db, ids, detail = fields
    assert isinstance(seq, int) and isinstance(ids, list)
    return seq, Entry(
        str(ts),
        str(actor),
        None if device is None else str(device),
        str(action),
        None if db is None else str(db),
        tuple(str(i) for i in ids),
        None if detail is None else str(detail),
    )


def committed_seq(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key=?", (SEQ_META,)).fetchone()
    return 0 if row is None else int(row[0])


def move(conn: sqlite3.Connection, chain: Chain, entries: Sequence[tuple[int, Entry]]) -> None:
    """Append journaled entries to the chain, once each (inside the caller's transaction)."""
    done = committed_seq(conn)
    fresh = [entry for seq, entry in entries if seq > done]
    chain.append(conn, fresh)
    if entries:
        last = max(done, max(seq for seq, _ in entries))
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?,?)", (SEQ_META, str(last)))


def read(path: Path) -> list[tuple[int, Entry]]:
    """The complete entries in the file (a torn last line is no entry)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    found = []
    for line in raw.split(b"\n")[:-1]:  # what follows the last newline was torn
        try:
            found.append(_entry(json.loads(line)))
        except (ValueError, TypeError, AssertionError):
            continue  # a line that is no entry: the chain cannot vouch for it either
    return found


class Journal:
    """The open journal file of a running server (one writer: the event loop)."""

    def __init__(self, path: Path, next_seq: int) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.next_seq = next_seq

    def append(self, entries: Sequence[Entry]) -> list[tuple[int, Entry]]:
        """Write ``entries`` (raises OSError when the disk refuses: the answer must not go)."""
        numbered = [(self.next_seq + n, entry) for n, entry in enumerate(entries)]
        data = b"".join(_line(seq, entry) for seq, entry in numbered)
        written = 0
        while written < len(data):
            written += os.write(self._fd, data[written:])
        self.next_seq += len(entries)
        return numbered

    @staticmethod
    def mover(
        chain: Chain, entries: Sequence[tuple[int, Entry]]
    ) -> Callable[[sqlite3.Connection], None]:
        """What the store's writer runs to move ``entries`` into the chain."""
        return lambda conn: move(conn, chain, entries)

    def empty(self) -> None:
        """Everything in the file is in the chain: start it afresh."""
        os.ftruncate(self._fd, 0)

    def close(self) -> None:
        os.close(self._fd)


def recover(conn: sqlite3.Connection, chain: Chain, path: Path) -> tuple[int, int]:
    """Move what a crash left in the journal into the chain (caller's transaction).

    Returns (entries moved, the next sequence number to use).
    """
    entries = read(path)
    done = committed_seq(conn)
    move(conn, chain, entries)
    moved = sum(1 for seq, _ in entries if seq > done)
    return moved, max([done, *(seq for seq, _ in entries)]) + 1
