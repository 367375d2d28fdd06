"""An audit trail whose remote (CouchDB's place in production) stores only when let.

:class:`Gated` appends wait for ``gate``; ``fail`` makes the next ones fail.  With
:func:`request_context` and :func:`run_in`, tests act as concurrent requests, each
with its own stake (what its answer waits for), as the audit middleware sets it.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sync import audit as audit_trail
from sync.audit import AuditLog, Entry
from sync.errors import StoreUnavailable


class Gated:
    """A remote whose appends wait for ``gate``; ``fail`` makes the next ones fail."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.batches: list[list[str]] = []
        self.stored: list[str] = []
        self.kept: list[str] = []  # a failed append's entries, sent with the next
        self.entries: list[Entry] = []  # every entry stored, whole
        self._kept_entries: list[Entry] = []
        self.fail = 0

    async def append(self, entries: Sequence[Entry]) -> None:
        self.kept += [e.action for e in entries]
        self._kept_entries += entries
        self.batches.append([e.action for e in entries])
        await self.gate.wait()
        if self.fail:
            self.fail -= 1
            raise StoreUnavailable("CouchDB is away")
        self.stored += self.kept
        self.entries += self._kept_entries
        self.kept, self._kept_entries = [], []

    async def close(self) -> None:
        return None


class NoLocal:
    chain: Any = None

    async def append(self, entries: Sequence[Entry]) -> None:
        raise AssertionError("entries go to the remote")

    async def move(self, entries: Sequence[tuple[int, Entry]]) -> None:
        raise AssertionError("entries go to the remote")


def gated_audit() -> tuple[AuditLog, Gated]:
    remote = Gated()
    return AuditLog(NoLocal(), remote=remote), remote


def request_context() -> contextvars.Context:
    """A context like the audit middleware's for one request."""
    context = contextvars.copy_context()
    context.run(audit_trail._STAKE.set, [0])
    return context


def run_in(context: contextvars.Context, work: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
    async def run() -> None:
        await work()

    return asyncio.get_running_loop().create_task(run(), context=context)


async def flush(audit: AuditLog) -> None:
    """What the middleware does before an answer goes out."""
    await audit.flush(audit_trail.stake())


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)
