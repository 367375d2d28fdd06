"""The data-key port: wrapped per-place data keys, as :class:`sync.keys.KeyRing` needs them.

A data key is only ever handed to an adapter *wrapped* (sealed under the master
key, AES-256-GCM with the label ``dk:<place>:<version>``): no adapter sees or
stores a plaintext key, and whoever reads the storage without the master key
learns nothing.

The port is synchronous on purpose: the key ring is used from worker threads
(``asyncio.to_thread``, so that unwrapping and storage reads stay off the event
loop) and from the offline ``keys`` commands.  An adapter whose storage is
asynchronous (CouchDB) runs its calls on the server's event loop from those
threads, and refuses to be called on the event loop itself.

Guarantees every adapter gives:

- ``add(place, version, ...)`` creates the version only if it is absent, and
  answers the wrapped key that *is* stored afterwards: when two writers (two
  instances) create the same version at once, both get the same winner's key,
  and neither's data is ever sealed under a key the other cannot find;
- ``wrapped`` answers what ``add`` answered (never another key for the same
  ``place:version``);
- ``latest`` never answers a version that ``wrapped`` cannot find.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class StoredKey:
    """One data-key version as stored: ``wrapped`` is sealed under the master key."""

    place: str
    version: int
    wrapped: bytes
    created: str  # UTC ISO 8601


class DataKeyStore(Protocol):
    def wrapped(self, place: str, version: int) -> bytes | None:
        """The wrapped key of ``place:version``; None if there is none (or it was shredded)."""
        ...

    def latest(self, place: str) -> int | None:
        """The highest version ``place`` has; None if it has no key yet."""
        ...

    def add(self, place: str, version: int, wrapped: bytes, created: str) -> bytes:
        """Store ``place:version`` unless it exists; the wrapped key stored afterwards."""
        ...

    def all(self) -> list[StoredKey]:
        """Every stored key, by place then version (for listing and checking)."""
        ...

    def remove(self, place: str, version: int) -> bool:
        """Delete ``place:version`` for good (rotation, shredding); False if it was not there.

        Whatever is still sealed under it can never be opened again: callers
        remove only a version nothing refers to, or a place being shredded.
        """
        ...


def check_version(version: int) -> None:
    """Refuse a version below 1 (each adapter's ``add`` checks it first)."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"a data-key version is a whole number of at least 1, not {version!r}")
