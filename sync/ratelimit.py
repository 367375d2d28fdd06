"""Counting failures in a sliding window, per key ("ip:…", "device:…", "user:…").

An attempt whose outcome takes time to learn (a password hash, a code lookup)
is counted *before* it is checked: :meth:`FailureWindow.reserve` counts it as a
failure at once, or refuses it when a key is already at its limit, and
:meth:`FailureWindow.forgive` takes the failure back once the attempt proved
right.  Reserving is synchronous on the event loop, so no number of parallel
requests can pass a limit: the eleventh of a thousand concurrent guesses finds
ten slots already taken.

Only failures are counted, and a request is only ever slowed down when it would
fail anyway (see ``guard``): a valid device behind the same carrier NAT as a
stolen phone keeps syncing.  A key over its limit stays limited until enough of
its failures have slid out of the window.  Memory is bounded: the least recently
failing keys are forgotten first.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass


class Limited(Exception):
    """An attempt refused up front: a key is at its limit for ``wait`` more seconds."""

    def __init__(self, wait: int) -> None:
        super().__init__(f"limited for {wait} s")
        self.wait = wait


@dataclass(frozen=True)
class Reservation:
    """An attempt counted as a failure before it was checked (see ``forgive``)."""

    keys: tuple[str, ...]
    at: float


@dataclass(frozen=True)
class Limit:
    failures: int  # this many failures within ...
    window: float  # ... this many seconds, and the key is limited


class FailureWindow:
    def __init__(
        self,
        limits: dict[str, Limit],
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 50_000,
    ) -> None:
        self.limits = limits  # by key prefix: "ip", "device", "user"
        self._clock = clock
        self._max_keys = max_keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _limit(self, key: str) -> Limit:
        return self.limits[key.split(":", 1)[0]]

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        horizon = now - self._limit(key).window
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def reserve(self, *keys: str) -> Reservation:
        """Count an attempt on ``keys`` as a failure now; raise Limited if one is at its limit."""
        wait = self.retry_after(*keys)
        if wait is not None:
            raise Limited(wait)
        now = self._clock()
        self._append(keys, now)
        return Reservation(tuple(keys), now)

    def forgive(self, reservation: Reservation) -> None:
        """Take back a reserved failure: the attempt proved right."""
        for key in reservation.keys:
            times = self._failures.get(key)
            if times is not None and reservation.at in times:
                times.remove(reservation.at)
                if not times:
                    del self._failures[key]

    def fail(self, *keys: str) -> None:
        self._append(keys, self._clock())

    def _append(self, keys: tuple[str, ...], now: float) -> None:
        for key in keys:
            times = self._recent(key, now)
            times.append(now)
            limit = self._limit(key).failures
            while len(times) > limit:  # older failures add nothing once over the limit
                times.popleft()
            self._failures[key] = times
            self._failures.move_to_end(key)
        while len(self._failures) > self._max_keys:
            self._failures.popitem(last=False)

    def retry_after(self, *keys: str) -> int | None:
        """Seconds until the first limited key of ``keys`` may fail again; None if none is."""
        now = self._clock()
        waits = []
        for key in keys:
            times = self._recent(key, now)
            limit = self._limit(key)
            if len(times) >= limit.failures:
                waits.append(times[-limit.failures] + limit.window - now)
        return max(1, math.ceil(max(waits))) if waits else None
