"""The fleet's load generator: many phones, each doing a no-op sync once a period.

A no-op sync is what a PouchDB 9 client sends for ``PouchDB.sync(remote)`` (one-shot
pull + push) when neither side has anything new: one ``GET /{db}/`` when the remote
is opened, then two lanes at once (the pull and the push replications):

    pull: GET /              the server's id (part of the replication id)
          GET /{db}/_local/P  the pull checkpoint: since = its last_seq
          GET /{db}/          db info
          GET /{db}/_changes?style=all_docs&since=S&limit=100   -> no results
          GET /{db}/_local/P  checkpoint read again; unchanged, so no PUT
    push: GET /
          GET /{db}/_local/Q  the push checkpoint
          GET /{db}/_local/Q  (the phone's own changes are empty: no _revs_diff)

as recorded from a real client (the project's notes on PouchDB's requests:
"noop-pull-again", "noop-push-again" and "sync-bidirectional-one-shot"). Every
request carries HTTP Basic credentials and the phone's ``X-Device-Token``.

The pure pieces (:func:`schedule`, :func:`percentile`, :func:`summary`, :func:`noop_plan`)
are tested in ``tests/bench/test_fleet_load.py``; :func:`run_fleet` drives them over
aiohttp on loopback and stops by itself after the last round.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

REQUEST_TIMEOUT = 30.0  # a request slower than this counts as an error
CHANGES_LIMIT = 100  # PouchDB's batch_size
PHONE_CONNECTIONS = 6  # a browser's (and PouchDB's fetch's) connections per host


# -- the plan of a no-op sync (pure) -----------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One request of a sync: ``what`` names it in the report; ``path`` is relative to the
    server (``{since}`` is filled from the pull checkpoint just read)."""

    what: str
    path: str


def checkpoint_id(serial: str, direction: str) -> str:
    """A replication id shaped as PouchDB's (an MD5 in base64, ``/`` made ``.``), per phone
    and direction, percent-encoded for the path as PouchDB sends it."""
    digest = base64.b64encode(hashlib.md5(f"{serial}:{direction}".encode()).digest()).decode()
    return quote(digest.replace("/", "."), safe="")


def noop_plan(db: str, serial: str) -> tuple[Step, list[Step], list[Step]]:
    """The opening request, the pull lane and the push lane of one no-op sync."""
    pull = f"/{db}/_local/{checkpoint_id(serial, 'pull')}"
    push = f"/{db}/_local/{checkpoint_id(serial, 'push')}"
    changes = f"/{db}/_changes?style=all_docs&since={{since}}&limit={CHANGES_LIMIT}"
    opening = Step("GET /db/", f"/{db}/")
    pull_lane = [
        Step("GET /", "/"),
        Step("GET _local (pull)", pull),
        Step("GET /db/", f"/{db}/"),
        Step("GET _changes", changes),
        Step("GET _local (pull)", pull),
    ]
    push_lane = [
        Step("GET /", "/"),
        Step("GET _local (push)", push),
        Step("GET _local (push)", push),
    ]
    return opening, pull_lane, push_lane


def schedule(devices: int, period: float, rounds: int, seed: int = 11) -> list[tuple[float, int]]:
    """When each sync starts: ``(seconds after the start, device index)``, in time order.

    Each phone syncs once a ``period``; phones start at random moments spread uniformly
    over the first period (as phones that woke at different times do) and keep that
    phase. The same ``seed`` gives the same schedule.
    """
    if devices < 1 or rounds < 1 or period <= 0:
        raise ValueError("a schedule needs at least one device, one round and a period > 0")
    rng = random.Random(seed)
    phases = [rng.uniform(0.0, period) for _ in range(devices)]
    starts = [(phase + r * period, d) for d, phase in enumerate(phases) for r in range(rounds)]
    return sorted(starts)


# -- figures (pure) ----------------------------------------------------------------------
def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile (0 < p <= 100) of ``values``: the smallest value
    with at least p % of the values at or below it."""
    if not values:
        raise ValueError("no values to take a percentile of")
    if not 0 < p <= 100:
        raise ValueError(f"a percentile is above 0 and at most 100, not {p}")
    ordered = sorted(values)
    rank = math.ceil(p / 100 * len(ordered))
    return ordered[rank - 1]


def summary(seconds: Sequence[float]) -> dict[str, float | int]:
    """Count, p50, p95, p99 and max of durations, in milliseconds."""
    if not seconds:
        return {"count": 0}
    out: dict[str, float | int] = {"count": len(seconds)}
    for p in (50, 95, 99):
        out[f"p{p}_ms"] = round(1000 * percentile(seconds, p), 2)
    out["max_ms"] = round(1000 * max(seconds), 2)
    return out


# -- the phones ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Phone:
    """One enrolled phone: its worker's credentials, its token and the server it syncs with."""

    serial: str
    worker: str
    password: str
    token: str
    server: str  # base URL, e.g. http://127.0.0.1:8123

    def headers(self) -> dict[str, str]:
        basic = base64.b64encode(f"{self.worker}:{self.password}".encode()).decode()
        return {
            "Authorization": f"Basic {basic}",
            "X-Device-Token": self.token,
            "Accept": "application/json",
        }


@dataclass
class Tally:
    """What a run saw: sync and request durations, errors, and how late syncs started."""

    syncs: list[float] = field(default_factory=list)
    requests: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)
    late: list[float] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        every = [s for values in self.requests.values() for s in values]
        return {
            "syncs": summary(self.syncs),
            "requests": summary(every),
            "by_request": {what: summary(v) for what, v in sorted(self.requests.items())},
            "errors": len(self.errors),
            "first_errors": self.errors[:10],
            "start_lag": summary(self.late),
        }


class SyncFailed(Exception):
    """A request of a no-op sync answered what a no-op sync does not get."""


class PhoneClient:
    """One phone's requests over ``http`` (loopback only), timed into ``tally``."""

    def __init__(self, http: aiohttp.ClientSession, db: str, tally: Tally, phone: Phone) -> None:
        self.http, self.db, self.tally, self.phone = http, db, tally, phone

    async def _get(self, step: Step, since: str = "") -> Any:
        phone = self.phone
        url = URL(phone.server + step.path.replace("{since}", quote(since, safe="")), encoded=True)
        started = time.perf_counter()
        async with self.http.get(url, headers=phone.headers()) as response:
            body = await response.read()
            self.tally.requests[step.what].append(time.perf_counter() - started)
            if response.status != 200:
                raise SyncFailed(f"{step.what} as {phone.worker}: {response.status} {body[:200]!r}")
        return _json(body, step, phone)

    async def _pull(self, lane: list[Step]) -> None:
        since = ""
        for step in lane:
            answer = await self._get(step, since)
            if step.what.startswith("GET _local"):
                since = str(answer["last_seq"])
            elif step.what == "GET _changes" and answer.get("results"):
                raise SyncFailed(f"_changes as {self.phone.worker} was not empty: not a no-op")

    async def _push(self, lane: list[Step]) -> None:
        for step in lane:
            await self._get(step)

    async def sync(self) -> None:
        """One no-op sync; its duration goes to the tally, or its error."""
        opening, pull, push = noop_plan(self.db, self.phone.serial)
        started = time.perf_counter()
        try:
            await self._get(opening)
            await asyncio.gather(self._pull(pull), self._push(push))
        except (SyncFailed, aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
            self.tally.errors.append(f"{type(exc).__name__}: {exc}")
            return
        self.tally.syncs.append(time.perf_counter() - started)

    async def prepare(self) -> None:
        """The phone's earlier syncs, before the timed rounds: read its whole set (so the
        pull checkpoint holds the server's last sequence) and store both checkpoints, as
        PouchDB does after a first sync. Also proves the credentials and the token."""
        phone = self.phone
        since: Any = 0
        while True:
            step = Step("prepare", f"/{self.db}/_changes?style=all_docs&since={{since}}&limit=100")
            answer = await self._get(step, str(since))
            since = answer["last_seq"]
            if not answer["results"]:
                break
        for direction, last_seq in (("pull", since), ("push", 0)):
            path = f"/{self.db}/_local/{checkpoint_id(phone.serial, direction)}"
            body = {
                "session_id": f"bench-{phone.serial}",
                "history": [{"last_seq": last_seq, "session_id": f"bench-{phone.serial}"}],
                "replicator": "pouchdb",
                "version": 1,
                "last_seq": last_seq,
            }
            url = URL(phone.server + path, encoded=True)
            async with self.http.put(url, json=body, headers=phone.headers()) as response:
                if response.status != 201:
                    text = await response.text()
                    raise SyncFailed(f"checkpoint of {phone.serial}: {response.status} {text}")


def _json(body: bytes, step: Step, phone: Phone) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise SyncFailed(f"{step.what} as {phone.worker}: not JSON") from exc


def session(limit: int = PHONE_CONNECTIONS) -> aiohttp.ClientSession:
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit), timeout=timeout)


async def prepare_all(phones: Sequence[Phone], db: str, parallel: int = 8) -> None:
    """Every phone's checkpoints, ``parallel`` phones at a time (not timed)."""
    async with session(limit=0) as http:
        tally, gate = Tally(), asyncio.Semaphore(parallel)

        async def one(phone: Phone) -> None:
            async with gate:
                await PhoneClient(http, db, tally, phone).prepare()

        await asyncio.gather(*(one(p) for p in phones))


async def run_fleet(phones: Sequence[Phone], db: str, period: float, rounds: int) -> Tally:
    """Every phone syncs once a ``period`` for ``rounds`` periods; returns when the last
    sync has answered (or timed out: nothing waits longer than REQUEST_TIMEOUT).

    Each sync opens its own connections (as a phone that wakes once a period does:
    a mobile network keeps no connection that long) and closes them at its end."""
    tally = Tally()

    async def one(phone: Phone) -> None:
        async with session() as http:
            await PhoneClient(http, db, tally, phone).sync()

    began = time.perf_counter()
    running: set[asyncio.Task[None]] = set()
    for at, device in schedule(len(phones), period, rounds):
        delay = began + at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tally.late.append(max(0.0, time.perf_counter() - began - at))
        task = asyncio.create_task(one(phones[device]))
        running.add(task)
        task.add_done_callback(running.discard)
    if running:
        await asyncio.gather(*running)
    return tally
