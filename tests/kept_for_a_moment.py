"""Helpers of the tests of answers kept for a moment (sync.recent, docs/adr/0005 and 0006):
a test clock whose ``sleep`` moves it on, as the real wait moves time, and a SQLite store
that counts its reads (each one a hop to a reader thread)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from sync.store.sqlite import SqliteStore

T = TypeVar("T")


@dataclass
class Clock:
    now: float = 1000.0
    slept: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class CountingStore(SqliteStore):
    """The real store, counting its reads."""

    reads = 0

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        self.reads += 1
        return await super().read(fn)
