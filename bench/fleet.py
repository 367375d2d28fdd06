"""``make bench``'s fleet phase: 1,000 phones, each a no-op sync once a minute (issue 11).

On each backend of the run (:mod:`bench.backends`):

- **couchdb**: three ``fieldsync serve`` instances on one CouchDB, the phones spread over
  them (phone *n* syncs through instance *n* mod 3);
- **sqlite**: one instance on the embedded store.

Seeding, before any timed server starts, on one data dir: the place tree (a country,
districts, facilities, one area per CHW), :data:`DOCS_PER_AREA` health records per area
(the store's fast path, :mod:`bench.seed` / :mod:`bench.couch_seed`), the CHWs (one
area each) and for each a phone added, assigned, given an enrolment code and enrolled
through the device registry's own functions, which hand back its ``X-Device-Token``.
Each instance then starts on its own copy of that data dir (as several instances
start from one copied data dir in the multi-instance tests); on CouchDB each adopts
the users and places, and the documents and data keys are already there.

Then each phone reads its set once and stores its checkpoints (not timed: the state a
phone is in after its first sync; it also fills the instance's memory of verified
passwords, as a running server has), the idle CPU of every process is measured for a
few seconds, and the load generator (:mod:`bench.fleet_load`) runs: every phone does a
no-op sync once a period, start times spread over the period, for the rounds, then it
stops. It reports p50/p95/p99 per sync and per request, errors (there must be none),
how late syncs started (the load generator's own lag), and server CPU seconds per
sync from ``/proc`` of the fieldsync processes and of CouchDB (found by its port when
it runs on this machine; a shared CouchDB's figure includes its other clients: its
idle rate is measured and taken away in the "net" figure).

Then the same phones go live (:mod:`bench.fleet_live`): each holds a long poll, and
what a write into one area costs is measured against a quiet window of the same length.

Sizes: 1,000 phones, a 60 s period, 3 rounds; ``BENCH_QUICK=1``: 100 phones, a 10 s
period, 3 rounds; live windows of 10 s.
``FLEET_DEVICES``, ``FLEET_PERIOD``, ``FLEET_ROUNDS`` and ``FLEET_LIVE_WINDOW`` override
them.
``python -m bench.fleet`` runs this phase alone (``BENCH_BACKEND``, ``BENCH_COUCHDB_URL``
and ``FIELDSYNC_COUCHDB_PREFIX`` as for ``make bench``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import shutil
import signal
import tempfile
import time
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from bench import backends as stores
from bench import cpu, fleet_live
from bench.backends import Backend
from bench.fleet_load import Phone, Tally, prepare_all, run_fleet
from bench.measure import PASSWORD, RESULTS, log
from bench.seed import record
from bench.server import DB, Server, imei
from bench.unit_costs import idle_rates
from device_registry import embedded_sql as devices
from device_registry import inventory
from device_registry import schema as device_schema
from sync import accounts
from sync.cli import configure_logging
from sync.scopes import UNLIMITED
from sync.store.schema import connect, db_path

TAG = "fleet"
GOAL_P99_S = 0.100
DOCS_PER_AREA = 20
COUCH_INSTANCES = 3
ACTOR = "bench"


@dataclass(frozen=True)
class FleetSize:
    devices: int
    period: float
    rounds: int
    live_window: float  # seconds of each live window (bench.fleet_live)

    @property
    def label(self) -> str:
        return (
            f"{self.devices:,} phones, a no-op sync each every {self.period:g} s "
            f"for {self.rounds} rounds"
        )


def _setting(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if number <= 0:
        raise SystemExit(f"{name} must be a number above 0, not {value!r}")
    return number


def fleet_size(quick: bool) -> FleetSize:
    devices, period = (100, 10.0) if quick else (1000, 60.0)
    window = _setting("FLEET_LIVE_WINDOW", fleet_live.WINDOW)
    heartbeat = fleet_live.HEARTBEAT_MS / 1000
    if window % heartbeat or 2 * window + fleet_live.SETTLE + 5 >= fleet_live.LONGPOLL_SECONDS:
        raise SystemExit(
            f"FLEET_LIVE_WINDOW must be a whole number of heartbeats ({heartbeat:g} s), so "
            f"that both windows hold as many, and leave both windows before the long polls "
            f"end ({fleet_live.LONGPOLL_SECONDS:g} s)"
        )
    return FleetSize(
        int(_setting("FLEET_DEVICES", devices)),
        _setting("FLEET_PERIOD", period),
        int(_setting("FLEET_ROUNDS", 3)),
        window,
    )


# -- seeding ------------------------------------------------------------------------------
def place_tree(devices: int) -> tuple[list[tuple[str, str | None]], list[str]]:
    """``(id, parent)`` pairs, parents first, and the CHW areas: a country, a district per
    10 facilities, a facility per 10 areas, an area per CHW (as a health system's
    organisation units are laid out)."""
    areas = [f"area-{n:04d}" for n in range(devices)]
    facilities = [f"facility-{n:03d}" for n in range((devices + 9) // 10)]
    districts = [f"district-{n:02d}" for n in range((len(facilities) + 9) // 10)]
    tree: list[tuple[str, str | None]] = [("country", None)]
    tree += [(d, "country") for d in districts]
    tree += [(f, districts[i // 10]) for i, f in enumerate(facilities)]
    tree += [(a, facilities[i // 10]) for i, a in enumerate(areas)]
    return tree, areas


def seed(backend: Backend, data_dir: Path, log_path: Path, devices: int) -> list[Phone]:
    """Places, documents, CHWs and enrolled phones on ``data_dir`` (no server left running).
    The phones' ``server`` is filled in when the instances are known."""
    server = Server(data_dir, log_path, backend.settings(TAG))
    server.start()  # makes the data dir, the database and (on CouchDB) its databases
    server.stop()
    tree, areas = place_tree(devices)
    started = time.perf_counter()
    with backend.seeder(data_dir, TAG) as seeder:
        seeder.add_places(tree)
        rng = random.Random(devices)
        docs = (record(rng, areas[n % len(areas)], n) for n in range(DOCS_PER_AREA * len(areas)))
        count, _ = seeder.seed(docs)
        seeder.finish()
    phones = people_and_phones(data_dir, areas)
    log(
        f"  [{backend.name}] seeded {len(tree):,} places, {count:,} documents, "
        f"{len(phones):,} CHWs with enrolled phones in {time.perf_counter() - started:.1f} s"
    )
    return phones


def people_and_phones(data_dir: Path, areas: list[str]) -> list[Phone]:
    """A CHW per area and her phone, enrolled: added, assigned, a code issued and exchanged
    for a device token by the device registry's own functions, in one transaction."""
    configure_logging("warning", "console")  # not a line per token the registry revokes
    hashed = accounts.hash_password(PASSWORD)  # once: scrypt for each of 1,000 takes minutes
    now = dt.datetime.now(dt.UTC).isoformat()
    phones = []
    with closing(connect(db_path(data_dir))) as conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO users(name, role, password_hash, places, read_places, created, updated) "
            "VALUES(?,?,?,?,?,?,?)",
            [
                (_worker(n), "chw", hashed, json.dumps([a]), "[]", now, now)
                for n, a in enumerate(areas)
            ],
        )
        device_schema.ensure(conn)
        for n in range(len(areas)):
            serial, worker = f"FLEET-{n:05d}", _worker(n)
            new = inventory.validate_new(serial, imei(serial), model="Tecno Spark 8")
            devices.add(conn, new, ACTOR, UNLIMITED)
            devices.assign(conn, serial, worker, ACTOR, UNLIMITED)
            code = devices.issue_code(conn, serial, ACTOR, UNLIMITED).code
            token = devices.enrol(conn, code, serial, worker).token
            phones.append(Phone(serial, worker, PASSWORD, token, ""))
        conn.execute("COMMIT")
    return phones


def _worker(n: int) -> str:
    return f"chw{n:04d}"


# -- one backend --------------------------------------------------------------------------
def start_instances(
    backend: Backend, data_dir: Path, root: Path, count: int, servers: list[Server]
) -> list[Server]:
    """``count`` servers, each on its own copy of ``data_dir`` (the one dir when alone)."""
    started = []
    for number in range(1, count + 1):
        own = data_dir if count == 1 else root / f"fleet-{backend.name}-{number}"
        if own != data_dir:
            shutil.copytree(data_dir, own)
        log_path = root / f"fleet-{backend.name}-{number}.log"
        # Every phone of the bench comes from 127.0.0.1 (in the field: many addresses), and
        # each live phone holds a connection: the per-address cap is the fleet's size here.
        settings = {
            **backend.settings(TAG),
            "FIELDSYNC_MAX_CONNECTIONS_PER_ADDRESS": "5000",
            "FIELDSYNC_METRICS_TOKEN": fleet_live.METRICS_TOKEN,  # how many long polls wait
        }
        server = Server(own, log_path, settings)
        servers.append(server)
        server.start()
        started.append(server)
    return started


def run_backend(
    backend: Backend, size: FleetSize, root: Path, servers: list[Server]
) -> dict[str, Any]:
    """Seed, start the instances, prepare the phones, run the fleet, stop; the figures."""
    backend.prepare(TAG)
    data_dir = root / f"fleet-{backend.name}"
    seeded = seed(backend, data_dir, root / f"fleet-{backend.name}-seed.log", size.devices)
    count = COUCH_INSTANCES if backend.name == "couchdb" else 1
    instances = start_instances(backend, data_dir, root, count, servers)
    urls = ", ".join(f"pid {s.pid} at {s.url}" for s in instances)
    log(f"  [{backend.name}] {count} instance{'s' if count > 1 else ''}: {urls}")
    phones = [
        Phone(p.serial, p.worker, p.password, p.token, instances[n % count].url)
        for n, p in enumerate(seeded)
    ]
    asyncio.run(prepare_all(phones, DB))
    pids: dict[str, int | None] = {f"fieldsync-{n + 1}": s.pid for n, s in enumerate(instances)}
    pids |= backend.pids()
    idle = idle_rates(pids)
    pids["load generator"] = os.getpid()
    before = {name: cpu.seconds(pid) for name, pid in pids.items()}
    asked = couch_requests(backend)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    tally = asyncio.run(run_fleet(phones, DB, size.period, size.rounds))
    wall = time.perf_counter() - started
    spent = {name: _spent(before[name], cpu.seconds(pid)) for name, pid in pids.items()}
    asked = _spent(asked, couch_requests(backend))
    servers_and_store = {k: v for k, v in pids.items() if k != "load generator"}
    first_area = place_tree(size.devices)[1][0]  # phones[0]'s worker's
    requests = lambda: couch_requests(backend)  # noqa: E731
    bases = [s.url for s in instances]
    live = asyncio.run(
        fleet_live.live_costs(
            phones, DB, first_area, size.live_window, servers_and_store, requests, bases
        )
    )
    for server in instances:
        server.stop()
    out = figures(backend.name, count, tally, wall, spent, idle)
    out["live"] = live
    out["load_average"] = {"before": round(load, 1), "after": round(os.getloadavg()[0], 1)}
    if asked is not None:
        out["couchdb_requests_per_sync"] = round(asked / max(1, out["syncs"].get("count", 0)), 1)
    return out


def couch_requests(backend: Backend) -> float | None:
    """CouchDB's count of HTTP requests it has answered (its node's statistics), or None
    on the embedded store. Counts every client of that CouchDB, not only ours."""
    if not isinstance(backend, stores.CouchBackend):
        return None
    status, stats = backend.couch.request("GET", "/_node/_local/_stats/couchdb/httpd/requests")
    return float(stats["value"]) if status == 200 and isinstance(stats, dict) else None


def _spent(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def figures(
    name: str,
    instances: int,
    tally: Tally,
    wall: float,
    spent: dict[str, float | None],
    idle: dict[str, float],
) -> dict[str, Any]:
    """The run's report, with CPU per sync: raw, and net of each process's idle rate."""
    out = tally.report()
    syncs = max(1, len(tally.syncs) + len(tally.errors))
    fieldsync = [v for k, v in spent.items() if k.startswith("fieldsync")]
    cpu_s: dict[str, Any] = {}
    if fieldsync and None not in fieldsync:
        total = sum(v for v in fieldsync if v is not None)
        idle_total = sum(v for k, v in idle.items() if k.startswith("fieldsync"))
        cpu_s["fieldsync"] = _per_sync(total, idle_total * wall, syncs)
    if "couchdb" in spent:
        couch = spent["couchdb"]
        cpu_s["couchdb"] = (
            None if couch is None else _per_sync(couch, idle.get("couchdb", 0.0) * wall, syncs)
        )
    client = spent.get("load generator")
    if client is not None:  # the bench's own process: its idle rate is not measured
        cpu_s["load generator"] = {"raw_ms": round(1000 * client / syncs, 3), "raw_s": client}
    out |= {
        "backend": name,
        "instances": instances,
        "wall_s": round(wall, 1),
        "sync_rate_per_s": round(syncs / wall, 2),
        "cpu_per_sync": cpu_s,
        "idle_cpu_per_s": {k: round(v, 4) for k, v in idle.items()},
        "goal_p99_ms": GOAL_P99_S * 1000,
        "goal_held": bool(tally.syncs)
        and out["errors"] == 0
        and out["syncs"]["p99_ms"] < GOAL_P99_S * 1000,
    }
    return out


def _per_sync(raw: float, idle: float, syncs: int) -> dict[str, float]:
    return {
        "raw_ms": round(1000 * raw / syncs, 3),
        "net_ms": round(1000 * max(0.0, raw - idle) / syncs, 3),
        "raw_s": round(raw, 2),
    }


def show(result: dict[str, Any]) -> None:
    name = result["backend"]
    s, r = result["syncs"], result["requests"]
    log(
        f"  [{name}] {result['instances']} instance(s), {s.get('count', 0):,} syncs in "
        f"{result['wall_s']:.0f} s ({result['sync_rate_per_s']:.1f}/s), errors {result['errors']}"
    )
    load = result["load_average"]
    log(
        f"  [{name}] load average {load['before']:.1f} before, {load['after']:.1f} after "
        f"on {os.cpu_count()} CPUs (other work on the machine lengthens every figure)"
    )
    if s.get("count"):
        log(
            f"  [{name}] per sync: p50 {s['p50_ms']:.1f} ms, p95 {s['p95_ms']:.1f} ms, "
            f"p99 {s['p99_ms']:.1f} ms, max {s['max_ms']:.1f} ms"
        )
        log(
            f"  [{name}] per request ({r['count']:,}): p50 {r['p50_ms']:.1f} ms, "
            f"p95 {r['p95_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms"
        )
        for what, row in result["by_request"].items():
            log(
                f"  [{name}]   {what}: p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms "
                f"({row['count']:,})"
            )
    for error in result["first_errors"]:
        log(f"  [{name}] error: {error}")
    lag = result["start_lag"]
    if lag.get("count"):
        late = f"p99 {lag['p99_ms']:.1f} ms, max {lag['max_ms']:.1f} ms"
        log(f"  [{name}] syncs started late (the load generator's own lag): {late}")
    for process, row in result["cpu_per_sync"].items():
        if row is None:
            log(f"  [{name}] CPU per sync, {process}: unknown (its process is not on this machine)")
        else:
            net = f"net of idle {row['net_ms']:.2f} ms; " if "net_ms" in row else ""
            log(
                f"  [{name}] CPU per sync, {process}: {row['raw_ms']:.2f} ms "
                f"({net}{row['raw_s']:.1f} CPU s in all)"
            )
    if "couchdb_requests_per_sync" in result:
        asked = result["couchdb_requests_per_sync"]
        log(f"  [{name}] CouchDB requests per sync (all its clients): {asked:.1f}")
    fleet_live.show(name, result["live"], log)
    held = "held" if result["goal_held"] else "NOT held"
    log(f"  [{name}] goal: p99 per sync < {result['goal_p99_ms']:.0f} ms, no error: {held}")


# -- the phase ----------------------------------------------------------------------------
def phase_fleet(
    quick: bool, root: Path, backends: list[Backend], servers: list[Server]
) -> dict[str, Any]:
    """The fleet on each backend of the run; the results by backend name."""
    size = fleet_size(quick)
    log(f"\n[F] the fleet: {size.label}")
    results: dict[str, Any] = {"size": size.__dict__}
    for backend in backends:
        result = run_backend(backend, size, root, servers)
        show(result)
        results[backend.name] = result
    return results


def main() -> int:
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    signal.signal(signal.SIGTERM, _raise_exit)  # stop the servers and delete the databases
    servers: list[Server] = []
    with ExitStack() as stack:
        backends, couch = stack.enter_context(stores.opened())
        stack.callback(_stop_all, servers)
        if couch is not None:
            log(f"  CouchDB: {couch.description}; databases {couch.prefix(TAG)}*")
            stack.callback(lambda: log(f"  deleted {len(couch.delete(TAG))} CouchDB databases"))
        root = Path(tempfile.mkdtemp(prefix="fieldsync-fleet-"))
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        results = phase_fleet(quick, root, backends, servers)
        results["load_average"] = os.getloadavg()
        results["cpus"] = os.cpu_count()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "fleet.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    log(f"\nresults: {out}")
    return 0


def _raise_exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _stop_all(servers: list[Server]) -> None:
    """Stop every server this run started, each by its own PID."""
    for server in servers:
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
