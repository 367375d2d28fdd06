"""The in-memory adapter of the audit port (sync.audit_store.ports), for tests.

Each call runs without awaiting anything, so on one event loop it is atomic:
appends to one chain never interleave.  The chain key is kept sealed, as the
other adapters keep it; everything lasts as long as the process.
"""

from __future__ import annotations

from collections.abc import Sequence

from sync.audit_store.links import (
    ChainKey,
    Entry,
    Head,
    Linked,
    first_link,
    reseal_key,
    seal_key,
    unseal_key,
)
from sync.audit_store.ports import check_name
from sync.errors import StoreError
from sync.keys import MasterKey


class MemoryAudit:
    head_is_exact = True

    def __init__(self) -> None:
        self.sealed_key: str | None = None
        self.by_chain: dict[str, list[Linked]] = {}
        self.heads: dict[str, Head] = {}

    async def chain_key(self, master: MasterKey, *, create: bool) -> ChainKey | None:
        if self.sealed_key is None:
            if not create:
                return None
            _, self.sealed_key = seal_key(master)
        return ChainKey(unseal_key(master, self.sealed_key))

    async def rewrap_key(self, old: MasterKey, new: MasterKey) -> None:
        if self.sealed_key is not None:
            self.sealed_key = reseal_key(old, new, self.sealed_key) or self.sealed_key

    async def start(self, key: ChainKey, chain: str) -> None:
        if check_name(chain) in self.heads or self.by_chain.get(chain):
            raise StoreError(f"audit chain {chain} exists already: two writers on one chain")
        self.heads[chain] = key.head(0, first_link(key, chain))

    async def append(self, key: ChainKey, chain: str, entries: Sequence[Entry]) -> Head:
        stored = self.by_chain.setdefault(check_name(chain), [])
        head = self.heads.get(chain)
        previous, seq = (head.hash, head.id) if head else (first_link(key, chain), 0)
        if stored and stored[-1].seq > seq:
            previous, seq = stored[-1].hash, stored[-1].seq
        linked = key.link(previous, seq + 1, entries)
        stored.extend(linked)
        if linked:
            self.heads[chain] = key.head(linked[-1].seq, linked[-1].hash)
        return self.heads.get(chain) or key.head(0, previous)

    async def head(self, chain: str) -> Head | None:
        return self.heads.get(check_name(chain))

    async def entries(self, chain: str, first: int = 1) -> list[Linked]:
        return [e for e in self.by_chain.get(check_name(chain), []) if e.seq >= first]

    async def chains(self) -> list[str]:
        return sorted(set(self.heads) | {name for name, e in self.by_chain.items() if e})

    async def guard_problems(self) -> list[str]:
        return []

    async def close(self) -> None:
        return None
