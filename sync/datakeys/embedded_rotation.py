"""Data-key rotation on the data dir's SQLite file: a new key version per place, every blob
re-sealed under it, old ones gone (with the documents in CouchDB: :mod:`sync.couchrotation`).

``fieldsync keys rotate`` runs with the server stopped (it holds the data dir's
lock) and in small transactions, so it can be stopped at any point and run again:

1. each chosen place gets a new data-key version (the one new data is sealed with);
2. every blob sealed under an older version of a chosen place is opened and sealed
   again under the newest, batch by batch, with progress;
3. the older versions that nothing refers to any more are deleted.

At every step each blob opens with a key that exists, so an interruption loses
nothing: running the command again re-seals what is left (under a newer version
still) and finishes.

Sealed blobs live in several tables. The core's are document bodies, attachments
and ``_local`` documents; a domain package with sealed columns of its own (SMS
texts) registers them as ``sealed_blobs`` (:mod:`sync.extensions`), and the
command passes them in.
"""

from __future__ import annotations

import datetime as dt
import secrets
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from sync.audit_store import embedded
from sync.keyadmin import describe
from sync.keys import KeyError_, KeyRing, MasterKey, key_ref, label, parse_key_ref, seal, unseal
from sync.replication.context import LOCAL_SEALED, local_name
from sync.store.schema import connections, db_path, with_file
from sync.vault import attachment_aad, body_aad

BATCH = 500


@dataclass(frozen=True)
class Blob:
    rowid: int
    key_ref: str
    data: bytes
    aad: bytes


class SealedBlobs(Protocol):
    """One place where sealed blobs are kept (a table column)."""

    @property
    def name(self) -> str: ...

    def batch(self, conn: sqlite3.Connection, after: int, limit: int) -> list[Blob]: ...

    def store(self, conn: sqlite3.Connection, blob: Blob, key_ref: str, data: bytes) -> None: ...

    def refs(self, conn: sqlite3.Connection) -> Counter[str]: ...


@dataclass(frozen=True)
class Column:
    """A column of sealed blobs with the column of their ``key_ref`` beside it.

    ``fields`` are SQL expressions (over ``t``, the table, and any ``join``) whose
    values ``aad`` turns into the blob's associated data.
    """

    name: str
    table: str
    ref: str
    blob: str
    fields: str
    aad: Callable[[Sequence[Any]], bytes]
    join: str = ""

    def batch(self, conn: sqlite3.Connection, after: int, limit: int) -> list[Blob]:
        rows = conn.execute(
            f"SELECT t.rowid, t.{self.ref}, t.{self.blob}, {self.fields} FROM {self.table} t "
            f"{self.join} WHERE t.rowid > ? AND t.{self.ref} IS NOT NULL "
            "ORDER BY t.rowid LIMIT ?",
            (after, limit),
        ).fetchall()
        return [Blob(r[0], r[1], bytes(r[2]), self.aad(r[3:])) for r in rows]

    def store(self, conn: sqlite3.Connection, blob: Blob, key_ref: str, data: bytes) -> None:
        conn.execute(
            f"UPDATE {self.table} SET {self.ref}=?, {self.blob}=? WHERE rowid=? AND {self.ref}=?",
            (key_ref, data, blob.rowid, blob.key_ref),
        )

    def refs(self, conn: sqlite3.Connection) -> Counter[str]:
        rows = conn.execute(
            f"SELECT {self.ref}, count(*) FROM {self.table} "
            f"WHERE {self.ref} IS NOT NULL GROUP BY {self.ref}"
        ).fetchall()
        return Counter({r[0]: r[1] for r in rows})


class LocalDocs:
    """``_local`` bodies carry their ``key_ref`` inside the blob (``LOCAL_SEALED ref NUL ...``)."""

    name = "local documents"

    def batch(self, conn: sqlite3.Connection, after: int, limit: int) -> list[Blob]:
        rows = conn.execute(
            "SELECT t.rowid, dbs.name, t.owner, t.id, t.body FROM local_docs t "
            "JOIN dbs ON dbs.id = t.db WHERE t.rowid > ? ORDER BY t.rowid LIMIT ?",
            (after, limit),
        ).fetchall()
        found = []
        for rowid, db, owner, doc_id, raw in rows:
            parsed = _split_local(bytes(raw))
            if parsed is not None:
                aad = body_aad(db, local_name(owner, doc_id), "")
                found.append(Blob(rowid, parsed[0], parsed[1], aad))
        return found

    def store(self, conn: sqlite3.Connection, blob: Blob, key_ref: str, data: bytes) -> None:
        old = LOCAL_SEALED + blob.key_ref.encode() + b"\x00" + blob.data
        new = LOCAL_SEALED + key_ref.encode() + b"\x00" + data
        conn.execute(
            "UPDATE local_docs SET body=? WHERE rowid=? AND body=?", (new, blob.rowid, old)
        )

    def refs(self, conn: sqlite3.Connection) -> Counter[str]:
        found: Counter[str] = Counter()
        for (raw,) in conn.execute("SELECT body FROM local_docs"):
            parsed = _split_local(bytes(raw))
            if parsed is not None:
                found[parsed[0]] += 1
        return found


def _split_local(raw: bytes) -> tuple[str, bytes] | None:
    if not raw.startswith(LOCAL_SEALED):
        return None  # an old plain-JSON local document: nothing sealed
    ref, _, sealed = raw[len(LOCAL_SEALED) :].partition(b"\x00")
    return ref.decode(), sealed


CORE: tuple[SealedBlobs, ...] = (
    Column(
        "document bodies",
        "revs",
        "key_ref",
        "body",
        "dbs.name, t.doc_id, t.rev",
        lambda f: body_aad(f[0], f[1], f[2]),
        "JOIN dbs ON dbs.id = t.db",
    ),
    Column(
        "attachments",
        "attachments",
        "key_ref",
        "data",
        "dbs.name, t.place, t.digest",
        lambda f: attachment_aad(f[0], f[1], f[2]),
        "JOIN dbs ON dbs.id = t.db",
    ),
    LocalDocs(),
)


def sealed_blobs(packages: Sequence[SealedBlobs]) -> tuple[SealedBlobs, ...]:
    """The core's sealed columns, then the packages'."""
    return (*CORE, *packages)


# -- the three steps ------------------------------------------------------------------------
def places_with_keys(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT DISTINCT place FROM data_keys ORDER BY place")]


def add_versions(
    conn: sqlite3.Connection, master: MasterKey, places: Iterable[str]
) -> dict[str, int]:
    """Step 1: a new current version for each place (inside the caller's transaction)."""
    now = dt.datetime.now(dt.UTC).isoformat()
    made = {}
    for place in places:
        row = conn.execute("SELECT max(version) FROM data_keys WHERE place=?", (place,)).fetchone()
        if row[0] is None:
            raise KeyError_(f"place {place or '(shared)'} has no data key to rotate")
        version = int(row[0]) + 1
        wrapped = master.wrap(label(place, version), secrets.token_bytes(32))
        conn.execute(
            "INSERT INTO data_keys(place, version, wrapped, created) VALUES(?,?,?,?)",
            (place, version, wrapped, now),
        )
        made[place] = version
    return made


def reseal_batch(
    conn: sqlite3.Connection,
    keys: KeyRing,
    blobs: SealedBlobs,
    newest: dict[str, int],
    after: int,
) -> tuple[int, int, int]:
    """Step 2, one batch: ``(last rowid looked at, blobs re-sealed, rows looked at)``."""
    found = blobs.batch(conn, after, BATCH)
    done = 0
    for blob in found:
        place, version = parse_key_ref(blob.key_ref)
        target = newest.get(place)
        if target is None or version >= target:
            continue
        plain = unseal(keys.by_ref(blob.key_ref), blob.aad, blob.data)
        new_ref = key_ref(place, target)
        blobs.store(conn, blob, new_ref, seal(keys.by_ref(new_ref), blob.aad, plain))
        done += 1
    return (found[-1].rowid if found else after), done, len(found)


def retire(
    conn: sqlite3.Connection, newest: dict[str, int], every: Sequence[SealedBlobs]
) -> tuple[list[str], list[str]]:
    """Step 3: delete older versions of the rotated places that no blob of ``every`` refers to.

    Returns the refs deleted and the refs kept because something still uses them.
    """
    used: Counter[str] = Counter()
    for blobs in every:
        used.update(blobs.refs(conn))
    deleted, kept = [], []
    for place, version in newest.items():
        rows = conn.execute(
            "SELECT version FROM data_keys WHERE place=? AND version<? ORDER BY version",
            (place, version),
        ).fetchall()
        for (old,) in rows:
            if used[key_ref(place, old)]:
                kept.append(describe(place, old))
                continue
            conn.execute("DELETE FROM data_keys WHERE place=? AND version=?", (place, old))
            deleted.append(describe(place, old))
    return deleted, kept


# -- the whole run ------------------------------------------------------------------------
@dataclass(frozen=True)
class Rotated:
    newest: dict[str, int]
    deleted: list[str]
    kept: list[str]


def rotate(
    data_dir: Path,
    master: MasterKey,
    places: Sequence[str] | None,
    report: Callable[[str], None],
    packages: Sequence[SealedBlobs],
) -> Rotated:
    """The three steps, each batch its own transaction; ``places=None``: every place.

    ``packages``: the sealed columns the packages registered, re-sealed with the core's.
    """
    every = sealed_blobs(packages)

    def chosen(conn: sqlite3.Connection) -> Iterable[str]:
        return places_with_keys(conn) if places is None else places

    newest = with_file(data_dir, partial(_added, master=master, chosen=chosen))
    report("new data keys: " + ", ".join(describe(p, v) for p, v in newest.items()))
    keys = KeyRing(master, connections(db_path(data_dir)))  # reads beside each batch's writer
    for blobs in every:
        after, looked, done, batches = 0, 0, 0, 0
        while True:
            step = partial(reseal_batch, keys=keys, blobs=blobs, newest=newest, after=after)
            after, resealed, seen = with_file(data_dir, step)
            looked, done, batches = looked + seen, done + resealed, batches + 1
            if seen == 0 or batches % 20 == 0:
                report(f"  {blobs.name}: {looked:,} looked at, {done:,} re-sealed")
            if seen == 0:
                break
    retired = partial(_retired, master=master, newest=newest, every=every)
    deleted, kept = with_file(data_dir, retired)
    return Rotated(newest, deleted, kept)


def _added(
    conn: sqlite3.Connection,
    master: MasterKey,
    chosen: Callable[[sqlite3.Connection], Iterable[str]],
) -> dict[str, int]:
    newest = add_versions(conn, master, chosen(conn))
    detail = "new data keys: " + ", ".join(describe(p, v) for p, v in newest.items())
    embedded.note_cli(conn, master, "key_rotate", detail)
    return newest


def _retired(
    conn: sqlite3.Connection,
    master: MasterKey,
    newest: dict[str, int],
    every: Sequence[SealedBlobs],
) -> tuple[list[str], list[str]]:
    deleted, kept = retire(conn, newest, every)
    detail = (
        f"old data keys deleted: {', '.join(deleted) or 'none'}; kept: {', '.join(kept) or 'none'}"
    )
    embedded.note_cli(conn, master, "key_retire", detail)
    return deleted, kept
