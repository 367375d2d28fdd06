"""The benchmark: a real server, a real PouchDB client, the figures of issue 2 point 8.

Phases (each on its own fresh data dir and server process):

A. A CHW whose set is 10,000 documents (the database holds as many more of other
   places): full pull, memory-to-memory replication of the same documents
   (baseline), no-op pull, incremental pull after 100 server-side edits, push of
   1,000 new documents.
B. A CHW whose set is 200 documents, in databases of 10k, 100k and 1M documents
   (the rest belong to other places, 200 per place, interleaved over the whole
   sequence), seeded straight into the store: pull of the 200. The three servers
   run side by side and the timed pulls alternate between them, round by round.

``BENCH_QUICK=1`` divides every size by 10. ``BENCH_KEEP=1`` keeps the temp dir.
``BENCH_PHASES=worker`` or ``=scale`` runs one phase only (default both).
``BENCH_PROFILE=1`` records py-spy profiles of the server (collapsed stacks) into
``bench/results/profile-*.txt`` (py-spy on PATH, or ``BENCH_PYSPY=/path/to/py-spy``).
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from bench.client import PouchClient
from bench.seed import Seeded, Seeder, check_shape, record
from bench.server import Server

PASSWORD = "bench-password-7"
WARMUP_PULLS = 5
RESULTS = Path(__file__).with_name("results")
FULL_RATIO_TARGET = 2.0
SCALE_RATIO_TARGET = 1.2


class Sizes:
    def __init__(self, quick: bool) -> None:
        div = 10 if quick else 1
        self.quick = quick
        self.worker_set = 10_000 // div
        self.changed = 100 // div
        self.pushed = 1_000 // div
        self.small_set = 200 // div
        self.totals = [10_000 // div, 100_000 // div, 1_000_000 // div]
        self.runs = 5  # full pulls, copies, incremental pulls, pushes
        self.short_runs = 15  # no-op pulls: ~5 ms each, so more samples against noise
        self.scale_rounds = 50  # small pulls, one per database each round: ~50 ms each


def log(message: str) -> None:
    print(message, flush=True)


def fmt_count(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


# -- measurements -----------------------------------------------------------------------
class Measurement:
    def __init__(self, key: str, label: str, docs: int) -> None:
        self.key, self.label, self.docs = key, label, docs
        self.runs: list[dict[str, Any]] = []

    def add(self, run: dict[str, Any]) -> None:
        self.runs.append(run)
        docs = f", {run['docs_written']} docs" if run.get("docs_written") is not None else ""
        log(f"    {self.label}: run {len(self.runs)}: {run['ms'] / 1000:.3f} s{docs}")

    @property
    def seconds(self) -> float:
        return float(statistics.median(r["ms"] for r in self.runs)) / 1000

    @property
    def rate(self) -> float | None:
        return self.docs / self.seconds if self.docs else None

    def median_run(self) -> dict[str, Any]:
        ordered = sorted(self.runs, key=lambda r: r["ms"])
        return ordered[len(ordered) // 2]

    def to_json(self) -> dict[str, Any]:
        middle = self.median_run()
        return {
            "label": self.label,
            "docs": self.docs,
            "seconds": round(self.seconds, 4),
            "docs_per_s": None if self.rate is None else round(self.rate, 1),
            "runs_s": [round(r["ms"] / 1000, 4) for r in self.runs],
            "requests": middle.get("requests"),
            "gzipped_responses": middle.get("gzipped"),
            "bytes_in": middle.get("bytes_in"),
            "bytes_out": middle.get("bytes_out"),
            "by_endpoint": middle.get("by_endpoint"),
        }


def expect(run: dict[str, Any], written: int, what: str) -> dict[str, Any]:
    if run["docs_written"] != written:
        raise AssertionError(f"{what}: {run['docs_written']} docs written, expected {written}")
    return run


def same_doc(pulled: dict[str, Any], seeded: Seeded) -> None:
    """The client holds the seeded document, unchanged."""
    body = {k: v for k, v in pulled.items() if k not in ("_rev", "_revisions")}
    if body != seeded.doc or pulled["_rev"] != seeded.rev:
        raise AssertionError(f"pulled {seeded.id} differs from what was seeded")


# -- optional profiles of the server (BENCH_PROFILE=1, py-spy on PATH or BENCH_PYSPY) -------
@contextmanager
def profiled(server: Server, key: str) -> Iterator[None]:
    """Sample the server with py-spy while the block runs; collapsed stacks to results/."""
    if os.environ.get("BENCH_PROFILE", "") in ("", "0") or server.pid is None:
        yield
        return
    spy = os.environ.get("BENCH_PYSPY") or shutil.which("py-spy")
    if spy is None:
        raise RuntimeError("BENCH_PROFILE needs py-spy on PATH (or BENCH_PYSPY=/path/to/py-spy)")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"profile-{key}.txt"
    command = [spy, "record", "--pid", str(server.pid), "--rate", "250", "--threads"]
    command += ["--format", "raw", "--output", str(out), "--nonblocking"]
    recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # let it attach
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)
        recorder.wait(30)
        log(f"    profile: {out}")


# -- phase A: the 10,000-document worker ----------------------------------------------------
def phase_worker(
    sizes: Sizes, root: Path, client: PouchClient, servers: list[Server]
) -> tuple[list[Measurement], dict[str, Any]]:
    data_dir = root / "worker"
    server = Server(data_dir, root / "server-worker.log")
    servers.append(server)
    server.start()
    log(f"  server pid {server.pid} at {server.url} (data dir {data_dir})")
    server.cli("place", "add", "ke")
    server.cli("place", "add", "d000", "--parent", "ke")
    server.cli("place", "add", "area-big", "--parent", "d000")
    others = [f"a{n:05d}" for n in range(sizes.worker_set // sizes.small_set)]
    started = time.perf_counter()
    with Seeder(data_dir) as seeder:
        seeder.add_places([(p, "d000") for p in others])
        rng = random.Random(1)

        def docs() -> Iterator[dict[str, Any]]:
            for i in range(2 * sizes.worker_set):
                place = "area-big" if i % 2 == 0 else others[(i // 2) % len(others)]
                yield record(rng, place, i)

        count, worker_docs = seeder.seed(docs(), keep=frozenset({"area-big"}))
    seed_s = time.perf_counter() - started
    log(f"  seeded {count} docs ({len(worker_docs)} in the worker's set) in {seed_s:.1f} s")
    server.cli("user", "add", "chw_big", "--role", "chw", "--place", "area-big", password=PASSWORD)
    server.cli("user", "add", "bench_admin", "--role", "admin", password=PASSWORD)
    remote = server.remote("chw_big", PASSWORD, enrol(server, "chw_big", "BENCH-A"))
    n = sizes.worker_set
    full = Measurement("full_pull", f"full pull, {fmt_count(n)}-doc worker set", n)
    copy = Measurement("memory_to_memory", f"PouchDB memory-to-memory, same {fmt_count(n)}", n)
    noop = Measurement("noop_pull", "no-op pull (same local db)", 0)
    incr = Measurement(
        "incremental_pull", f"incremental pull, {sizes.changed} changed", sizes.changed
    )
    push = Measurement("push", f"push of {fmt_count(sizes.pushed)} new docs", sizes.pushed)

    with profiled(server, "full_pull"):  # the server is idle during the copies
        for i in range(sizes.runs):
            full.add(expect(client.call("pull", remote=remote, local=f"full-{i}"), n, full.label))
            copy.add(
                expect(client.call("copy", source=f"full-{i}", target=f"copy-{i}"), n, copy.label)
            )
            client.call("destroy", local=f"copy-{i}")
    sample = worker_docs[len(worker_docs) // 2]
    same_doc(client.call("get", local=f"full-{sizes.runs - 1}", doc_id=sample.id), sample)
    for i in range(sizes.runs - 1):
        client.call("destroy", local=f"full-{i}")
    device = f"full-{sizes.runs - 1}"

    for _ in range(sizes.short_runs):
        noop.add(expect(client.call("pull", remote=remote, local=device), 0, noop.label))

    by_id = {d.id: d for d in worker_docs}
    for r in range(sizes.runs):
        changed = worker_docs[r * sizes.changed : (r + 1) * sizes.changed]
        edit_server_side(server, changed, by_id, r)
        incr.add(
            expect(client.call("pull", remote=remote, local=device), sizes.changed, incr.label)
        )
    edited = by_id[worker_docs[0].id]
    same_doc(client.call("get", local=device, doc_id=edited.id), edited)

    for i in range(sizes.runs):
        name = f"push-{i}"
        client.call("create", local=name, place="area-big", prefix=f"dev{i}", count=sizes.pushed)
        push.add(expect(client.call("push", remote=remote, local=name), sizes.pushed, push.label))
        client.call("destroy", local=name)
    status, answer = server.request(
        "GET", "/health/", ("chw_big", PASSWORD), None, remote["headers"]
    )
    expected = n + sizes.runs * sizes.pushed
    if status != 200 or answer.get("doc_count") != expected:
        raise AssertionError(f"worker's db info after pushes: {status} {answer}, want {expected}")
    client.call("destroy", local=device)
    server.stop()
    return [full, noop, incr, push, copy], {
        "docs": count,
        "seconds": round(seed_s, 3),
        "worker_set": len(worker_docs),
    }


def enrol(server: Server, worker: str, serial: str) -> dict[str, str]:
    headers = server.enrol_device(worker, PASSWORD, serial)
    if headers:
        log(f"  phone {serial} enrolled for {worker}; the client sends {', '.join(headers)}")
    return headers


def edit_server_side(
    server: Server, changed: list[Seeded], by_id: dict[str, Seeded], round_: int
) -> None:
    """Edit documents over HTTP as an admin (a supervisor's corrections, say)."""
    docs = []
    for seeded in changed:
        doc = json.loads(json.dumps(seeded.doc))
        doc["_rev"] = seeded.rev
        doc["fields"]["visit_number"] += 1
        doc["fields"]["notes"] = f"Corrected by supervisor (round {round_})."
        docs.append(doc)
    status, answer = server.request(
        "POST", "/health/_bulk_docs", ("bench_admin", PASSWORD), {"docs": docs}
    )
    if status != 201 or any("error" in row for row in answer):
        raise AssertionError(f"server-side edits failed: {status} {answer[:3]}")
    for doc, row in zip(docs, answer, strict=True):
        body = {k: v for k, v in doc.items() if k != "_rev"}
        by_id[row["id"]] = Seeded(row["id"], row["rev"], doc["place"], body)


# -- phase B: a 200-document worker in ever larger databases ------------------------------
class ScaleDb:
    """One database of phase B: its own data dir and server, seeded, with an enrolled phone."""

    def __init__(self, sizes: Sizes, total: int, root: Path, servers: list[Server]) -> None:
        self.label = fmt_count(total)
        self.data_dir = root / f"scale-{self.label}"
        self.server = Server(self.data_dir, root / f"server-scale-{self.label}.log")
        servers.append(self.server)
        self.server.start()
        log(f"  server pid {self.server.pid} at {self.server.url} (data dir {self.data_dir})")
        self.server.cli("place", "add", "ke")
        areas = [f"a{n:05d}" for n in range(total // sizes.small_set)]
        districts = [f"d{n:03d}" for n in range((len(areas) + 49) // 50)]
        started = time.perf_counter()
        with Seeder(self.data_dir) as seeder:
            seeder.add_places(
                [(d, "ke") for d in districts]
                + [(a, districts[i // 50]) for i, a in enumerate(areas)]
            )
            places_s = time.perf_counter() - started
            rng = random.Random(total)
            docs = (record(rng, areas[i % len(areas)], i) for i in range(total))
            count, self.worker_docs = seeder.seed(docs, keep=frozenset({areas[0]}))
        seed_s = time.perf_counter() - started
        # Let the kernel write back the seed's dirty pages first: otherwise the pulls'
        # checkpoint commits (fsync) queue behind gigabytes of the bench's own writes.
        os.sync()
        size = self.data_dir / "fieldsync.sqlite3"
        log(
            f"  seeded {count} docs in {len(areas)} places in {seed_s:.1f} s "
            f"({count / seed_s:,.0f} docs/s; places and keys {places_s:.1f} s; "
            f"file {size.stat().st_size / 2**20:,.0f} MiB)"
        )
        self.server.cli(
            "user", "add", "chw_small", "--role", "chw", "--place", areas[0], password=PASSWORD
        )
        headers = enrol(self.server, "chw_small", f"BENCH-{self.label}")
        self.remote = self.server.remote("chw_small", PASSWORD, headers)
        self.pull = Measurement(
            f"small_pull_{self.label}",
            f"pull of {sizes.small_set}-doc set, db of {self.label}",
            sizes.small_set,
        )
        self.seeding = {
            "docs": count,
            "places": len(areas),
            "seconds": round(seed_s, 3),
            "docs_per_s": round(count / seed_s),
            "file_mib": round(size.stat().st_size / 2**20),
        }

    def warm(self, client: PouchClient) -> None:
        """A deployed server is long-running: a few untimed pulls, the same for every size."""
        for i in range(WARMUP_PULLS):
            client.call("pull", remote=self.remote, local=f"warm-{self.label}-{i}")
            client.call("destroy", local=f"warm-{self.label}-{i}")

    def pull_once(self, client: PouchClient, i: int) -> None:
        name = f"small-{self.label}-{i}"
        run = client.call("pull", remote=self.remote, local=name)
        self.pull.add(expect(run, len(self.worker_docs), self.pull.label))
        if i == 0:
            sample = self.worker_docs[-1]
            same_doc(client.call("get", local=name, doc_id=sample.id), sample)
        client.call("destroy", local=name)


def phase_scale(
    sizes: Sizes, root: Path, client: PouchClient, servers: list[Server]
) -> list[ScaleDb]:
    """Seed every size first, then time the pulls in rounds, one pull per size each round.

    Interleaving puts every size under the same conditions (the client's heap, the
    machine's other work, page-cache state), so the ratio compares the databases and
    not the moments they were measured at. Each round starts at a different size.
    """
    dbs = []
    for total in sizes.totals:
        log(f"\n[B] {sizes.small_set}-doc worker in a db of {fmt_count(total)}")
        dbs.append(ScaleDb(sizes, total, root, servers))
    log(f"\n[B] pulls of the {sizes.small_set}-doc set, one per database each round")
    for db in dbs:
        db.warm(client)
    with ExitStack() as profiles:
        for db in dbs:
            profiles.enter_context(profiled(db.server, db.pull.key))
        for i in range(sizes.scale_rounds):
            shift = i % len(dbs)
            for db in dbs[shift:] + dbs[:shift]:
                db.pull_once(client, i)
    for db in dbs:
        db.server.stop()
    return dbs


# -- report ---------------------------------------------------------------------------------
def ratio(
    label: str, numerator: Measurement, denominator: Measurement, target: float
) -> dict[str, Any]:
    value = numerator.seconds / denominator.seconds
    return {
        "label": label,
        "value": round(value, 3),
        "target": target,
        "pass": value <= target,
        "numerator": numerator.key,
        "denominator": denominator.key,
    }


def table(measurements: list[Measurement], ratios: dict[str, dict[str, Any]], seeding: Any) -> str:
    lines = [
        f"{'measurement':<44} {'docs':>7} {'median s':>9} {'docs/s':>9} "
        f"{'runs':>5} {'reqs':>5} {'gzip':>5} {'KiB in':>8} {'KiB out':>8}",
        "-" * 107,
    ]
    for m in measurements:
        middle = m.median_run()
        rate = "-" if m.rate is None else f"{m.rate:,.0f}"
        reqs = middle.get("requests")
        gz = middle.get("gzipped")
        lines.append(
            f"{m.label:<44} {m.docs:>7} {m.seconds:>9.3f} {rate:>9} {len(m.runs):>5} "
            f"{_cell(reqs):>5} {_cell(gz):>5} {_kib(middle.get('bytes_in')):>8} "
            f"{_kib(middle.get('bytes_out')):>8}"
        )
    lines.append("")
    for r in ratios.values():
        verdict = "PASS" if r["pass"] else "MISS"
        lines.append(f"{r['label']:<44} {r['value']:>7.2f}   target ≤ {r['target']}  {verdict}")
    lines.append("")
    lines.append("seeding straight into the store:")
    for label, s in seeding.items():
        rate = f"{s['docs'] / s['seconds']:,.0f} docs/s" if s["seconds"] else ""
        lines.append(f"  {label:<20} {s['docs']:>9} docs {s['seconds']:>8.1f} s  {rate}")
    return "\n".join(lines)


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def _kib(value: int | None) -> str:
    return "-" if value is None else f"{value / 1024:,.0f}"


def environment(sizes: Sizes) -> dict[str, Any]:
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "quick": sizes.quick,
        "python": platform.python_version(),
        "node": node,
        "cpus": os.cpu_count(),
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _raise_exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main() -> int:
    sizes = Sizes(os.environ.get("BENCH_QUICK", "") not in ("", "0"))
    signal.signal(signal.SIGTERM, _raise_exit)
    began = time.perf_counter()
    log(f"fieldsync bench{' (BENCH_QUICK: sizes ÷ 10)' if sizes.quick else ''}")
    phases = set(os.environ.get("BENCH_PHASES", "worker,scale,barcode,sms").split(","))
    load = os.getloadavg()[0]
    if load > 0.5:
        log(f"  note: load average {load:.1f} before starting; other work skews the timings")
    check_shape()
    log("  fast seeding writes the same rows as SqliteStore.write: ok")
    servers: list[Server] = []
    with ExitStack() as stack:
        stack.callback(_stop_all, servers)
        keep = os.environ.get("BENCH_KEEP", "") not in ("", "0")
        root = Path(tempfile.mkdtemp(prefix="fieldsync-bench-"))
        if not keep:
            stack.callback(_rmtree, root)
        client = PouchClient()
        stack.callback(client.close)

        worker: list[Measurement] = []
        seeding: dict[str, Any] = {}
        if "worker" in phases:
            log(f"\n[A] worker set of {sizes.worker_set} docs")
            worker, worker_seed = phase_worker(sizes, root, client, servers)
            seeding[f"worker db {fmt_count(2 * sizes.worker_set)}"] = worker_seed
        small: list[Measurement] = []
        if "scale" in phases:
            for db in phase_scale(sizes, root, client, servers):
                small.append(db.pull)
                seeding[f"scale db {db.label}"] = db.seeding
        if keep:
            log(f"\n  kept {root}")

    ratios = {}
    if worker:
        full, copy = worker[0], worker[-1]
        ratios["full_pull_vs_memory"] = ratio(
            "full pull ÷ memory-to-memory", full, copy, FULL_RATIO_TARGET
        )
    if small:
        big, little = fmt_count(sizes.totals[-1]), fmt_count(sizes.totals[0])
        ratios["small_pull_largest_vs_smallest"] = ratio(
            f"{sizes.small_set}-doc pull at {big} ÷ at {little}",
            small[-1],
            small[0],
            SCALE_RATIO_TARGET,
        )
    measurements = worker + small
    log("\n" + table(measurements, ratios, seeding))
    domains = domain_benches(phases, sizes.quick)
    elapsed = time.perf_counter() - began
    log(f"\nwhole run {elapsed:.0f} s")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "latest.json"
    out.write_text(
        json.dumps(
            {
                "environment": environment(sizes),
                "measurements": {m.key: m.to_json() for m in measurements},
                "ratios": ratios,
                "seeding": seeding,
                **domains,
                "elapsed_s": round(elapsed, 1),
            },
            indent=2,
        )
        + "\n"
    )
    log(f"results: {out}")
    return 0


def domain_benches(phases: set[str], quick: bool) -> dict[str, Any]:
    """The barcode decoding corpus and the SMS gateway throughput (issues 5 and 4)."""
    results: dict[str, Any] = {}
    if "barcode" in phases:
        from barcode import bench as barcode_bench

        log("\n[C] barcode photos: decode rate and time")
        results["barcode"] = barcode_bench.run(quick)
    if "sms" in phases:
        from sms_gateway import bench as sms_bench

        log("\n[D] coded SMS through the real gateway endpoint")
        results["sms"] = sms_bench.run(quick)
    return results


def _stop_all(servers: list[Server]) -> None:
    """Stop every server this run started (each by its own PID), even after an error."""
    for server in servers:
        server.stop()


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def run() -> None:
    sys.exit(main())
