"""The benchmark: real servers, a real PouchDB client, the figures of issues 2 and 10.

On each backend (``BENCH_BACKEND=sqlite|couchdb|both``, see :mod:`bench.backends`),
side by side in the same run, each database its own data dir and ``fieldsync serve``:

A. (:mod:`bench.worker`) a CHW whose set is 10,000 documents: full pull, no-op pull,
   incremental pull after 100 server-side edits, push of 1,000 new documents; and the
   peers of the full pull: PouchDB memory-to-memory, CouchDB's own unfiltered pull.
B. (:mod:`bench.scale`) a CHW whose set is 200 documents in databases of 10k, 100k
   and 1M documents, seeded straight into the store: pull of the 200.
C, D. the barcode corpus and the SMS gateway (the store does not matter to them).
E. (:mod:`bench.console`) the supervisor's Workers page and ``/api/v1/workers`` for
   2,000 workers on the embedded store (target: the page in under 300 ms).
F. (:mod:`bench.fleet`) 1,000 phones, each a no-op sync once a minute for 3 minutes,
   through three instances on one CouchDB and through one on the embedded store
   (goal: p99 per sync under 100 ms); server CPU per sync.

``BENCH_QUICK=1`` divides every size by 10. ``BENCH_KEEP=1`` keeps the temp dir and
the CouchDB databases. ``BENCH_PHASES=worker,scale,barcode,sms,console,fleet`` picks
phases (``BENCH_QUICK=1`` makes the fleet 100 phones for 30 s).
``BENCH_PROFILE=1`` records py-spy profiles of the servers (collapsed stacks) into
``bench/results/profile-*.txt`` (py-spy on PATH, or ``BENCH_PYSPY=/path/to/py-spy``);
``BENCH_PROFILE=idle`` samples idle threads too (time spent waiting on CouchDB).
``BENCH_CPU_APART=1`` gives each process of a timed full pull a CPU share of its own
(:mod:`bench.placement`: the server, the client and CouchDB as on separate machines).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import Any

from bench import backends as stores
from bench import couch_seed, fleet, placement, report
from bench.client import PouchClient
from bench.measure import RESULTS, Measurement, Sizes, fmt_count, log, ratio
from bench.scale import ScaleDb, phase_scale
from bench.seed import check_shape
from bench.server import Server
from bench.worker import PEER_TAG, TAG, WorkerResults, phase_worker

FULL_RATIO_TARGET = 2.0  # full pull ÷ PouchDB memory-to-memory (issue 2)
COUCH_VS_SQLITE_TARGET = 1.5  # CouchDB backend's full pull ÷ the SQLite backend's (issue 10)
COUCH_VS_OWN_TARGET = 1.0  # CouchDB backend's full pull ÷ CouchDB's own unfiltered pull
SCALE_RATIO_TARGET = 1.2  # 200-doc pull at 1M ÷ at 10k, on each backend


def main() -> int:
    sizes = Sizes(os.environ.get("BENCH_QUICK", "") not in ("", "0"))
    signal.signal(signal.SIGTERM, _raise_exit)
    began = time.perf_counter()
    log(f"fieldsync bench{' (BENCH_QUICK: sizes ÷ 10)' if sizes.quick else ''}")
    phases = set(
        os.environ.get("BENCH_PHASES", "worker,scale,barcode,sms,console,fleet").split(",")
    )
    load = os.getloadavg()[0]
    if load > 0.5:
        log(f"  note: load average {load:.1f} before starting; other work skews the timings")
    keep = os.environ.get("BENCH_KEEP", "") not in ("", "0")
    servers: list[Server] = []
    with ExitStack() as stack:
        backends, couch = stack.enter_context(stores.opened())
        apart = placement.open_apart()
        stack.callback(placement.close_apart)
        stack.callback(_stop_all, servers)  # before the CouchDB they use goes
        log(f"  backends: {', '.join(b.name for b in backends)}")
        if apart is not None:
            log(f"  placement: {apart.description}")
        check_shape()
        log("  fast seeding writes the same rows as SqliteStore.write: ok")
        if couch is not None:
            log(f"  CouchDB: {couch.description}; databases {couch.base}*")
            asyncio.run(couch_seed.check_shape(couch.url, couch.prefix("check")))
            log("  fast seeding writes the same documents as CouchStore.write: ok")
            if not keep:
                stack.callback(_delete_couch_dbs, couch, sizes)
        root = Path(tempfile.mkdtemp(prefix="fieldsync-bench-"))
        if not keep:
            stack.callback(shutil.rmtree, root, ignore_errors=True)
        client = PouchClient()
        stack.callback(client.close)

        worker = None
        if "worker" in phases:
            worker = phase_worker(sizes, root, client, backends, couch, servers)
        scale: list[ScaleDb] = []
        if "scale" in phases:
            scale = phase_scale(sizes, root, client, backends, servers)
        fleet_results = None
        if "fleet" in phases:
            fleet_results = fleet.phase_fleet(sizes.quick, root, backends, servers)
        if keep:
            log(f"\n  kept {root}" + (f" and the databases {couch.base}*" if couch else ""))

    by_backend: dict[str, list[Measurement]] = {b.name: [] for b in backends}
    seeding: dict[str, dict[str, Any]] = {}
    if worker is not None:
        for name, measured in worker.measurements.items():
            by_backend[name] += measured
        for name, seeded in worker.seeding.items():
            seeding[f"worker db {fmt_count(2 * sizes.worker_set)} {name}"] = seeded
    for db in scale:
        by_backend[db.name].append(db.pull)
        seeding[f"scale db {db.label} {db.name}"] = db.seeding
    peers = worker.peers if worker is not None else []
    ratios = targets(worker, scale, sizes)
    everything = [m for ms in by_backend.values() for m in ms] + peers
    log("\n" + report.table(everything))
    log("\n" + report.side_by_side(by_backend, peers))
    if couch is not None:
        log(f"  (CouchDB: {couch.description})")
    log("\n" + report.targets(ratios))
    log("\n" + report.seeding(seeding))
    domains = domain_benches(phases, sizes.quick)
    elapsed = time.perf_counter() - began
    log(f"\nwhole run {elapsed:.0f} s")
    out = write_results(
        {
            "environment": report.environment(sizes, couch.description if couch else None, load),
            "measurements": {
                name: {m.key: m.to_json() for m in ms} for name, ms in by_backend.items()
            },
            "peers": {m.key: m.to_json() for m in peers},
            "ratios": ratios,
            "seeding": seeding,
            **domains,
            **({"fleet": fleet_results} if fleet_results is not None else {}),
            "elapsed_s": round(elapsed, 1),
        }
    )
    log(f"results: {out}")
    return 0


def targets(
    worker: WorkerResults | None, scale: list[ScaleDb], sizes: Sizes
) -> dict[str, dict[str, Any]]:
    """The ratios of issues 2 and 10, each with its target (None: for information)."""
    out: dict[str, dict[str, Any]] = {}
    if worker is not None:
        full = {name: ms[0] for name, ms in worker.measurements.items()}
        copy = worker.peers[0]
        own = worker.peers[1] if len(worker.peers) > 1 else None
        for name, m in full.items():
            target = FULL_RATIO_TARGET if name == "sqlite" else None
            out[f"{name}_full_vs_memory"] = ratio(
                f"{name}: full pull ÷ PouchDB memory-to-memory", m, copy, target
            )
        if "couchdb" in full and "sqlite" in full:
            out["couchdb_full_vs_sqlite"] = ratio(
                "couchdb: full pull ÷ sqlite's full pull",
                full["couchdb"],
                full["sqlite"],
                COUCH_VS_SQLITE_TARGET,
            )
        if own is not None:
            for name, m in full.items():
                target = COUCH_VS_OWN_TARGET if name == "couchdb" else None
                out[f"{name}_full_vs_couchdb_own"] = ratio(
                    f"{name}: full pull ÷ CouchDB's own unfiltered pull", m, own, target
                )
    big, little = fmt_count(sizes.totals[-1]), fmt_count(sizes.totals[0])
    for name in dict.fromkeys(db.name for db in scale):
        pulls = [db.pull for db in scale if db.name == name]
        out[f"{name}_small_pull_largest_vs_smallest"] = ratio(
            f"{name}: {sizes.small_set}-doc pull at {big} ÷ at {little}",
            pulls[-1],
            pulls[0],
            SCALE_RATIO_TARGET,
        )
    return out


def write_results(results: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "latest.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    return out


def domain_benches(phases: set[str], quick: bool) -> dict[str, Any]:
    """The barcode decoding corpus, the SMS gateway throughput and the Workers page
    (issues 5, 4 and 13)."""
    results: dict[str, Any] = {}
    if "barcode" in phases:
        from barcode import bench as barcode_bench

        log("\n[C] barcode photos: decode rate and time")
        results["barcode"] = barcode_bench.run(quick)
    if "sms" in phases:
        from bench import sms as sms_bench

        log("\n[D] coded SMS through the real gateway endpoint")
        results["sms"] = sms_bench.run(quick)
    if "console" in phases:
        from bench import console

        log("\n[E] the supervisor console: the Workers page for 2,000 workers")
        results["console"] = console.run(quick)
    return results


def _delete_couch_dbs(couch: stores.Couch, sizes: Sizes) -> None:
    tags = [TAG, PEER_TAG, "check", fleet.TAG] + [f"s{fmt_count(t).lower()}" for t in sizes.totals]
    gone = [name for tag in tags for name in couch.delete(tag)]
    log(f"  deleted {len(gone)} CouchDB databases of the bench ({couch.base}*)")


def _stop_all(servers: list[Server]) -> None:
    """Stop every server this run started (each by its own PID), even after an error."""
    for server in servers:
        server.stop()


def _raise_exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def run() -> None:
    sys.exit(main())
