"""Seeding a data dir fast, straight into the SQLite store (not over HTTP).

Each document becomes exactly what ``Writer`` + ``SqliteStore.write`` would have
stored for a first revision written with ``new_edits`` (``1-<md5>`` from
:func:`sync.replication.documents.new_rev`, a body sealed by :class:`sync.vault.Vault`
under the place's data key, one ``docs`` row and one ``revs`` row), but inserted
with ``executemany`` in large transactions. :func:`check_shape` proves the rows
match the store's own on a scratch database before the benchmark relies on them.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sync.config import Config, from_env
from sync.datakeys.embedded import EmbeddedDataKeys
from sync.datakeys.ports import StoredKey
from sync.keys import KeyRing, load_master_key
from sync.people_store import embedded_tables
from sync.replication.documents import new_rev, parse_incoming
from sync.store.base import RevisionWrite, StoredRevision
from sync.store.schema import connect, connections, db_path, initialise
from sync.store.sqlite import SqliteStore
from sync.vault import Vault

DB = "health"
BATCH = 50_000

_NOTES = (
    "Client seen at home. Counselled on birth preparedness, nutrition and danger signs; "
    "next visit booked. Iron and folate supplied. "
)
_NAMES = ("Amina", "Wanjiru", "Grace", "Fatuma", "Achieng", "Mercy", "Zawadi", "Halima")
_FORMS = ("pregnancy_visit", "postnatal_visit", "immunization", "assessment")


def record(rng: random.Random, place: str, n: int) -> dict[str, Any]:
    """A ~1 KB health record of ``place`` (the JSON a CHW's app would write)."""
    name = rng.choice(_NAMES)
    return {
        "_id": f"{rng.getrandbits(128):032x}",
        "type": "data_record",
        "form": rng.choice(_FORMS),
        "place": place,
        "reported_date": 1_700_000_000_000 + n * 60_000,
        "contact": {"_id": f"chw-{place}", "name": f"CHW of {place}", "parent": {"_id": place}},
        "fields": {
            "patient_id": f"P{100000 + n}",
            "patient_name": f"{name} {rng.choice(_NAMES)}son",
            "lmp_date": "2024-01-15",
            "edd": "2024-10-21",
            "weeks_pregnant": rng.randint(4, 40),
            "visit_number": rng.randint(1, 8),
            "danger_signs": {
                "bleeding": rng.random() < 0.05,
                "fever": rng.random() < 0.1,
                "headache": rng.random() < 0.1,
                "swelling": rng.random() < 0.05,
            },
            "vitals": {
                "bp_systolic": rng.randint(95, 150),
                "bp_diastolic": rng.randint(60, 100),
                "weight_kg": round(rng.uniform(45, 90), 1),
            },
            "notes": _NOTES * 4,
        },
        "geolocation": {
            "latitude": round(rng.uniform(-4.5, 4.5), 6),
            "longitude": round(rng.uniform(34.0, 41.0), 6),
            "accuracy": rng.randint(5, 50),
        },
        "meta": {"app_version": "4.2.0", "device_id": f"dev-{n % 997}", "created_by": name},
    }


@dataclass(frozen=True)
class Seeded:
    """What the benchmark needs to know of one seeded document."""

    id: str
    rev: str
    place: str
    doc: dict[str, Any]


@dataclass(frozen=True)
class Sealed:
    """A document's first revision, ready for a store: its rev and sealed body."""

    id: str
    rev: str
    place: str
    key_ref: str
    body: bytes
    raw: dict[str, Any]

    @property
    def seeded(self) -> Seeded:
        return Seeded(self.id, self.rev, self.place, self.raw)


def _row_shapes(doc_id: str, rev: str) -> tuple[str, str]:
    """``leaves`` and ``tree`` as ``_apply_write`` serialises a one-revision document."""
    return json.dumps([[rev, False]]), json.dumps({rev: [None, False]})


class Seeder:
    """Writes places and first revisions into ``DIR/fieldsync.sqlite3`` directly.

    Safe while a server runs on the same dir (WAL; the server is idle meanwhile):
    it keeps no document cache and reads ``update_seq`` from ``dbs`` on every request.
    """

    def __init__(self, data_dir: Path, config: Config | None = None) -> None:
        self.config = replace(config or from_env(), data_dir=data_dir)
        self.path = db_path(data_dir)
        initialise(self.path)
        self.conn = connect(self.path)
        self.closed = False
        self.conn.execute("PRAGMA synchronous=NORMAL")  # durable at the end: one checkpoint
        self.conn.execute("PRAGMA cache_size=-524288")  # 512 MiB: the indexes stay in memory
        master = load_master_key(self.config.key_file, create=True)
        self.keys = KeyRing(master, self._conn_ctx)
        self.vault = Vault(self.keys)

    @contextmanager
    def _conn_ctx(self) -> Iterator[sqlite3.Connection]:
        yield self.conn

    def close(self) -> None:
        """Checkpoint the WAL into the file and close (once; a second call does nothing)."""
        if self.closed:
            return
        self.closed = True
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.close()

    def __enter__(self) -> Seeder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def add_places(self, places: Sequence[tuple[str, str | None]]) -> None:
        """``(id, parent)`` pairs, parents first, with their data keys, in one transaction."""
        with self._transaction() as conn:
            for place, parent in places:
                embedded_tables.add_place(conn, place, parent, None)
                self.keys.current(place)

    def data_keys(self) -> list[StoredKey]:
        """Every data key made so far, sealed under the master key as stored."""
        return EmbeddedDataKeys(self._conn_ctx).all()

    def seal(self, raw: dict[str, Any], db: str = DB) -> Sealed:
        """``raw`` as ``Writer`` would store it: its ``1-<md5>`` rev and its body sealed.

        Thread-safe once the places' keys exist (:meth:`add_places`): it only reads
        the key ring's cache then.
        """
        doc = parse_incoming(raw, new_edits=True)
        assert doc.place is not None
        rev = new_rev(None, False, doc.body)
        key_ref, sealed = self.vault.seal_body(db, doc.id, rev, doc.place, doc.body)
        return Sealed(doc.id, rev, doc.place, key_ref, sealed, raw)

    def db_id(self, db: str = DB) -> int:
        row = self.conn.execute("SELECT id FROM dbs WHERE name=?", (db,)).fetchone()
        if row is None:
            raise RuntimeError(f"database {db!r} does not exist (start the server once first)")
        return int(row[0])

    def seed(
        self, docs: Iterable[dict[str, Any]], db: str = DB, keep: frozenset[str] = frozenset()
    ) -> tuple[int, list[Seeded]]:
        """Store ``docs`` as new documents; returns (count, the documents of ``keep`` places)."""
        db_id = self.db_id(db)
        count = 0
        kept: list[Seeded] = []
        batch: list[dict[str, Any]] = []
        for doc in docs:
            batch.append(doc)
            if len(batch) >= BATCH:
                count += self._write_batch(db, db_id, batch, keep, kept)
                batch = []
        if batch:
            count += self._write_batch(db, db_id, batch, keep, kept)
        return count, kept

    def _write_batch(
        self,
        db: str,
        db_id: int,
        batch: list[dict[str, Any]],
        keep: frozenset[str],
        kept: list[Seeded],
    ) -> int:
        docs_rows = []
        revs_rows = []
        with self._transaction() as conn:
            seq = int(conn.execute("SELECT update_seq FROM dbs WHERE id=?", (db_id,)).fetchone()[0])
            for raw in batch:
                s = self.seal(raw, db)
                seq += 1
                leaves, tree = _row_shapes(s.id, s.rev)
                docs_rows.append((db_id, s.id, s.place, seq, s.rev, 0, leaves, tree))
                revs_rows.append((db_id, s.id, s.rev, s.place, 0, s.key_ref, s.body))
                if s.place in keep:
                    kept.append(s.seeded)
            conn.executemany(
                "INSERT INTO revs(db, doc_id, rev, place, deleted, key_ref, body) "
                "VALUES(?,?,?,?,?,?,?)",
                revs_rows,
            )
            conn.executemany(
                "INSERT INTO docs(db, id, place, seq, winner, deleted, leaves, tree) "
                "VALUES(?,?,?,?,?,?,?,?)",
                docs_rows,
            )
            conn.execute("UPDATE dbs SET update_seq=? WHERE id=?", (seq, db_id))
        return len(batch)


# -- proof that the fast path writes what the store writes ------------------------------
def check_shape() -> None:
    """Seed three documents both ways into a scratch dir and compare every column.

    The sealed bodies differ (random nonces), so bodies are compared opened.
    """
    with tempfile.TemporaryDirectory(prefix="fieldsync-bench-check-") as tmp:
        data_dir = Path(tmp)
        config = replace(Config(), data_dir=data_dir)
        rng = random.Random(7)
        docs = [record(rng, "p1", n) for n in range(3)]
        asyncio.run(_store_write(data_dir, config, docs))
        with Seeder(data_dir, config) as seeder:
            seeder.add_places([("p1", None)])
            seeder.seed(docs, db="fast")
            slow = _rows(seeder.conn, "slow")
            fast = _rows(seeder.conn, "fast")
            if [r[:-1] for r in slow] != [r[:-1] for r in fast]:
                raise AssertionError(f"seeded rows differ from the store's:\n{slow}\n{fast}")
            for doc_id, rev, *_ in slow:
                if _open(seeder, "slow", doc_id, rev) != _open(seeder, "fast", doc_id, rev):
                    raise AssertionError(f"seeded body of {doc_id} differs from the store's")


async def _store_write(data_dir: Path, config: Config, docs: list[dict[str, Any]]) -> None:
    store = SqliteStore(db_path(data_dir))
    try:
        await store.create_db("slow")
        await store.create_db("fast")
        keys = KeyRing(load_master_key(config.key_file, create=True), connections(store.path))
        vault = Vault(keys)
        writes = []
        for raw in docs:
            doc = parse_incoming(raw, new_edits=True)
            assert doc.place is not None
            rev = new_rev(None, False, doc.body)
            key_ref, sealed = vault.seal_body("slow", doc.id, rev, doc.place, doc.body)
            writes.append(
                RevisionWrite(doc.id, (rev,), False, doc.place, key_ref, sealed, True, None)
            )
        results = await store.write("slow", writes)
        assert all(r.error is None for r in results), results
    finally:
        await store.close()


def _rows(conn: sqlite3.Connection, db: str) -> list[tuple[Any, ...]]:
    db_id = conn.execute("SELECT id FROM dbs WHERE name=?", (db,)).fetchone()[0]
    return conn.execute(
        "SELECT d.id, d.winner, d.place, d.seq, d.deleted, d.leaves, d.tree, "
        "r.place, r.deleted, r.key_ref, r.body FROM docs d JOIN revs r "
        "ON r.db=d.db AND r.doc_id=d.id AND r.rev=d.winner WHERE d.db=? ORDER BY d.seq",
        (db_id,),
    ).fetchall()


def _open(seeder: Seeder, db: str, doc_id: str, rev: str) -> dict[str, Any]:
    db_id = seeder.db_id(db)
    place, deleted, key_ref, body = seeder.conn.execute(
        "SELECT place, deleted, key_ref, body FROM revs WHERE db=? AND doc_id=? AND rev=?",
        (db_id, doc_id, rev),
    ).fetchone()
    stored = StoredRevision(doc_id, rev, place, bool(deleted), key_ref, body)
    return seeder.vault.open_body(db, stored)
