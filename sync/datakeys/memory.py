"""The in-memory adapter of the data-key port (:mod:`sync.datakeys.ports`), for tests."""

from __future__ import annotations

import threading

from sync.datakeys.ports import StoredKey, check_version


class MemoryDataKeys:
    def __init__(self) -> None:
        self._keys: dict[tuple[str, int], StoredKey] = {}
        self._lock = threading.Lock()  # the port is called from several threads

    def wrapped(self, place: str, version: int) -> bytes | None:
        found = self._keys.get((place, version))
        return None if found is None else found.wrapped

    def latest(self, place: str) -> int | None:
        versions = [v for p, v in list(self._keys) if p == place]
        return max(versions, default=None)

    def add(self, place: str, version: int, wrapped: bytes, created: str) -> bytes:
        check_version(version)
        with self._lock:
            stored = self._keys.setdefault(
                (place, version), StoredKey(place, version, bytes(wrapped), created)
            )
        return stored.wrapped

    def all(self) -> list[StoredKey]:
        return [self._keys[k] for k in sorted(self._keys)]

    def remove(self, place: str, version: int) -> bool:
        with self._lock:
            return self._keys.pop((place, version), None) is not None
