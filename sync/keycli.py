"""The ``fieldsync keys`` commands: the master key and the data keys.

    fieldsync keys list                      data keys, and whether the master key opens each
    fieldsync keys rewrap --new-key-file F   master-key rotation (every data key re-wrapped)
    fieldsync keys rotate --place P | --all  data-key rotation (every blob re-sealed)
    fieldsync keys shred PLACE --confirm P   crypto-shredding a place

All but ``list`` need the server stopped (they take the data dir's lock), except
``rotate`` and ``shred`` with the documents in CouchDB (``FIELDSYNC_COUCHDB_URL``):
those run while every instance serves, one at a time (a lease in CouchDB;
:mod:`sync.couchrotation`, :mod:`sync.couchshred`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import structlog

from sync import couchrotation, couchshred, datadir, keyadmin
from sync.clitools import (
    Commands,
    add_command,
    add_group,
    config_of,
    data_dir_option,
    one_of,
    table,
)
from sync.config import Config
from sync.datakeys import backends as keybackends
from sync.datakeys import embedded_admin, embedded_rotation, embedded_shred
from sync.keys import KeyError_, key_from_file, load_master_key
from sync.store.cliconn import with_conn

log = structlog.get_logger("fieldsync.keys")

SHARED_KEY = "(shared)"  # the shared documents', local docs' and SMS key
LIST_FORMATS = {
    "table": "aligned columns under a header: place, version, created, master key",
    "json": "a JSON array, one object a key",
}


def cmd_keys_list(args: argparse.Namespace) -> int:
    config = config_of(args)
    master = load_master_key(config.key_file, create=False)
    if config.couchdb_url:  # every instance's keys live there (sync.datakeys.couchdb)
        found = keybackends.couch_keys(config, master)
    else:
        found = with_conn(args, lambda c: embedded_admin.list_keys(c, master))
    if args.format == "json":
        objects = [{**dataclasses.asdict(k), "ref": k.ref} for k in found]
        print(json.dumps(objects, indent=2))
        return 0
    rows = [
        (
            key.place or SHARED_KEY,
            str(key.version),
            key.created,
            "opens" if key.opens else "DOES NOT OPEN",
        )
        for key in found
    ]
    print(table(("PLACE", "VERSION", "CREATED", "MASTER KEY"), rows))
    shut = sum(not k.opens for k in found)
    print(f"{len(found)} data keys; {shut} not opened by the configured master key")
    return 1 if shut else 0


def cmd_keys_rewrap(args: argparse.Namespace) -> int:
    """Master-key rotation: the server must be stopped (it holds the old key in memory)."""
    config = config_of(args)
    new_file = Path(args.new_key_file)
    with datadir.exclusive(config.data_dir, "re-wrap the data keys"):
        old = load_master_key(config.key_file, create=False)
        created = not new_file.exists()
        new = key_from_file(new_file, create=True)
        if new.key == old.key:
            raise KeyError_("the new master key is the current one; give a new key file")
        done = with_conn(args, lambda c: embedded_admin.rewrap(c, old, new))
        if config.couchdb_url:  # the keys every instance shares, and the audit chain key
            shared, shared_already = keybackends.couch_rewrap(config, old, new)
            done = keyadmin.Rewrapped(done.rewrapped + shared, done.already + shared_already)
    log.info("master_key_rewrapped", rewrapped=done.rewrapped, already=done.already)
    made = f"new master key written to {new_file} (mode 0600); " if created else ""
    print(
        f"{made}{done.rewrapped} data keys re-wrapped, {done.already} already under the new "
        f"key. Start the server with FIELDSYNC_MASTER_KEY_FILE={new_file} (or put that file "
        "in place of the old one); keep the old key until the server has started with the new."
    )
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    """New data-key versions, every blob re-sealed under them, the old versions deleted."""
    config = config_of(args)
    if bool(args.place) == args.all:
        raise KeyError_("name the places to rotate (--place, repeatable) or give --all")
    if config.couchdb_url:
        return _rotate_on_couchdb(config, None if args.all else args.place)
    with datadir.exclusive(config.data_dir, "rotate the data keys"):
        master = load_master_key(config.key_file, create=False)
        with_conn(args, lambda c: embedded_admin.check_master(c, master))
        with_conn(args, lambda c: embedded_admin.check_documents_here(c, "rotate the data keys"))
        places = None if args.all else args.place
        from sync.packages import extensions  # here: the package list imports this module

        sealed = extensions().sealed_blobs
        done = embedded_rotation.rotate(
            config.data_dir, master, places, lambda line: print(line, flush=True), sealed
        )
    log.info("data_keys_rotated", places=places or "all", deleted=done.deleted, kept=done.kept)
    print(f"old data keys deleted: {', '.join(done.deleted) or 'none'}")
    if done.kept:
        print(f"old data keys still in use, kept: {', '.join(done.kept)} (run the command again)")
        return 1
    return 0


def _rotate_on_couchdb(config: Config, places: list[str] | None) -> int:
    """Rotation while the instances serve (sync.couchrotation); the data dir is not locked."""
    master = load_master_key(config.key_file, create=False)
    keybackends.check_opened(keybackends.couch_keys_stored(config), master, "CouchDB")
    from sync.packages import extensions  # here: the package list imports this module

    sealed = extensions().couch_sealed_blobs

    def report(line: str) -> None:
        print(line, flush=True)

    done = keybackends.on_couchdb(
        config,
        lambda client: couchrotation.rotate(
            client,
            config.couchdb_prefix,
            master,
            places,
            config.key_refresh_seconds,
            sealed,
            report,
        ),
    )
    log.info("data_keys_rotated", places=places or "all", deleted=done.deleted, kept=done.kept)
    print(f"old data keys deleted: {', '.join(done.deleted) or 'none'}")
    if done.kept:
        print(
            f"old data keys kept: {', '.join(done.kept)}: the shared key seals the refused "
            "records each instance keeps in its own data dir, which this command cannot see"
        )
    return 0


def cmd_keys_shred(args: argparse.Namespace) -> int:
    """Crypto-shredding: a place's data keys and documents deleted for good."""
    config = config_of(args)
    if args.confirm != args.place:
        raise KeyError_(
            f"shredding cannot be undone: repeat the place's id, --confirm {args.place}"
        )
    if config.couchdb_url:
        return _shred_on_couchdb(config, args.place)
    with datadir.exclusive(config.data_dir, "shred a place"):
        master = load_master_key(config.key_file, create=False)
        with_conn(args, lambda c: embedded_admin.check_master(c, master))
        with_conn(args, lambda c: embedded_admin.check_documents_here(c, "shred a place"))
        done = with_conn(args, lambda c: embedded_shred.shred(c, args.place, master))
        embedded_shred.truncate_log(config.data_dir)
    _said_shredded(done)
    return 0


def _shred_on_couchdb(config: Config, place: str) -> int:
    """Shredding in CouchDB while the instances serve (sync.couchshred)."""
    master = load_master_key(config.key_file, create=False)
    keybackends.check_opened(keybackends.couch_keys_stored(config), master, "CouchDB")
    done = keybackends.on_couchdb(
        config,
        lambda client: couchshred.shred(
            client,
            config.couchdb_prefix,
            master,
            place,
            config.key_refresh_seconds,
            lambda line: print(line, flush=True),
        ),
    )
    _said_shredded(done)
    print(
        "CouchDB keeps old revisions of the deleted documents until it compacts its databases "
        "(POST /{db}/_compact); without the deleted keys they cannot be read."
    )
    return 0


def _said_shredded(done: keyadmin.Shredded) -> None:
    log.warning(
        "place_shredded",
        place=done.place,
        keys=done.keys,
        documents=done.documents,
        revisions=done.revisions,
        attachments=done.attachments,
    )
    print(
        f"place {done.place} shredded: {done.keys} data keys, {done.documents} documents, "
        f"{done.revisions} revisions and {done.attachments} attachments deleted. Copies on "
        "devices stay there; old backups of the data dir hold the old keys: rotate the master "
        "key (keys rewrap) and destroy the old one to make them unreadable. Archives made by "
        "`fieldsync backup` carry their own master key: destroy those made before today."
    )


def register(sub: Commands) -> None:
    """Add the ``keys`` command group to the top-level CLI."""
    keys = add_group(
        sub,
        "keys",
        "the master key and the data keys",
        "The master key wraps the data keys; the data keys (one or more a place, and\n"
        "one for shared documents, local docs and SMS) seal what is stored.\n"
        "Every keys command but list needs the server stopped, but rotate and\n"
        "shred with the documents in CouchDB (FIELDSYNC_COUCHDB_URL).",
    )
    formats = "\n".join(f"  {name:<6} {what}" for name, what in LIST_FORMATS.items())
    listing = add_command(
        keys,
        "list",
        "list the data keys, and whether the master key opens each",
        "List the data keys, and whether the configured master key opens each.\n"
        f"The shared key's place shows as {SHARED_KEY}. Exit 1 if any does not open.\n\n"
        f"formats:\n{formats}",
    )
    listing.add_argument(
        "--format",
        choices=tuple(LIST_FORMATS),
        default="table",
        help=f"{one_of(LIST_FORMATS)} (default: %(default)s)",
    )
    data_dir_option(listing)
    listing.set_defaults(func=cmd_keys_list)
    rewrap = add_command(
        keys,
        "rewrap",
        "rotate the master key: wrap every data key under a new one (server stopped)",
        "Rotate the master key: wrap every data key under a new one. Resumable; keep\n"
        "the old key until the server has started with the new one.",
    )
    rewrap.add_argument(
        "--new-key-file",
        required=True,
        metavar="FILE",
        help="the new master key file (made, mode 0600, if it does not exist)",
    )
    data_dir_option(rewrap)
    rewrap.set_defaults(func=cmd_keys_rewrap)
    rotate = add_command(
        keys,
        "rotate",
        "new data keys for places, every record re-sealed (server stopped, or CouchDB)",
        "Make new data keys for the places named (or all), re-seal everything\n"
        "under them and delete the old keys. Give --place (repeatable) or --all.\n"
        "With FIELDSYNC_COUCHDB_URL set it runs while the instances serve (one\n"
        "rotation at a time); run it again if it was stopped.",
    )
    rotate.add_argument(
        "--place", action="append", default=[], metavar="ID", help="a place (repeatable)"
    )
    rotate.add_argument("--all", action="store_true", help="every place, the shared key too")
    data_dir_option(rotate)
    rotate.set_defaults(func=cmd_keys_rotate)
    shred = add_command(
        keys,
        "shred",
        "delete a place's data keys and records for good (server stopped, or CouchDB)",
        "Crypto-shred a place: delete its data keys and its documents for good.\n"
        "This cannot be undone; copies on phones and in old backups remain.",
    )
    shred.add_argument("place", metavar="ID", help="the place to shred")
    shred.add_argument(
        "--confirm", required=True, metavar="ID", help="the place's id again, to confirm"
    )
    data_dir_option(shred)
    shred.set_defaults(func=cmd_keys_shred)
