"""The key commands on the data dir's SQLite file: listing, checking and re-wrapping data keys.

Re-wrapping is master-key rotation: every data key is unwrapped with the old
master key and wrapped with the new one, in one transaction, so the data itself
(bodies, attachments, SMS texts) is untouched and a failure changes nothing.
It is resumable: a data key that the new master key already opens is left as it
is, so running the command again after an interruption finishes the work.
The audit chain key follows in the same transaction, and the run is audited there.

``meta`` also says where the server last kept its documents
(:func:`documents_backend`): rotating or shredding keys here is refused when
the documents they seal are not in this file (:func:`check_documents_here`).
"""

from __future__ import annotations

import sqlite3

from sync.audit_store import embedded
from sync.keyadmin import CHECKED_AT_START, DataKey, Rewrapped, describe, unwraps
from sync.keys import KeyError_, MasterKey, label


def list_keys(conn: sqlite3.Connection, master: MasterKey) -> list[DataKey]:
    rows = conn.execute(
        "SELECT place, version, created, wrapped FROM data_keys ORDER BY place, version"
    ).fetchall()
    return [DataKey(p, v, c, unwraps(master, p, v, bytes(w))) for p, v, c, w in rows]


def check_master(conn: sqlite3.Connection, master: MasterKey) -> None:
    """Refuse a master key that does not open this data dir's data keys (a few of them)."""
    rows = conn.execute(
        "SELECT place, version, wrapped FROM data_keys ORDER BY rowid LIMIT ?",
        (CHECKED_AT_START,),
    ).fetchall()
    refused = [describe(p, v) for p, v, w in rows if not unwraps(master, p, v, bytes(w))]
    if refused:
        raise KeyError_(
            f"the master key does not open {len(refused)} of the {len(rows)} data keys "
            f"checked (first: {refused[0]}): this data dir was written with another master "
            "key. Set FIELDSYNC_MASTER_KEY or FIELDSYNC_MASTER_KEY_FILE to that key (after "
            "`fieldsync keys rewrap`, to the new one)."
        )


def rewrap(conn: sqlite3.Connection, old: MasterKey, new: MasterKey) -> Rewrapped:
    """Wrap every data key under ``new`` (inside the caller's transaction).

    A key that neither master key opens stops the whole run (nothing is changed):
    it would otherwise be lost for good.
    """
    rows = conn.execute("SELECT place, version, wrapped FROM data_keys").fetchall()
    done = already = 0
    for place, version, wrapped in rows:
        name = label(place, version)
        if unwraps(new, place, version, bytes(wrapped)):
            already += 1
            continue
        try:
            key = old.unwrap(name, bytes(wrapped))
        except KeyError_ as exc:
            raise KeyError_(
                f"data key {describe(place, version)} opens with neither the current master key "
                "nor the new one; nothing was changed"
            ) from exc
        conn.execute(
            "UPDATE data_keys SET wrapped=? WHERE place=? AND version=?",
            (new.wrap(name, key), place, version),
        )
        done += 1
    embedded.rewrap_key(conn, old, new)
    detail = f"master key rotated: {done} data keys re-wrapped, {already} already under it"
    embedded.note_cli(conn, new, "key_rewrap", detail)
    return Rewrapped(done, already)


def documents_backend(conn: sqlite3.Connection) -> str:
    """Where the server last kept its documents: "embedded", or "CouchDB at URL"."""
    row = conn.execute("SELECT value FROM meta WHERE key='documents_backend'").fetchone()
    return "embedded" if row is None else str(row[0])


def set_documents_backend(conn: sqlite3.Connection, backend: str) -> None:
    conn.execute(
        "INSERT INTO meta(key, value) VALUES('documents_backend', ?) "
        "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
        (backend,),
    )


def check_documents_here(conn: sqlite3.Connection, what: str) -> None:
    """Refuse to re-seal or delete data keys whose documents this data dir does not hold.

    Rotation deletes the key versions nothing in the data dir refers to any more; with
    the documents in CouchDB that would be every version still sealing them.
    """
    backend = documents_backend(conn)
    if backend != "embedded":
        raise KeyError_(
            f"cannot {what}: this server keeps its documents in {backend}, and re-sealing "
            "or shredding them there is not supported yet; its data keys are left as they are"
        )
