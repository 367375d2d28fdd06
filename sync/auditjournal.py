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

Each line is ``[seq, ts, actor, device, action, db, doc_ids, detail, mac]``, the
MAC under the chain key (whoever can edit the file but lacks the master key
cannot forge an entry); ``seq`` grows by one per entry across the file's
lifetime, and the last ``seq`` moved into the chain is kept in ``meta`` in the
same transaction as the move, so a crash between that commit and emptying the
file never appends an entry twice.  At start the server moves whatever a crash
left here: lines must follow on from that ``seq`` one by one with good MACs
(:func:`read`); from the first that does not (a forged, edited or removed line)
nothing more is trusted, and the chain records the refusal (``journal_rejected``)
so the tampering stays on the record.  A torn last line (a crash in the middle
of a write) is not an entry whose answer was sent, and is dropped.

This module is the file.  The journal belongs to the embedded store: the chain
and the sequence number it moves into live in the data dir's SQLite file, and
the moves are :mod:`sync.audit_store.embedded_journal` (``move`` at every
commit, ``recover`` at start, inside the caller's transaction).  With CouchDB,
the server does not journal: entries go straight to the instance's chain there
(:class:`sync.audit.ChainWriter`).

What this does not cover: a power cut or kernel crash can lose the last fraction
of a second of *read* entries (the file is not ``fsync``-ed per answer), and
someone who can write the data dir can delete the journal's last lines (or the
whole file) while the server is down; document writes and their entries are
synchronous and durable as before.
"""

from __future__ import annotations

import hmac
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sync.audit_store.links import ChainKey, Entry
from sync.auditverify import AuditBroken

JOURNAL_FILE = "audit-journal.jsonl"


def journal_path(data_dir: Path) -> Path:
    return data_dir / JOURNAL_FILE


def _line(chain: ChainKey, seq: int, entry: Entry) -> bytes:
    fields = [seq, entry.ts, entry.actor, entry.device, entry.action, entry.db]
    fields += [list(entry.doc_ids), entry.detail]
    payload = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()
    return payload[:-1] + b',"' + chain.line_mac(payload).encode() + b'"]\n'


def _text(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError("a field is neither text nor null")
    return value


def _entry(chain: ChainKey, line: bytes) -> tuple[int, Entry]:
    """One journal line, its MAC checked (ValueError when it is no good line)."""
    fields = json.loads(line)
    if not isinstance(fields, list) or len(fields) != 9:
        raise ValueError("not a journal line")
    *body, mac = fields
    payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    if not isinstance(mac, str) or not hmac.compare_digest(mac, chain.line_mac(payload)):
        raise ValueError("bad MAC")
    seq, ts, actor, device, action, db, ids, detail = body
    if not isinstance(seq, int) or not isinstance(ids, list):
        raise ValueError("not a journal line")
    texts = [_text(v) for v in (ts, actor, action)]
    if None in texts:
        raise ValueError("not a journal line")
    entry = Entry(str(ts), str(actor), _text(device), str(action), _text(db),
                  tuple(str(_text(i)) for i in ids), _text(detail))  # fmt: skip
    return seq, entry


@dataclass(frozen=True)
class Contents:
    """What the journal holds after ``done``: good entries, and the first problem if any."""

    entries: list[tuple[int, Entry]]
    problem: str | None = None
    rejected: int = 0


def read(path: Path, chain: ChainKey, done: int = 0) -> Contents:
    """The entries after ``done``, in order, up to the first line that is not to be trusted."""
    raw = _raw(path)
    lines = raw.split(b"\n")[:-1]  # what follows the last newline was torn
    entries: list[tuple[int, Entry]] = []
    expected = None
    for number, line in enumerate(lines, 1):
        try:
            seq, entry = _entry(chain, line)
        except (ValueError, TypeError, RecursionError) as exc:
            return Contents(entries, f"line {number}: {exc}", len(lines) - number + 1)
        if seq <= done:
            continue  # moved already (a crash before the file was emptied)
        if seq != (expected if expected is not None else done + 1):
            gap = f"line {number}: seq {seq} where {expected or done + 1} was due (lines removed)"
            return Contents(entries, gap, len(lines) - number + 1)
        entries.append((seq, entry))
        expected = seq + 1
    return Contents(entries)


def _raw(path: Path) -> bytes:
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise AuditBroken(f"{path.name} in the data dir is not a plain file; move it away")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


class Journal:
    """The open journal file of a running server (one writer: the event loop)."""

    def __init__(self, path: Path, next_seq: int, chain: ChainKey) -> None:
        self.path = path
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
        try:
            self._fd = os.open(path, flags, 0o600)
        except OSError as exc:  # a symlink planted in its place, a directory...
            raise AuditBroken(f"cannot open {path.name} in the data dir: {exc}") from exc
        if not stat.S_ISREG(os.fstat(self._fd).st_mode):
            os.close(self._fd)
            raise AuditBroken(f"{path.name} in the data dir is not a plain file; move it away")
        self.next_seq = next_seq
        self._chain = chain
        self._size = os.fstat(self._fd).st_size  # what empty() has to cut, if anything

    def append(self, entries: Sequence[Entry]) -> list[tuple[int, Entry]]:
        """Write ``entries`` (raises OSError when the disk refuses: the answer must not go)."""
        numbered = [(self.next_seq + n, entry) for n, entry in enumerate(entries)]
        data = b"".join(_line(self._chain, seq, entry) for seq, entry in numbered)
        written = 0
        while written < len(data):
            written += os.write(self._fd, data[written:])
        self._size += written
        self.next_seq += len(entries)
        return numbered

    def empty(self) -> None:
        """Everything in the file is in the chain: start it afresh (no system call when
        it is empty already: the server asks before nearly every answer)."""
        if self._size:
            os.ftruncate(self._fd, 0)
            self._size = 0

    def close(self) -> None:
        os.close(self._fd)
