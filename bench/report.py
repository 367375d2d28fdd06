"""The bench's figures as text: every measurement, both backends side by side, the targets."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from typing import Any

from bench import placement
from bench.measure import Measurement, Sizes


def table(measurements: list[Measurement]) -> str:
    lines = [
        f"{'measurement':<56} {'docs':>7} {'median s':>9} {'docs/s':>9} "
        f"{'runs':>5} {'reqs':>5} {'gzip':>5} {'KiB in':>8} {'KiB out':>8}",
        "-" * 119,
    ]
    for m in measurements:
        middle = m.median_run()
        rate = "-" if m.rate is None else f"{m.rate:,.0f}"
        lines.append(
            f"{m.name:<56} {m.docs:>7} {m.seconds:>9.3f} {rate:>9} {len(m.runs):>5} "
            f"{_cell(middle.get('requests')):>5} {_cell(middle.get('gzipped')):>5} "
            f"{_kib(middle.get('bytes_in')):>8} {_kib(middle.get('bytes_out')):>8}"
        )
    return "\n".join(lines)


def side_by_side(by_backend: dict[str, list[Measurement]], peers: list[Measurement]) -> str:
    """One row per measurement, one column per backend, and their ratio."""
    names = list(by_backend)
    rows: dict[str, dict[str, Measurement]] = {}
    for name, measurements in by_backend.items():
        for m in measurements:
            rows.setdefault(m.label, {})[name] = m
    header = f"{'median seconds':<44}" + "".join(f"{n:>10}" for n in names)
    both = "sqlite" in by_backend and "couchdb" in by_backend
    header += f"{'couchdb ÷ sqlite':>18}" if both else ""
    lines = [header, "-" * len(header)]
    for label, cells in rows.items():
        line = f"{label:<44}" + "".join(
            f"{cells[n].seconds:>10.3f}" if n in cells else f"{'-':>10}" for n in names
        )
        if both and "sqlite" in cells and "couchdb" in cells:
            line += f"{cells['couchdb'].seconds / cells['sqlite'].seconds:>18.2f}"
        lines.append(line)
    for m in peers:
        lines.append(f"{m.label:<44}{m.seconds:>10.3f}   (peer)")
    return "\n".join(lines)


def targets(ratios: dict[str, dict[str, Any]]) -> str:
    lines = []
    for r in ratios.values():
        if r["target"] is None:
            lines.append(f"{r['label']:<60} {r['value']:>6.2f}   (for information)")
            continue
        verdict = "PASS" if r["pass"] else "MISS"
        lines.append(f"{r['label']:<60} {r['value']:>6.2f}   target ≤ {r['target']}  {verdict}")
    return "\n".join(lines)


def seeding(seeded: dict[str, dict[str, Any]]) -> str:
    lines = ["seeding straight into the store (ready: views built / file synced):"]
    for label, s in seeded.items():
        rate = f"{s['docs'] / s['seconds']:>9,.0f} docs/s" if s["seconds"] else ""
        ready = f"  ready after {s['ready_s']:.1f} s" if "ready_s" in s else ""
        lines.append(f"  {label:<24} {s['docs']:>9} docs {s['seconds']:>8.1f} s {rate}{ready}")
    return "\n".join(lines)


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def _kib(value: int | None) -> str:
    return "-" if value is None else f"{value / 1024:,.0f}"


def environment(sizes: Sizes, couch: str | None, load_at_start: float) -> dict[str, Any]:
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "quick": sizes.quick,
        "python": platform.python_version(),
        "node": node,
        "couchdb": couch,
        "cpus": os.cpu_count(),
        "cpu_placement": placement.described(),
        "loadavg_at_start": round(load_at_start, 2),
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
