"""Counting failures in a sliding window, per key ("ip:…", "device:…", "user:…").

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

    def fail(self, *keys: str) -> None:
        now = self._clock()
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
