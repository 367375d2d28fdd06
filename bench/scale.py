"""Phase B: a CHW whose set is 200 documents, in databases of 10k, 100k and 1M documents.

The rest belong to other places, 200 per place, interleaved over the whole
database, seeded straight into the store. Every (backend, size) has its own data dir
and server; all run side by side and the timed pulls go round them, one pull per
database each round, each round starting at a different one. Interleaving puts
every database under the same conditions (the client's heap, the machine's other
work, page-cache state), so the ratios compare the databases and not the moments
they were measured at.
"""

from __future__ import annotations

import random
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.backends import Backend
from bench.client import PouchClient
from bench.measure import (
    PASSWORD,
    Measurement,
    Sizes,
    expect,
    fmt_count,
    log,
    profiled,
    rotated,
    same_doc,
)
from bench.seed import record
from bench.server import Server
from bench.worker import enrol

WARMUP_PULLS = 5


class ScaleDb:
    """One database of phase B: its own data dir and server, seeded, with an enrolled phone."""

    def __init__(
        self, sizes: Sizes, backend: Backend, total: int, root: Path, servers: list[Server]
    ) -> None:
        self.sizes, self.backend, self.name = sizes, backend, backend.name
        self.label = fmt_count(total)
        tag = f"s{self.label.lower()}"
        self.data_dir = root / f"scale-{self.label}-{self.name}"
        backend.prepare(tag)
        log_path = root / f"server-scale-{self.label}-{self.name}.log"
        self.server = Server(self.data_dir, log_path, backend.settings(tag))
        servers.append(self.server)
        self.server.start()
        log(f"  [{self.name}] server pid {self.server.pid} at {self.server.url} ({self.data_dir})")
        self.server.cli("place", "add", "ke")
        self.server.stop()  # seed with no server running, as a migration would: its
        # CouchDB log watcher and settler then start after the seeding, not during it
        self.seeding = self._seed(total, tag)
        self.server.start()
        area = self.worker_docs[0].place
        self.server.cli(
            "user", "add", "chw_small", "--role", "chw", "--place", area, password=PASSWORD
        )
        headers = enrol(self.server, "chw_small", f"BENCH-{self.label}-{self.name}")
        self.remote = self.server.remote("chw_small", PASSWORD, headers)
        self.pull = Measurement(
            f"small_pull_{self.label}",
            f"pull of {sizes.small_set}-doc set, db of {self.label}",
            sizes.small_set,
            self.name,
        )

    def _seed(self, total: int, tag: str) -> dict[str, Any]:
        areas = [f"a{n:05d}" for n in range(total // self.sizes.small_set)]
        districts = [f"d{n:03d}" for n in range((len(areas) + 49) // 50)]
        started = time.perf_counter()
        with self.backend.seeder(self.data_dir, tag) as seeder:
            seeder.add_places(
                [(d, "ke") for d in districts]
                + [(a, districts[i // 50]) for i, a in enumerate(areas)]
            )
            places_s = time.perf_counter() - started
            rng = random.Random(total)
            docs = (record(rng, areas[i % len(areas)], i) for i in range(total))
            count, self.worker_docs = seeder.seed(docs, keep=frozenset({areas[0]}))
            seed_s = time.perf_counter() - started
            details = seeder.finish()
        ready_s = time.perf_counter() - started
        extra = "; ".join(f"{k} {_show(v)}" for k, v in details.items() if k != "databases")
        log(
            f"  [{self.name}] seeded {count} docs in {len(areas)} places in {seed_s:.1f} s "
            f"({count / seed_s:,.0f} docs/s; places and keys {places_s:.1f} s); "
            f"ready to serve after {ready_s:.1f} s ({extra})"
        )
        return {
            "docs": count,
            "places": len(areas),
            "seconds": round(seed_s, 3),
            "docs_per_s": round(count / seed_s),
            "ready_s": round(ready_s, 3),
            **details,
        }

    def warm(self, client: PouchClient) -> None:
        """A deployed server is long-running: a few untimed pulls, the same for every size."""
        for i in range(WARMUP_PULLS):
            local = f"warm-{self.label}-{self.name}-{i}"
            client.call("pull", remote=self.remote, local=local)
            client.call("destroy", local=local)

    def pull_once(self, client: PouchClient, i: int) -> None:
        name = f"small-{self.label}-{self.name}-{i}"
        run = client.call("pull", remote=self.remote, local=name)
        self.pull.add(expect(run, len(self.worker_docs), self.pull.name))
        if i == 0:
            sample = self.worker_docs[-1]
            same_doc(client.call("get", local=name, doc_id=sample.id), sample)
        client.call("destroy", local=name)


def _show(value: object) -> str:
    return f"{value:,.1f}" if isinstance(value, float) else str(value)


def phase_scale(
    sizes: Sizes, root: Path, client: PouchClient, backends: list[Backend], servers: list[Server]
) -> list[ScaleDb]:
    """Seed every (size, backend) first, then time the pulls in rounds."""
    dbs = []
    for total in sizes.totals:
        for backend in backends:
            where = f"a db of {fmt_count(total)} on {backend.name}"
            log(f"\n[B] {sizes.small_set}-doc worker in {where}")
            dbs.append(ScaleDb(sizes, backend, total, root, servers))
    log(f"\n[B] pulls of the {sizes.small_set}-doc set, one per database each round")
    for db in dbs:
        db.warm(client)
    with ExitStack() as profiles:
        for db in dbs:
            profiles.enter_context(profiled(db.server, f"{db.pull.key}-{db.name}"))
        for i in range(sizes.scale_rounds):
            for db in rotated(dbs, i):
                db.pull_once(client, i)
    for db in dbs:
        db.server.stop()
    return dbs
