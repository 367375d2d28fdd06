"""The embedded adapter of the data-key port: the ``data_keys`` table of the data dir's file.

Each call opens a connection from the factory (the key ring runs beside the
server's single writer, in worker threads); ``add`` is one ``INSERT OR IGNORE``
then a read in the same transaction, so two writers end with one key.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager

from sync.datakeys.ports import StoredKey, check_version

ConnFactory = Callable[[], AbstractContextManager[sqlite3.Connection]]


class EmbeddedDataKeys:
    def __init__(self, connect: ConnFactory) -> None:
        self._connect = connect

    def wrapped(self, place: str, version: int) -> bytes | None:
        with self._connect() as conn:
            return wrapped_in(conn, place, version)

    def latest(self, place: str) -> int | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT max(version) FROM data_keys WHERE place=?", (place,)
            ).fetchone()
        return None if row[0] is None else int(row[0])

    def add(self, place: str, version: int, wrapped: bytes, created: str) -> bytes:
        check_version(version)
        with self._connect() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO data_keys(place, version, wrapped, created) VALUES(?,?,?,?)",
                (place, version, wrapped, created),
            )
            stored = wrapped_in(conn, place, version)
        assert stored is not None  # inserted, or there already
        return stored

    def all(self) -> list[StoredKey]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT place, version, wrapped, created FROM data_keys ORDER BY place, version"
            ).fetchall()
        return [StoredKey(str(p), int(v), bytes(w), str(c)) for p, v, w, c in rows]

    def remove(self, place: str, version: int) -> bool:
        with self._connect() as conn:
            gone = conn.execute(
                "DELETE FROM data_keys WHERE place=? AND version=?", (place, version)
            ).rowcount
        return gone > 0


def wrapped_in(conn: sqlite3.Connection, place: str, version: int) -> bytes | None:
    row = conn.execute(
        "SELECT wrapped FROM data_keys WHERE place=? AND version=?", (place, version)
    ).fetchone()
    return None if row is None else bytes(row[0])
