"""``make bench``'s console part: the Workers page for 2,000 workers (issue 13, point 6).

``run(quick)`` seeds a fresh data dir straight into the embedded store -- places
(a country, 20 districts, an area per worker), the CHWs (one area each), a phone
assigned to each (some silent for weeks), 8 weeks of sync activity per phone, and
documents (50 per area; 3 areas over the set-size warning) -- then starts a real
``fieldsync serve`` and, as a supervisor of the whole country, asks for
``GET /supervisor/workers`` and ``GET /api/v1/workers`` :data:`REQUESTS` times each
(after one request that fills the set-size cache, reported on its own).  The
page shows 100 workers at a time, but gathers, filters and sorts all of them.  It prints
the median and p95 and the page's median ÷ the 300 ms target.  Nothing is asserted.

Full: 2,000 workers; quick: 200.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import statistics
import tempfile
import time
import urllib.request
from contextlib import closing
from pathlib import Path
from typing import Any

from bench.measure import log
from bench.server import Server
from device_registry import schema as device_schema
from device_registry.worker_pages import PAGE_SIZE
from sync import accounts
from sync.activity import embedded as activity_tables
from sync.activity.ports import DayActivity
from sync.people_store import embedded_tables
from sync.scopes import Role
from sync.store.schema import connect, db_path, initialise

PASSWORD = "bench-password-1"
SUPERVISOR = "sup"
REQUESTS = 20
TARGET_SECONDS = 0.300
DISTRICTS = 20
DOCS_PER_AREA = 50
BIG_AREAS = 3  # areas holding more than the set-size warning (10,000)
FULL, QUICK = 2000, 200


def seed(data_dir: Path, workers: int) -> None:
    """Places, users, phones, activity and documents, written straight into SQLite."""
    path = db_path(data_dir)
    initialise(path)
    with closing(connect(path)) as conn:
        conn.execute("BEGIN")
        _people(conn, workers)
        _phones(conn, workers)
        _activity(conn, workers)
        _documents(conn, workers)
        conn.execute("COMMIT")


def _people(conn: Any, workers: int) -> None:
    embedded_tables.add_place(conn, "country", None, "Country")
    for d in range(DISTRICTS):
        embedded_tables.add_place(conn, f"district-{d}", "country", f"District {d}")
    now = dt.datetime.now(dt.UTC).isoformat()
    conn.executemany(
        "INSERT INTO places(id, parent, name, created) VALUES(?,?,?,?)",
        [(f"area-{n}", f"district-{n % DISTRICTS}", f"Area {n}", now) for n in range(workers)],
    )
    embedded_tables.bump_places(conn)
    embedded_tables.add_user(conn, SUPERVISOR, Role.SUPERVISOR, PASSWORD, ["country"])
    hashed = accounts.hash_password(PASSWORD)  # once: scrypt for 2,000 users takes minutes
    conn.executemany(
        "INSERT INTO users(name, role, password_hash, places, read_places, created, updated) "
        "VALUES(?,?,?,?,?,?,?)",
        [
            (f"chw{n:04d}", "chw", hashed, json.dumps([f"area-{n}"]), "[]", now, now)
            for n in range(workers)
        ],
    )


def _phones(conn: Any, workers: int) -> None:
    device_schema.ensure(conn)
    moment = dt.datetime.now(dt.UTC)
    rows = []
    for n in range(workers):
        last = (moment - dt.timedelta(hours=n % 400)).isoformat(timespec="seconds")
        rows.append(
            (
                f"SN-{n:05d}",
                f"35{n:013d}",
                "Tecno Spark 8",
                f"fieldapp 2.{n % 5}.0",
                f"chw{n:04d}",
                moment.date().isoformat(),
                "assigned",
                last,
                moment.isoformat(),
                moment.isoformat(),
            )
        )
    conn.executemany(
        "INSERT INTO devices(serial, imei, model, app_version, worker, issued, status, "
        "last_sync, created, updated) VALUES(?,?,?,?,?,?,?,?,?,?)",
        rows,
    )


def _activity(conn: Any, workers: int) -> None:
    activity_tables.create_tables(conn)
    today = dt.datetime.now(dt.UTC).date()
    buckets = [
        DayActivity(
            f"chw{n:04d}",
            f"SN-{n:05d}",
            (today - dt.timedelta(days=d)).isoformat(),
            syncs=1 + (n + d) % 3,
            docs=(n * d) % 7,
        )
        for n in range(workers)
        for d in range(56)
        if (n + d) % 4
    ]
    activity_tables.add(conn, buckets)


def _documents(conn: Any, workers: int) -> None:
    """Rows of ``docs`` only (what the set sizes count); nobody opens them here."""
    conn.execute(
        "INSERT INTO dbs(name, created, uuid) VALUES('health', ?, 'bench')",
        (dt.datetime.now(dt.UTC).isoformat(),),
    )
    db_id = conn.execute("SELECT id FROM dbs WHERE name='health'").fetchone()[0]
    seq = 0
    rows = []
    for n in range(workers):
        count = 10_001 if n < BIG_AREAS else DOCS_PER_AREA
        for i in range(count):
            seq += 1
            rows.append((db_id, f"a{n}-{i}", f"area-{n}", seq, "1-x", 0, '["1-x"]', "{}"))
    conn.executemany(
        "INSERT INTO docs(db, id, place, seq, winner, deleted, leaves, tree) "
        "VALUES(?,?,?,?,?,?,?,?)",
        rows,
    )
    conn.execute("UPDATE dbs SET update_seq=? WHERE id=?", (seq, db_id))


def _get(url: str) -> tuple[float, bytes]:
    token = base64.b64encode(f"{SUPERVISOR}:{PASSWORD}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    began = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        body = response.read()
    return time.perf_counter() - began, body


def _cpu_seconds(pid: int) -> float:
    """The server process's CPU time so far (user + system), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _timed(url: str, pid: int) -> dict[str, float]:
    """Median and p95 wall time of REQUESTS requests, and the server's CPU time per request
    (the figure that does not grow when other work shares the machine)."""
    before = _cpu_seconds(pid)
    seconds = sorted(_get(url)[0] for _ in range(REQUESTS))
    return {
        "median_s": round(statistics.median(seconds), 4),
        "p95_s": round(seconds[max(0, round(0.95 * len(seconds)) - 1)], 4),
        "server_cpu_s": round((_cpu_seconds(pid) - before) / REQUESTS, 4),
    }


def run(quick: bool) -> dict[str, Any]:
    workers = QUICK if quick else FULL
    with tempfile.TemporaryDirectory(prefix="fieldsync-console-") as tmp:
        root = Path(tmp)
        began = time.perf_counter()
        seed(root / "data", workers)
        log(
            f"  seeded {workers:,} workers, phones, 8 weeks of activity, documents "
            f"in {time.perf_counter() - began:.1f} s"
        )
        server = Server(root / "data", root / "server.log")
        server.start()
        try:
            page_url = f"{server.url}/supervisor/workers"
            first, html = _get(page_url)
            rows = html.count(b'data-label="Name"')
            if rows != min(workers, PAGE_SIZE) or f" of {workers:,}".encode() not in html:
                raise RuntimeError(f"the page lists {rows} workers, not 1 to 100 of {workers}")
            assert server.process is not None
            pid = server.process.pid
            page = _timed(page_url, pid)
            api = _timed(f"{server.url}/api/v1/workers", pid)
            csv = _timed(f"{server.url}/api/v1/workers?format=csv", pid)
            one = _timed(f"{server.url}/supervisor/workers/chw0007", pid)
        finally:
            server.stop()
    ratio = page["median_s"] / TARGET_SECONDS
    log(
        f"  GET /supervisor/workers ({workers:,} workers, {PAGE_SIZE} a page, "
        f"{len(html) / 1e3:.0f} kB): first "
        f"{first * 1000:.0f} ms, then median {page['median_s'] * 1000:.0f} ms, "
        f"p95 {page['p95_s'] * 1000:.0f} ms of {REQUESTS}; server CPU "
        f"{page['server_cpu_s'] * 1000:.0f} ms a request"
    )
    log(
        f"  GET /api/v1/workers: median {api['median_s'] * 1000:.0f} ms, "
        f"p95 {api['p95_s'] * 1000:.0f} ms; as CSV: median {csv['median_s'] * 1000:.0f} ms; "
        f"one worker's page: median {one['median_s'] * 1000:.0f} ms"
    )
    load = os.getloadavg()[0]
    if load > 1.5:
        log(f"  note: load average {load:.1f}: other work shares the CPUs; see the CPU figure")
    log(
        f"  workers page median ÷ {TARGET_SECONDS * 1000:.0f} ms target: {ratio:.2f} "
        f"({'met' if ratio <= 1 else 'NOT met'})"
    )
    return {
        "workers": workers,
        "first_page_s": round(first, 4),
        "page": page,
        "api_json": api,
        "api_csv": csv,
        "worker_page": one,
        "page_bytes": len(html),
        "target_s": TARGET_SECONDS,
        "page_median_vs_target": round(ratio, 3),
    }
