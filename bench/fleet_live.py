"""The fleet phase's live phones: what a write costs while every phone holds a long poll.

After the no-op rounds (:mod:`bench.fleet`), every phone opens a live ``_changes``
long poll as PouchDB's live sync does (re-polled as soon as it answers, a heartbeat
every 10 s) on its instance.  Two windows of one heartbeat each follow:

- **quiet**: nothing is written: the idle cost of live phones (each phone's heartbeat
  falls once in it) and the instances' own background work;
- **writes**: one CHW writes a document into her area every half second, through her
  phone's instance.

A write must wake the long polls that can see it (her own phone's), not every open
one: each woken long poll reads its places again (on CouchDB, keyed reads of its
places' logs).  Reported per write, net of the quiet window: fieldsync's and
CouchDB's CPU and CouchDB's requests; and how many long polls answered with changes
(the writer's phone must have received every write; other phones none).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from bench import cpu
from bench.fleet_load import Phone

HEARTBEAT_MS = 10_000  # PouchDB's default
LONGPOLL_SECONDS = 60.0  # the server ends a long poll after this (Config.longpoll_max_seconds)
WINDOW = 10.0  # seconds of each window (one heartbeat), the last write's wake included
SETTLE = 1.0  # seconds after every long poll waits, before the windows
OPENING = 30.0  # seconds at most for every long poll to read its set and wait
METRICS_TOKEN = "bench-fleet-live"  # the instances' FIELDSYNC_METRICS_TOKEN
WRITE_EVERY = 0.5  # seconds


class LivePhones:
    """Every phone's long poll, re-opened as soon as it answers; what each received."""

    def __init__(self, phones: Sequence[Phone], db: str) -> None:
        self.phones, self.db = phones, db
        self.received: Counter[str] = Counter()  # serial -> changes received
        self.answers: Counter[str] = Counter()  # serial -> long polls answered
        self.errors: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, http: aiohttp.ClientSession) -> None:
        self._tasks = [asyncio.create_task(self._poll(http, p)) for p in self.phones]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _poll(self, http: aiohttp.ClientSession, phone: Phone) -> None:
        since = "now"
        while True:
            url = (
                f"{phone.server}/{self.db}/_changes?style=all_docs&feed=longpoll"
                f"&heartbeat={HEARTBEAT_MS}&since={quote(since, safe='')}"
            )
            try:
                async with http.get(url, headers=phone.headers()) as response:
                    body = await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{response.status} {body[:200]!r}")
            except (aiohttp.ClientError, RuntimeError) as exc:
                self.errors.append(f"{phone.serial}: {type(exc).__name__}: {exc}")
                await asyncio.sleep(1.0)
                continue
            answer = orjson.loads(body.strip())
            since = str(answer["last_seq"])
            self.answers[phone.serial] += 1
            self.received[phone.serial] += len(answer["results"])


async def _write(http: aiohttp.ClientSession, phone: Phone, db: str, area: str, n: int) -> None:
    url = f"{phone.server}/{db}/live-{phone.serial}-{n:04d}"
    body = {"type": "bench_live", "place": area, "n": n}
    async with http.put(url, json=body, headers=phone.headers()) as response:
        if response.status != 201:
            raise RuntimeError(f"live write: {response.status} {await response.text()}")


async def _waiting(http: aiohttp.ClientSession, servers: Sequence[str]) -> int:
    """Long polls waiting now, summed over the instances (``fieldsync_longpolls_waiting``)."""
    total = 0
    for server in servers:
        headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        async with http.get(f"{server}/metrics", headers=headers) as response:
            text = await response.text()
            if response.status != 200:
                raise RuntimeError(f"metrics of {server}: {response.status} {text[:200]}")
        for line in text.splitlines():
            if line.startswith("fieldsync_longpolls_waiting "):
                total += int(float(line.split()[1]))
    return total


async def _all_waiting(
    http: aiohttp.ClientSession, servers: Sequence[str], phones: int, live: LivePhones
) -> None:
    """Until every phone's long poll has read its set and waits (the windows must not
    hold that work), then a moment more."""
    deadline = time.perf_counter() + OPENING
    while await _waiting(http, servers) < phones:
        if live.errors or time.perf_counter() > deadline:
            raise RuntimeError(f"the long polls did not all open: {live.errors[:3]}")
        await asyncio.sleep(0.2)
    await asyncio.sleep(SETTLE)


def _taken(
    pids: dict[str, int | None], requests: Callable[[], float | None]
) -> dict[str, float | None]:
    taken: dict[str, float | None] = {name: cpu.seconds(pid) for name, pid in pids.items()}
    taken["couchdb requests"] = requests()
    return taken


def _delta(before: dict[str, float | None], after: dict[str, float | None]) -> dict[str, float]:
    return {
        name: after[name] - value  # type: ignore[operator]
        for name, value in before.items()
        if value is not None and after.get(name) is not None
    }


async def live_costs(
    phones: Sequence[Phone],
    db: str,
    area: str,
    window: float,
    pids: dict[str, int | None],
    couch_requests: Callable[[], float | None],
    servers: Sequence[str],
) -> dict[str, Any]:
    """Open every phone's long poll; a quiet window, then a window of writes by
    ``phones[0]``'s worker into ``area``; the costs of a write, net of the quiet window."""
    live = LivePhones(phones, db)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        await live.start(http)
        await _all_waiting(http, servers, len(phones), live)
        opened = dict(live.answers)
        quiet_before = _taken(pids, couch_requests)
        await asyncio.sleep(window)
        quiet = _delta(quiet_before, _taken(pids, couch_requests))
        woken_quiet = sum((Counter(live.answers) - Counter(opened)).values())
        writes, started = 0, time.perf_counter()
        marked = dict(live.answers)
        busy_before = _taken(pids, couch_requests)
        while time.perf_counter() - started < window - 1.0:  # a second left: the last wake
            await _write(http, phones[0], db, area, writes)
            writes += 1
            await asyncio.sleep(max(0.0, started + writes * WRITE_EVERY - time.perf_counter()))
        await asyncio.sleep(max(0.0, started + window - time.perf_counter()))
        busy = _delta(busy_before, _taken(pids, couch_requests))
        answered = Counter(live.answers) - Counter(marked)
        await live.stop()
    writer = phones[0].serial
    others = sum(n for serial, n in live.received.items() if serial != writer)
    per_write = {
        name: round((busy[name] - quiet.get(name, 0.0)) / max(1, writes), 4) for name in busy
    }
    return {
        "phones": len(phones),
        "window_s": window,
        "writes": writes,
        "quiet": {name: round(v, 3) for name, v in quiet.items()},
        "with_writes": {name: round(v, 3) for name, v in busy.items()},
        "per_write_net": per_write,
        "long_polls_answered_quiet": woken_quiet,
        "long_polls_answered_with_writes": sum(answered.values()),
        "writer_phone_received": live.received[writer],
        "other_phones_received": others,
        "errors": len(live.errors),
        "first_errors": live.errors[:5],
    }


def show(name: str, result: dict[str, Any], log: Callable[[str], None]) -> None:
    per = result["per_write_net"]
    cpu_ms = ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in per.items() if k != "couchdb requests")
    log(
        f"  [{name}] live: {result['phones']:,} long polls open; {result['writes']} writes "
        f"in {result['window_s']:.0f} s into one area"
    )
    log(f"  [{name}] live: CPU per write, net of the quiet window: {cpu_ms}")
    idle = {k: v for k, v in result["quiet"].items() if k != "couchdb requests"}
    log(
        f"  [{name}] live: idle, {result['window_s']:.0f} s with nothing written (a heartbeat "
        f"each): CPU " + ", ".join(f"{k} {1000 * v:.0f} ms" for k, v in idle.items())
    )
    if "couchdb requests" in per:
        quiet = result["quiet"].get("couchdb requests", 0.0)
        log(
            f"  [{name}] live: CouchDB requests per write, net: {per['couchdb requests']:.1f}; "
            f"idle: {quiet:.0f} in {result['window_s']:.0f} s, "
            f"{quiet / max(1, result['phones']):.2f} per live phone"
        )
    log(
        f"  [{name}] live: long polls answered {result['long_polls_answered_with_writes']} "
        f"with writes, {result['long_polls_answered_quiet']} quiet; the writer's phone received "
        f"{result['writer_phone_received']} of {result['writes']}, other phones "
        f"{result['other_phones_received']}; errors {result['errors']}"
    )
    for error in result["first_errors"]:
        log(f"  [{name}] live error: {error}")
