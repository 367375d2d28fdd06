"""The key ring seals with a place's newest data-key version, asked for again once it is
``refresh_seconds`` old (sync.keys.KeyRing): how a rotation made while instances serve
reaches every instance (sync.couchrotation)."""

from __future__ import annotations

import asyncio
import secrets

from sync.datakeys.memory import MemoryDataKeys
from sync.keys import KeyRing, LocalMasterKey, label

MASTER = LocalMasterKey(b"m" * 32)
NOW = "2026-12-02T00:00:00+00:00"


def _add_version(keys: MemoryDataKeys, place: str, version: int) -> None:
    keys.add(place, version, MASTER.wrap(label(place, version), secrets.token_bytes(32)), NOW)


def test_a_new_version_is_used_once_the_current_one_is_older_than_the_refresh() -> None:
    keys = MemoryDataKeys()
    ring = KeyRing(MASTER, keys, refresh_seconds=0.0)
    assert ring.current("area-1")[0] == "area-1:1"
    _add_version(keys, "area-1", 2)  # a rotation, made through another instance
    assert ring.current("area-1")[0] == "area-1:2"
    assert not ring.has_current("area-1")  # stale at once: Vault.warm refreshes it


def test_within_the_refresh_time_the_version_in_hand_is_kept() -> None:
    keys = MemoryDataKeys()
    ring = KeyRing(MASTER, keys, refresh_seconds=3600.0)
    assert ring.current("area-1")[0] == "area-1:1"
    _add_version(keys, "area-1", 2)
    assert ring.current("area-1")[0] == "area-1:1"
    assert ring.has_current("area-1")


async def test_on_the_event_loop_a_stale_version_is_used_and_the_store_not_asked() -> None:
    """The port may not be called on the event loop (CouchDB's adapter refuses): the write
    path refreshes off the loop first (Vault.warm), and a seal on the loop never waits."""
    keys = MemoryDataKeys()
    ring = KeyRing(MASTER, keys, refresh_seconds=0.0)
    await asyncio.to_thread(ring.current, "area-1")
    _add_version(keys, "area-1", 2)
    assert ring.current("area-1")[0] == "area-1:1"  # on the loop: no store call
    assert (await asyncio.to_thread(ring.current, "area-1"))[0] == "area-1:2"
