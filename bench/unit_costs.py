"""The three unit costs of docs/scaling.md, in server CPU seconds, on each backend.

``.venv/bin/python -m bench.unit_costs`` (with ``BENCH_COUCHDB_URL=http://admin:PW@host:5984``
to measure the CouchDB backend beside the embedded store) prints, per backend:

- CPU per **no-op sync**: a real PouchDB client's one-shot pull that finds nothing
  plus a one-shot push that finds nothing (the requests of a live sync's idle round);
- CPU per **document served**: a full pull of a fresh phone, divided by its documents;
- CPU per **document written**: a push of new documents, divided by their number.

CPU seconds are read from ``/proc/<pid>/stat`` (user + system, :mod:`bench.cpu`) for
fieldsync's process and, on the CouchDB backend, for CouchDB's own process (found by
the port it listens on), each apart. CPU seconds, not wall time: on a shared, loaded
machine the wall time says more about the neighbours than about the server. Each
process's idle CPU rate (background watchers, CouchDB's own housekeeping, and any
other client of the same CouchDB) is measured for 5 s after the full pulls and taken
away, pro rata of the wall time of each measured block; the raw figures are printed too.

Sizes are small so that the whole run takes a few minutes: ``UNIT_SET`` documents in
the phone's set (default 1,000, pushed first by her own phone: that push counts as
written documents too), ``UNIT_PUSHED`` pushed per later push (default 200, twice),
``UNIT_NOOPS`` no-op syncs (default 60). The CouchDB databases
are named ``FIELDSYNC_COUCHDB_PREFIX`` (default ``scal_``) + ``w_...`` and deleted at
the end. Results go to ``bench/results/unit_costs.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import backends as stores
from bench import cpu
from bench.backends import Backend
from bench.client import PouchClient
from bench.measure import PASSWORD, RESULTS, log
from bench.server import Server
from bench.worker import TAG, WORKER_PLACE

DEFAULT_PREFIX = "scal_"
IDLE_SECONDS = 5.0
NOISY_IDLE = 0.1  # CPU s per s: above it, another client shares the process
FULL_PULLS = 2
PUSHES = 2


def _setting(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise SystemExit(f"{name} must be a whole number of at least 1, not {value!r}")
    return int(value)


@dataclass
class Block:
    """CPU seconds each process spent in one measured block, and the block's wall time."""

    raw: dict[str, float]
    wall_s: float
    units: int

    def net(self, idle: Mapping[str, float]) -> dict[str, float]:
        """The raw CPU minus each process's idle rate over the block's wall time."""
        return {
            name: max(0.0, spent - idle.get(name, 0.0) * self.wall_s)
            for name, spent in self.raw.items()
        }


def measure(pids: Mapping[str, int | None], work: Callable[[], None], units: int) -> Block:
    """Run ``work`` once and count the CPU each process of ``pids`` spent in it."""
    before = {name: cpu.seconds(pid) for name, pid in pids.items()}
    started = time.perf_counter()
    work()
    wall = time.perf_counter() - started
    raw: dict[str, float] = {}
    for name, pid in pids.items():
        start, end = before[name], cpu.seconds(pid)
        if start is None or end is None:
            raise RuntimeError(f"cannot read the CPU time of {name} (pid {pid}) in /proc")
        raw[name] = end - start
    return Block(raw, wall, units)


def idle_rates(pids: Mapping[str, int | None]) -> dict[str, float]:
    """CPU seconds per wall second each process spends while nobody asks it anything."""
    block = measure(pids, lambda: time.sleep(IDLE_SECONDS), 1)
    return {name: spent / block.wall_s for name, spent in block.raw.items()}


class Costs:
    """The three measurements on one backend: its own server, places, a CHW and her phone.

    Everything is made as an implementer would, through the CLI and HTTP (not seeded
    straight into the store): with issue 11 users, places, devices and data keys live
    in CouchDB on the CouchDB backend, so only the server's own writes are sure to fit.
    """

    def __init__(
        self,
        backend: Backend,
        root: Path,
        client: PouchClient,
        sizes: tuple[int, int, int],
        servers: list[Server],
    ) -> None:
        self.backend, self.name, self.client = backend, backend.name, client
        self.set_size, self.pushed, self.noops = sizes
        self.blocks: dict[str, list[Block]] = {"full": [], "push": [], "noop": []}
        backend.prepare(TAG)
        settings = backend.settings(TAG)
        self.server = Server(root / f"unit-{self.name}", root / f"unit-{self.name}.log", settings)
        servers.append(self.server)
        self.server.start()
        log(f"  [{self.name}] server pid {self.server.pid} at {self.server.url}")
        self.server.cli("place", "add", "ke")
        self.server.cli("place", "add", "d000", "--parent", "ke")
        self.server.cli("place", "add", WORKER_PLACE, "--parent", "d000")
        self.server.cli(
            "user", "add", "chw_big", "--role", "chw", "--place", WORKER_PLACE, password=PASSWORD
        )
        headers = self.server.enrol_device("chw_big", PASSWORD, f"UNIT-{self.name}")
        self.remote = self.server.remote("chw_big", PASSWORD, headers)

    def pids(self) -> dict[str, int | None]:
        return {"fieldsync": self.server.pid, **self.backend.pids()}

    def run(self) -> dict[str, Any]:
        client, n, name = self.client, self.set_size, self.name
        seed = f"unit-seed-{name}"
        client.call("create", local=seed, place=WORKER_PLACE, prefix="seed", count=n)
        self.blocks["push"].append(self._push(seed, n))  # the set, pushed by her own phone
        client.call("destroy", local=seed)
        local = ""
        for i in range(FULL_PULLS):
            if local:
                client.call("destroy", local=local)
            local = f"unit-full-{name}-{i}"
            self.server.stop()
            self.server.start()  # a fresh server: nothing of the set is in its memory
            self.blocks["full"].append(self._pull(local, n))
        idle = idle_rates(self.pids())
        for i in range(PUSHES):
            pusher = f"unit-push-{name}-{i}"
            client.call(
                "create", local=pusher, place=WORKER_PLACE, prefix=f"u{i}", count=self.pushed
            )
            self.blocks["push"].append(self._push(pusher, self.pushed))
            if i < PUSHES - 1:
                client.call("destroy", local=pusher)
        self._pull(local, PUSHES * self.pushed)  # the phone catches up on what was pushed

        def noop_syncs() -> None:
            for _ in range(self.noops):
                self._expect(client.call("pull", remote=self.remote, local=local), 0, "no-op pull")
                self._expect(client.call("push", remote=self.remote, local=pusher), 0, "no-op push")

        self.blocks["noop"].append(measure(self.pids(), noop_syncs, self.noops))
        client.call("destroy", local=local)
        client.call("destroy", local=pusher)
        return self.summary(idle)

    def _pull(self, local: str, docs: int) -> Block:
        def pull() -> None:
            run = self.client.call("pull", remote=self.remote, local=local)
            self._expect(run, docs, "pull")

        return measure(self.pids(), pull, docs)

    def _push(self, local: str, docs: int) -> Block:
        def push() -> None:
            run = self.client.call("push", remote=self.remote, local=local)
            self._expect(run, docs, "push")

        return measure(self.pids(), push, docs)

    def _expect(self, run: Mapping[str, Any], docs: int, what: str) -> None:
        if run.get("docs_written") != docs:
            raise AssertionError(
                f"[{self.name}] {what}: {run.get('docs_written')} docs written, want {docs}"
            )

    def summary(self, idle: Mapping[str, float]) -> dict[str, Any]:
        out: dict[str, Any] = {"idle_cpu_per_s": {k: round(v, 4) for k, v in idle.items()}}
        for key, blocks in self.blocks.items():
            units = sum(b.units for b in blocks)
            names = blocks[0].raw
            raw = {name: sum(b.raw[name] for b in blocks) for name in names}
            net = {name: sum(b.net(idle)[name] for b in blocks) for name in names}
            out[key] = {
                "units": units,
                "wall_s": round(sum(b.wall_s for b in blocks), 3),
                "raw_cpu_s": {k: round(v, 3) for k, v in raw.items()},
                "net_cpu_s": {k: round(v, 3) for k, v in net.items()},
                "net_ms_per_unit": {k: round(1000 * v / units, 3) for k, v in net.items()},
            }
        return out


def show(name: str, result: Mapping[str, Any]) -> None:
    labels = {
        "noop": "no-op sync (pull + push)",
        "full": "document served (full pull)",
        "push": "document written (push)",
    }
    idle = ", ".join(f"{k} {v:.3f}" for k, v in result["idle_cpu_per_s"].items())
    log(f"\n  [{name}] idle CPU s per wall s: {idle}")
    for process, rate in result["idle_cpu_per_s"].items():
        if rate > NOISY_IDLE:
            log(
                f"  [{name}] warning: {process} spent {rate:.2f} CPU s per s while idle: another "
                "client was using it, so its figures below are unreliable; run again when quiet"
            )
    for key, label in labels.items():
        row = result[key]
        per = ", ".join(f"{k} {v:.3f} ms" for k, v in row["net_ms_per_unit"].items())
        raw = ", ".join(f"{k} {v:.2f}" for k, v in row["raw_cpu_s"].items())
        log(
            f"  [{name}] CPU per {label}: {per}  "
            f"({row['units']} units, {row['wall_s']:.1f} s wall, raw CPU s: {raw})"
        )


def main() -> int:
    os.environ.setdefault(stores.ENV_PREFIX, DEFAULT_PREFIX)
    set_size = _setting("UNIT_SET", 1_000)
    pushed, noops = _setting("UNIT_PUSHED", 200), _setting("UNIT_NOOPS", 60)
    load = os.getloadavg()
    log(
        f"unit costs: set {set_size}, push {pushed}, {noops} no-op syncs; "
        f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs "
        "(CPU seconds are measured, not wall time)"
    )
    results: dict[str, Any] = {"load_average": load, "cpus": os.cpu_count()}
    servers: list[Server] = []
    with ExitStack() as stack:
        backends, couch = stack.enter_context(stores.opened())
        stack.callback(_stop_all, servers)
        if couch is not None:
            log(f"  CouchDB: {couch.description}; databases {couch.prefix(TAG)}*")
            results["couchdb"] = couch.description
            stack.callback(lambda: log(f"  deleted {len(couch.delete(TAG))} databases"))
        root = Path(tempfile.mkdtemp(prefix="fieldsync-unit-"))
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        client = PouchClient()
        stack.callback(client.close)
        for backend in backends:
            log(f"\n[{backend.name}] a CHW whose set is {set_size} documents, pushed by her phone")
            costs = Costs(backend, root, client, (set_size, pushed, noops), servers)
            result = costs.run()
            costs.server.stop()
            results[backend.name] = result
            show(backend.name, result)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "unit_costs.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    log(f"\nresults: {out}")
    return 0


def _stop_all(servers: list[Server]) -> None:
    """Stop every server this run started, each by its own PID."""
    for server in servers:
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
