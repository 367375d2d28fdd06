"""The embedded backend: one SQLite file, one writer thread, readers off the loop.

Every write goes through a single writer thread inside ``BEGIN IMMEDIATE``
(so a batch is all-or-nothing even under ``kill -9``); reads run on a small
pool of threads, each with its own connection (datasette's pattern).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import itertools
import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sync.audit_store.embedded import append_write
from sync.errors import Conflict, NotFound, PreconditionFailed, StoreError
from sync.replication import revtree
from sync.store import rules
from sync.store.base import (
    AllDocsQuery,
    AttachmentBlob,
    Change,
    DbInfo,
    DocMeta,
    LocalDoc,
    RevisionWrite,
    SeqStore,
    StoredRevision,
    WriteResult,
)
from sync.store.schema import connect, in_transaction, initialise

if TYPE_CHECKING:
    from sync.audit import AuditStamp

T = TypeVar("T")
_START = dt.datetime.now(dt.UTC)


def _places_json(places: frozenset[str]) -> str:
    return json.dumps(sorted(places))


class SqliteStore(SeqStore):
    def __init__(self, path: Path, readers: int = 4) -> None:
        initialise(path)
        self.path = path
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="sqlite-reader")
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._count_cache: dict[tuple[int, int, frozenset[str] | None], tuple[int, int]] = {}
        # Tests set this before the first query to see every statement (query-plan checks).
        self.trace: Callable[[str], None] | None = None

    # -- plumbing ---------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            if self.trace is not None:
                conn.set_trace_callback(self.trace)
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def set_trace(self, trace: Callable[[str], None] | None) -> None:
        """See every SQL statement (tests use it to check query plans)."""
        self.trace = trace
        with self._lock:
            for conn in self._conns:
                conn.set_trace_callback(trace)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on a reader thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._guarded, fn, False)

    async def write_tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in one immediate transaction on the writer thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self._guarded, fn, True)

    def _guarded(self, fn: Callable[[sqlite3.Connection], T], transaction: bool) -> T:
        conn = self._conn()
        try:
            return in_transaction(conn, fn) if transaction else fn(conn)
        except sqlite3.Error as exc:
            raise StoreError(f"storage error: {exc}") from exc

    async def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()

    def _db_id(self, conn: sqlite3.Connection, name: str) -> int:
        row = conn.execute("SELECT id FROM dbs WHERE name=?", (name,)).fetchone()
        if row is None:
            raise NotFound("Database does not exist.")
        return int(row[0])

    # -- databases ----------------------------------------------------------
    async def create_db(self, name: str) -> None:
        def run(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM dbs WHERE name=?", (name,)).fetchone():
                raise PreconditionFailed(
                    "The database could not be created, the file already exists.",
                    error="file_exists",
                )
            conn.execute(
                "INSERT INTO dbs(name, created, uuid) VALUES(?,?,?)",
                (name, dt.datetime.now(dt.UTC).isoformat(), uuid.uuid4().hex),
            )

        await self.write_tx(run)

    async def delete_db(self, name: str) -> None:
        def run(conn: sqlite3.Connection) -> None:
            db = self._db_id(conn, name)
            for table in ("docs", "revs", "attachments", "local_docs"):
                conn.execute(f"DELETE FROM {table} WHERE db=?", (db,))
            conn.execute("DELETE FROM dbs WHERE id=?", (db,))

        await self.write_tx(run)
        with self._lock:
            self._count_cache.clear()  # a new database may reuse the id

    async def list_dbs(self) -> list[str]:
        rows = await self.read(lambda c: c.execute("SELECT name FROM dbs ORDER BY name").fetchall())
        return [r[0] for r in rows]

    async def db_info(self, name: str, places: frozenset[str] | None) -> DbInfo:
        def run(conn: sqlite3.Connection) -> DbInfo:
            row = conn.execute(
                "SELECT id, update_seq, revs_limit, uuid FROM dbs WHERE name=?", (name,)
            ).fetchone()
            if row is None:
                raise NotFound("Database does not exist.")
            live, deleted = self._counts(conn, row[0], row[1], places)
            start = str(int(_START.timestamp() * 1_000_000))
            return DbInfo(name, row[1], live, deleted, row[2], start, row[3])

        return await self.read(run)

    def _counts(
        self, conn: sqlite3.Connection, db_id: int, seq: int, places: frozenset[str] | None
    ) -> tuple[int, int]:
        """(live, deleted) documents in ``places``, remembered per update_seq.

        PouchDB asks for the database info after every batch it replicates.
        """
        key = (db_id, seq, places)
        cached = self._count_cache.get(key)
        if cached is not None:
            return cached
        sql = "SELECT deleted, count(*) FROM docs WHERE db=? {} GROUP BY deleted"
        if places is None:
            rows = conn.execute(sql.format(""), (db_id,)).fetchall()
        else:
            one = sql.format("AND place=?").replace(
                "FROM docs", "FROM docs INDEXED BY docs_by_place_deleted"
            )
            rows = [r for p in places for r in conn.execute(one, (db_id, p)).fetchall()]
        counts = [0, 0]
        for flag, number in rows:
            counts[int(flag)] += int(number)
        with self._lock:
            if len(self._count_cache) > 1024:
                self._count_cache.clear()
            self._count_cache[key] = (counts[0], counts[1])
        return counts[0], counts[1]

    async def live_counts(self, name: str, places: Sequence[str]) -> dict[str, int]:
        """One pass over the (db, place, deleted) index for every place at once."""
        wanted = frozenset(places)

        def run(conn: sqlite3.Connection) -> dict[str, int]:
            row = conn.execute("SELECT id FROM dbs WHERE name=?", (name,)).fetchone()
            if row is None:
                raise NotFound("Database does not exist.")
            counted = conn.execute(
                "SELECT place, count(*) FROM docs INDEXED BY docs_by_place_deleted "
                "WHERE db=? AND deleted=0 GROUP BY place",
                (row[0],),
            ).fetchall()
            return {str(p): int(n) for p, n in counted if p in wanted}

        return await self.read(run)

    async def set_revs_limit(self, name: str, limit: int) -> None:
        def run(conn: sqlite3.Connection) -> None:
            db = self._db_id(conn, name)
            conn.execute("UPDATE dbs SET revs_limit=? WHERE id=?", (limit, db))

        await self.write_tx(run)

    # -- documents ------------------------------------------------------------
    async def get_metas(
        self, db: str, ids: Sequence[str], *, recent: bool = False
    ) -> dict[str, DocMeta]:
        def run(conn: sqlite3.Connection) -> dict[str, DocMeta]:
            db_id = self._db_id(conn, db)
            rows = conn.execute(
                "SELECT id, place, seq, winner, deleted, tree FROM docs "
                "WHERE db=? AND id IN (SELECT value FROM json_each(?))",
                (db_id, json.dumps(list(ids))),
            ).fetchall()
            return {r[0]: _meta(r) for r in rows}

        return await self.read(run)

    async def get_revisions(
        self, db: str, wanted: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], StoredRevision]:
        def run(conn: sqlite3.Connection) -> dict[tuple[str, str], StoredRevision]:
            db_id = self._db_id(conn, db)
            found: dict[tuple[str, str], StoredRevision] = {}
            for doc_id, rev in wanted:
                row = conn.execute(
                    "SELECT place, deleted, key_ref, body FROM revs "
                    "WHERE db=? AND doc_id=? AND rev=?",
                    (db_id, doc_id, rev),
                ).fetchone()
                if row is not None:
                    found[(doc_id, rev)] = StoredRevision(
                        doc_id, rev, row[0], bool(row[1]), row[2], row[3]
                    )
            return found

        return await self.read(run)

    async def write(
        self, db: str, writes: Sequence[RevisionWrite], audit: AuditStamp | None = None
    ) -> list[WriteResult]:
        def run(conn: sqlite3.Connection) -> list[WriteResult]:
            row = conn.execute(
                "SELECT id, update_seq, revs_limit FROM dbs WHERE name=?", (db,)
            ).fetchone()
            if row is None:
                raise NotFound("Database does not exist.")
            db_id, seq, revs_limit = row
            results, written = [], []
            for w in writes:
                result, wrote = _apply_write(conn, db_id, seq + 1, revs_limit, w)
                seq += 1 if wrote else 0
                results.append(result)
                written += [w.doc_id] if wrote else []
            conn.execute("UPDATE dbs SET update_seq=? WHERE id=?", (seq, db_id))
            if audit is not None:
                append_write(conn, audit, db, sorted(set(written)))
            return results

        return await self.write_tx(run)

    async def changes(
        self,
        db: str,
        places: frozenset[str] | None,
        since: int,
        limit: int,
        *,
        upto: int | None = None,
        include_deleted: bool = True,
        descending: bool = False,
    ) -> list[Change]:
        """One index range per place, merged by sequence: cost follows the caller's set."""

        def run(conn: sqlite3.Connection) -> list[Change]:
            db_id = self._db_id(conn, db)
            where, args = "", []
            if upto is not None:
                where, args = " AND seq<=?", [upto]
            if not include_deleted:
                where += " AND deleted=0"
            order = "DESC" if descending else "ASC"
            columns = "SELECT seq, id, place, winner, deleted, leaves FROM docs"
            if places is None:
                sql = f"{columns} WHERE db=? AND seq>?{where} ORDER BY seq {order} LIMIT ?"
                return [_change(r) for r in conn.execute(sql, (db_id, since, *args, limit))]
            sql = (
                f"{columns} INDEXED BY docs_changes_by_place "
                f"WHERE db=? AND place=? AND seq>?{where} ORDER BY seq {order} LIMIT ?"
            )
            runs = [conn.execute(sql, (db_id, p, since, *args, limit)).fetchall() for p in places]
            merged = heapq.merge(*runs, key=lambda r: int(r[0]), reverse=descending)
            return [_change(r) for r in itertools.islice(merged, limit)]

        return await self.read(run)

    async def count_changes(self, db: str, places: frozenset[str] | None, since: int) -> int:
        def run(conn: sqlite3.Connection) -> int:
            db_id = self._db_id(conn, db)
            if places is None:
                sql = "SELECT count(*) FROM docs WHERE db=? AND seq>?"
                return int(conn.execute(sql, (db_id, since)).fetchone()[0])
            sql = (
                "SELECT count(*) FROM docs INDEXED BY docs_changes_by_place "
                "WHERE db=? AND place=? AND seq>?"
            )
            return sum(int(conn.execute(sql, (db_id, p, since)).fetchone()[0]) for p in places)

        return await self.read(run)

    async def all_docs(
        self, db: str, places: frozenset[str] | None, query: AllDocsQuery
    ) -> tuple[int, list[Change]]:
        def run(conn: sqlite3.Connection) -> tuple[int, list[Change]]:
            db_id = self._db_id(conn, db)
            seq = conn.execute("SELECT update_seq FROM dbs WHERE id=?", (db_id,)).fetchone()[0]
            total = self._counts(conn, db_id, seq, places)[0]
            where, args = _id_range(query)
            order = "DESC" if query.descending else "ASC"
            columns = "SELECT seq, id, place, winner, deleted, leaves FROM docs"
            if places is None:
                limit = -1 if query.limit is None else query.limit
                sql = f"{columns} WHERE db=? AND deleted=0{where} ORDER BY id {order}"
                sql += " LIMIT ? OFFSET ?"
                rows = conn.execute(sql, (db_id, *args, limit, query.skip)).fetchall()
                return total, [_change(r) for r in rows]
            wanted = -1 if query.limit is None else query.skip + query.limit
            sql = (
                f"{columns} INDEXED BY docs_by_place_id WHERE db=? AND place=? AND deleted=0"
                f"{where} ORDER BY id {order} LIMIT ?"
            )
            runs = [conn.execute(sql, (db_id, p, *args, wanted)).fetchall() for p in places]
            merged = heapq.merge(*runs, key=lambda r: str(r[1]), reverse=query.descending)
            stop = None if query.limit is None else query.skip + query.limit
            return total, [_change(r) for r in itertools.islice(merged, query.skip, stop)]

        return await self.read(run)

    # -- attachments ------------------------------------------------------------
    async def get_attachment(
        self, db: str, digest: str, places: frozenset[str] | None
    ) -> AttachmentBlob | None:
        def run(conn: sqlite3.Connection) -> AttachmentBlob | None:
            db_id = self._db_id(conn, db)
            where, args = _place_clause(places)
            row = conn.execute(
                f"SELECT digest, place, key_ref, length, data FROM attachments "
                f"WHERE db=? AND digest=? {where} LIMIT 1",
                (db_id, digest, *args),
            ).fetchone()
            return None if row is None else AttachmentBlob(*row)

        return await self.read(run)

    # -- local documents ----------------------------------------------------------
    async def get_local(self, db: str, owner: str, doc_id: str) -> LocalDoc | None:
        def run(conn: sqlite3.Connection) -> LocalDoc | None:
            db_id = self._db_id(conn, db)
            row = conn.execute(
                "SELECT rev, body FROM local_docs WHERE db=? AND owner=? AND id=?",
                (db_id, owner, doc_id),
            ).fetchone()
            return None if row is None else LocalDoc(doc_id, row[0], row[1])

        return await self.read(run)

    async def put_local(
        self, db: str, owner: str, doc_id: str, expected_rev: str | None, body: bytes
    ) -> str:
        def run(conn: sqlite3.Connection) -> str:
            db_id = self._db_id(conn, db)
            row = conn.execute(
                "SELECT rev FROM local_docs WHERE db=? AND owner=? AND id=?", (db_id, owner, doc_id)
            ).fetchone()
            current = None if row is None else row[0]
            if expected_rev != current:
                raise Conflict()
            number = 0 if current is None else int(current.split("-", 1)[1])
            rev = f"0-{number + 1}"
            conn.execute(
                "INSERT OR REPLACE INTO local_docs(db, owner, id, rev, body) VALUES(?,?,?,?,?)",
                (db_id, owner, doc_id, rev, body),
            )
            return rev

        return await self.write_tx(run)

    async def delete_local(self, db: str, owner: str, doc_id: str, rev: str | None) -> None:
        def run(conn: sqlite3.Connection) -> None:
            db_id = self._db_id(conn, db)
            row = conn.execute(
                "SELECT rev FROM local_docs WHERE db=? AND owner=? AND id=?", (db_id, owner, doc_id)
            ).fetchone()
            if row is None:
                raise NotFound("missing")
            if rev != row[0]:
                raise Conflict()
            conn.execute(
                "DELETE FROM local_docs WHERE db=? AND owner=? AND id=?", (db_id, owner, doc_id)
            )

        await self.write_tx(run)


def _id_range(query: AllDocsQuery) -> tuple[str, list[Any]]:
    """``AND id ...`` bounds for an ``_all_docs`` page, in either direction."""
    low, high = (query.end, query.start) if query.descending else (query.start, query.end)
    low_inclusive = True if not query.descending else query.inclusive_end
    high_inclusive = query.inclusive_end if not query.descending else True
    where, args = "", []
    if low is not None:
        where += " AND id>=?" if low_inclusive else " AND id>?"
        args.append(low)
    if high is not None:
        where += " AND id<=?" if high_inclusive else " AND id<?"
        args.append(high)
    return where, args


def _place_clause(places: frozenset[str] | None) -> tuple[str, list[Any]]:
    if places is None:
        return "", []
    return "AND place IN (SELECT value FROM json_each(?))", [_places_json(places)]


def _meta(row: Sequence[Any]) -> DocMeta:
    tree = revtree.from_json(json.loads(row[5]))
    return DocMeta(row[0], row[1], row[2], row[3], bool(row[4]), tree)


def _change(row: Sequence[Any]) -> Change:
    leaves = tuple((rev, bool(deleted)) for rev, deleted in json.loads(row[5]))
    return Change(row[0], row[1], row[2], row[3], bool(row[4]), leaves)


def _apply_write(
    conn: sqlite3.Connection, db_id: int, seq: int, revs_limit: int, w: RevisionWrite
) -> tuple[WriteResult, bool]:
    """Merge one revision into its document; returns (result, whether anything changed)."""
    row = conn.execute(
        "SELECT place, tree FROM docs WHERE db=? AND id=?", (db_id, w.doc_id)
    ).fetchone()
    tree = revtree.from_json(json.loads(row[1])) if row else {}
    previous = None if row is None else str(row[0])
    rev = w.path[0]
    refused = rules.refusal(previous, tree, w)
    if refused is not None:
        return WriteResult(w.doc_id, rev, refused), False
    merged = rules.merge(tree, w, revs_limit)
    if merged is None:
        return WriteResult(w.doc_id, rev), False
    conn.execute(
        "INSERT OR REPLACE INTO revs(db, doc_id, rev, place, deleted, key_ref, body) "
        "VALUES(?,?,?,?,?,?,?)",
        (db_id, w.doc_id, rev, w.place, int(w.deleted), w.key_ref, w.body),
    )
    conn.executemany(
        "INSERT OR IGNORE INTO attachments(db, digest, place, key_ref, length, data) "
        "VALUES(?,?,?,?,?,?)",
        [(db_id, b.digest, b.place, b.key_ref, b.length, b.data) for b in w.attachments],
    )
    if merged.stemmed:  # revs_limit dropped them from the tree: free their bodies too
        conn.executemany(
            "DELETE FROM revs WHERE db=? AND doc_id=? AND rev=?",
            [(db_id, w.doc_id, old) for old in merged.stemmed],
        )
    place = rules.winner_place(merged, w, lambda r: _rev_place(conn, db_id, w.doc_id, r), previous)
    conn.execute(
        "INSERT INTO docs(db, id, place, seq, winner, deleted, leaves, tree) "
        "VALUES(?,?,?,?,?,?,?,?) "
        "ON CONFLICT(db, id) DO UPDATE SET place=excluded.place, seq=excluded.seq, "
        "winner=excluded.winner, deleted=excluded.deleted, leaves=excluded.leaves, "
        "tree=excluded.tree",
        (
            db_id,
            w.doc_id,
            place,
            seq,
            merged.winner,
            int(merged.deleted),
            json.dumps([list(leaf) for leaf in merged.leaves]),
            json.dumps(revtree.to_json(merged.tree)),
        ),
    )
    return WriteResult(w.doc_id, rev, place=place), True


def _rev_place(conn: sqlite3.Connection, db_id: int, doc_id: str, rev: str) -> str | None:
    found = conn.execute(
        "SELECT place FROM revs WHERE db=? AND doc_id=? AND rev=?", (db_id, doc_id, rev)
    ).fetchone()
    return None if found is None else str(found[0])
