"""``make bench``'s SMS part: coded registrations through the real medic-gateway endpoint.

``run(quick)`` starts its own ``fieldsync serve`` on a fresh data dir seeded
with CHWs (each holding a registered phone) and a gateway account, then plays
the gateway: it POSTs ``P <weeks> <name>`` messages to ``/api/sms`` in batches
of 50 and keeps polling, acknowledging each reply as delivered, until every
registration's confirmation has come back.  It reports:

    stored_per_second      messages accepted (POSTs answered: stored durably)
    registered_per_second  messages parsed and registered, first POST to last reply
    reply_p50/p95_seconds  from a message's POST to its reply reaching the gateway

Full: 3000 messages from 30 phones; quick: 300 from 10.
"""

from __future__ import annotations

import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path
from typing import Any

from barcode.checkdigit import Scheme, append_check_char
from device_registry import embedded_sql, inventory
from device_registry import schema as device_schema
from sync.people_store import embedded_tables
from sync.scopes import UNLIMITED, Role
from sync.store.schema import connect, db_path, initialise

PASSWORD = "bench-password-1"
BATCH = 50
FULL, QUICK = (3000, 30), (300, 10)
FIELDSYNC = str(Path(sys.executable).parent / "fieldsync")


def phone_of(worker: int) -> str:
    return f"+2547{worker:08d}"


def seed(data_dir: Path, workers: int) -> None:
    path = db_path(data_dir)
    initialise(path)
    with closing(connect(path)) as conn:
        conn.execute("BEGIN")
        embedded_tables.add_place(conn, "district", None, None)
        embedded_tables.add_user(conn, "gw", Role.GATEWAY, PASSWORD)
        device_schema.ensure(conn)
        for n in range(workers):
            embedded_tables.add_place(conn, f"area-{n}", "district", None)
            embedded_tables.add_user(conn, f"chw{n}", Role.CHW, PASSWORD, [f"area-{n}"])
            imei = append_check_char(f"35{n:012d}", Scheme.LUHN10)
            new = inventory.validate_new(f"SN-{n}", imei, phone=phone_of(n))
            embedded_sql.add(conn, new, "bench", UNLIMITED)
            embedded_sql.assign(conn, f"SN-{n}", f"chw{n}", "bench", UNLIMITED)
        conn.execute("COMMIT")


class Gateway:
    def __init__(self, url: str) -> None:
        self.url = url + "/api/sms"
        token = base64.b64encode(f"gw:{PASSWORD}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}

    def post(self, messages: list[dict[str, Any]], updates: list[dict[str, Any]]) -> list[Any]:
        body = json.dumps({"messages": messages, "updates": updates}).encode()
        request = urllib.request.Request(self.url, body, self.headers, method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            return list(json.loads(response.read())["messages"])


def start_server(data_dir: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    command = [FIELDSYNC, "serve", "--data-dir", str(data_dir), "--port", str(port)]
    with log.open("ab") as out:
        process = subprocess.Popen([*command, "--host", "127.0.0.1"], stdout=out, stderr=out)
    for _ in range(300):
        try:
            with urllib.request.urlopen(url + "/api/sms", timeout=1):
                return process, url
        except (urllib.error.URLError, OSError):
            if process.poll() is not None:
                break
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"fieldsync serve did not start:\n{log.read_text()[-2000:]}")


def play(gateway: Gateway, total: int, workers: int) -> dict[str, float]:
    """Send ``total`` registrations and wait for every confirmation."""
    messages = [
        {"id": f"bench-{n}", "from": phone_of(n % workers), "content": f"P {n % 40 + 1} Mama{n}"}
        for n in range(total)
    ]
    posted: dict[str, float] = {}
    latencies: list[float] = []
    acks: list[dict[str, Any]] = []
    start = time.perf_counter()
    stored_at = start
    for offset in range(0, total, BATCH):
        chunk = messages[offset : offset + BATCH]
        now = time.perf_counter()
        posted.update({f"Mama{m['id'].split('-')[1]} ": now for m in chunk})
        _collect(gateway.post(chunk, acks), posted, latencies, acks)
        stored_at = time.perf_counter()
    deadline = time.monotonic() + 600
    while len(latencies) < total and time.monotonic() < deadline:
        _collect(gateway.post([], acks), posted, latencies, acks)
        time.sleep(0.01)
    done = time.perf_counter()
    if len(latencies) < total:
        raise RuntimeError(f"only {len(latencies)} of {total} replies came back")
    latencies.sort()
    return {
        "stored_per_second": round(total / (stored_at - start), 1),
        "registered_per_second": round(total / (done - start), 1),
        "reply_p50_seconds": round(statistics.median(latencies), 3),
        "reply_p95_seconds": round(latencies[int(0.95 * (len(latencies) - 1))], 3),
        "total_seconds": round(done - start, 2),
    }


def _collect(
    replies: list[Any], posted: dict[str, float], latencies: list[float], acks: list[Any]
) -> None:
    acks.clear()
    now = time.perf_counter()
    for reply in replies:
        acks.append({"id": reply["id"], "status": "DELIVERED"})
        name = reply["content"].split(" registered", 1)[0] + " "
        if name in posted:
            latencies.append(now - posted.pop(name))


def run(quick: bool) -> dict[str, object]:
    """Seed, start, play, stop; print and return the figures."""
    total, workers = QUICK if quick else FULL
    with tempfile.TemporaryDirectory(prefix="fieldsync-sms-bench-") as scratch:
        data_dir = Path(scratch) / "data"
        seed(data_dir, workers)
        process, url = start_server(data_dir, Path(scratch) / "server.log")
        try:
            figures: dict[str, object] = {"messages": total, "phones": workers}
            figures.update(play(Gateway(url), total, workers))
        finally:
            process.terminate()
            process.wait(10)
    print("sms gateway:", ", ".join(f"{k} {v}" for k, v in figures.items()))
    return figures


if __name__ == "__main__":
    print(json.dumps(run(quick=os.environ.get("QUICK") == "1")))
