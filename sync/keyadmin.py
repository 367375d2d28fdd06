"""What the ``fieldsync keys`` commands say about keys, whichever store holds them.

A data key as people read it, whether a master key opens it, and what a
re-wrap (master-key rotation) or a shredding did.  The commands' work on the
data dir's SQLite file is :mod:`sync.datakeys.embedded_admin`,
:mod:`sync.datakeys.embedded_rotation` and :mod:`sync.datakeys.embedded_shred`;
with the documents in CouchDB, :mod:`sync.couchrotation` and :mod:`sync.couchshred`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sync.datakeys.ports import StoredKey
from sync.keys import KeyError_, MasterKey, label

CHECKED_AT_START = 200  # data keys unwrapped when the server starts (a wrong key fails fast)


@dataclass(frozen=True)
class DataKey:
    place: str
    version: int
    created: str
    opens: bool  # the given master key unwraps it

    @property
    def ref(self) -> str:
        return f"{self.place}:{self.version}"


def describe(place: str, version: int) -> str:
    """A data key as people read it: ``area-7 v2``; the shared place is ``(shared) v1``."""
    return f"{place or '(shared)'} v{version}"


def unwraps(master: MasterKey, place: str, version: int, wrapped: bytes) -> bool:
    """Whether ``master`` unwraps the data key ``place:version`` wrapped as ``wrapped``."""
    try:
        master.unwrap(label(place, version), wrapped)
    except KeyError_:
        return False
    return True


def opens(master: MasterKey, key: StoredKey) -> bool:
    """Whether ``master`` unwraps ``key`` (a key stored by any adapter of the data-key port)."""
    return unwraps(master, key.place, key.version, key.wrapped)


@dataclass(frozen=True)
class Rewrapped:
    rewrapped: int
    already: int


@dataclass(frozen=True)
class Shredded:
    place: str
    keys: int
    documents: int
    revisions: int
    attachments: int
