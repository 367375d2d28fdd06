"""What the bench measures with: sizes, timed runs and their medians, ratios, profiles."""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.seed import Seeded
from bench.server import Server

PASSWORD = "bench-password-7"
RESULTS = Path(__file__).with_name("results")


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


class Measurement:
    """Timed runs of one thing on one backend (``sqlite``, ``couchdb``, or ``peer``)."""

    def __init__(self, key: str, label: str, docs: int, backend: str) -> None:
        self.key, self.label, self.docs, self.backend = key, label, docs, backend
        self.runs: list[dict[str, Any]] = []

    @property
    def name(self) -> str:
        return f"{self.label} [{self.backend}]"

    def add(self, run: dict[str, Any]) -> None:
        self.runs.append(run)
        docs = f", {run['docs_written']} docs" if run.get("docs_written") is not None else ""
        cpu = run.get("cpu_s") or {}
        shown = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items() if v is not None)
        cpu_text = f" (CPU s: {shown})" if shown else ""
        docs += f", {run['from_base']} from a base" if "from_base" in run else ""
        log(f"    {self.name}: run {len(self.runs)}: {run['ms'] / 1000:.3f} s{docs}{cpu_text}")

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
            "backend": self.backend,
            "docs": self.docs,
            "seconds": round(self.seconds, 4),
            "docs_per_s": None if self.rate is None else round(self.rate, 1),
            "runs_s": [round(r["ms"] / 1000, 4) for r in self.runs],
            "requests": middle.get("requests"),
            "gzipped_responses": middle.get("gzipped"),
            "bytes_in": middle.get("bytes_in"),
            "bytes_out": middle.get("bytes_out"),
            "by_endpoint": middle.get("by_endpoint"),
            "cpu_s": middle.get("cpu_s"),
            "from_base": [r["from_base"] for r in self.runs if "from_base" in r] or None,
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


def rotated(items: list[Any], round_: int) -> list[Any]:
    """``items`` starting at a different one each round: no backend always goes first."""
    shift = round_ % len(items) if items else 0
    return items[shift:] + items[:shift]


def ratio(
    label: str, numerator: Measurement, denominator: Measurement, target: float | None
) -> dict[str, Any]:
    value = numerator.seconds / denominator.seconds
    return {
        "label": label,
        "value": round(value, 3),
        "target": target,
        "pass": None if target is None else value <= target,
        "numerator": f"{numerator.backend}.{numerator.key}",
        "denominator": f"{denominator.backend}.{denominator.key}",
    }


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
    if os.environ.get("BENCH_PROFILE") == "idle":  # also the time spent waiting (on CouchDB)
        command.append("--idle")
    recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # let it attach
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)
        recorder.wait(30)
        log(f"    profile: {out}")
