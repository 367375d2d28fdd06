"""Crypto-shredding a place: its data keys and its documents, gone for good.

``fieldsync keys shred PLACE --confirm PLACE`` (server stopped) deletes, in one
transaction, every data-key version of the place and every document of it (the
documents' rows, all their revisions, and the attachments sealed under its key),
with SQLite's ``secure_delete`` so the freed pages are overwritten with zeros,
then truncates the write-ahead log. The place's ciphertext is then unreadable
wherever a copy of it survives without its data key.

Not erased here: copies already synced to devices (the server never learns of
them again), SMS texts (sealed under the shared key), and backups of the data
dir, which hold the wrapped data keys too: rotate the master key afterwards
(``keys rewrap``) and destroy the old one to make those backups unreadable.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from sync.audit import cli_actor
from sync.audit_store import embedded
from sync.keyadmin import Shredded
from sync.keys import KeyError_, MasterKey
from sync.store.base import SHARED
from sync.store.schema import connect, db_path


def shred(conn: sqlite3.Connection, place: str, master: MasterKey) -> Shredded:
    """Delete the place's keys and documents (inside the caller's transaction, audited there)."""
    if place == SHARED:
        raise KeyError_("the shared key seals forms, settings, checkpoints and SMS: not shredded")
    keys = conn.execute("SELECT count(*) FROM data_keys WHERE place=?", (place,)).fetchone()[0]
    if not keys:
        raise KeyError_(f"place {place} has no data key: nothing to shred")
    conn.execute("PRAGMA secure_delete=ON")
    # Every revision of its documents (branches left in other places included), then
    # what else its key sealed: branches of documents that moved away, attachments.
    revisions = conn.execute(
        "DELETE FROM revs WHERE (db, doc_id) IN (SELECT db, id FROM docs WHERE place=?)",
        (place,),
    ).rowcount
    revisions += conn.execute("DELETE FROM revs WHERE place=?", (place,)).rowcount
    attachments = conn.execute("DELETE FROM attachments WHERE place=?", (place,)).rowcount
    documents = conn.execute("DELETE FROM docs WHERE place=?", (place,)).rowcount
    conn.execute("DELETE FROM data_keys WHERE place=?", (place,))
    done = Shredded(place, keys, documents, revisions, attachments)
    detail = (
        f"place {place}: {keys} data keys, {documents} documents, "
        f"{revisions} revisions, {attachments} attachments"
    )
    embedded.note(conn, embedded.open_chain(conn, master), cli_actor(), "key_shred", detail)
    return done


def truncate_log(data_dir: Path) -> None:
    """Empty the write-ahead log once shredded: no old page of the place left in it."""
    with closing(connect(db_path(data_dir), create=False)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
