"""Phase A: a CHW whose set is 10,000 documents, on every backend, side by side.

Each backend gets its own data dir and ``fieldsync serve`` process, seeded with the
same 20,000 documents (the worker's 10,000 and as many of other places, interleaved).
The timed runs alternate between the backends, round by round (each round starting
with a different one), so that both see the same machine: full pulls, no-op pulls,
incremental pulls after 100 server-side edits, pushes of 1,000 new documents.

Every full pull is served by a server started just before it, so that it finds nothing
of the worker's set in the server's memory (a phone's first pull, as in the field).

Beside them, the peers of a full pull, also in every round: PouchDB's own
memory-to-memory replication of the same documents, and CouchDB's own unfiltered
replication of them (PouchDB pulling straight from a plain CouchDB database that
holds just those 10,000 documents, as CouchDB's admin).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import couch_seed
from bench.backends import Backend, Couch
from bench.client import PouchClient
from bench.cpu import spent
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
from bench.placement import placed
from bench.seed import Seeded, record
from bench.server import Server

TAG = "w"
PEER_TAG = "peer"
WORKER_PLACE = "area-big"


@dataclass
class WorkerResults:
    measurements: dict[str, list[Measurement]]  # backend -> full, no-op, incremental, push
    peers: list[Measurement]  # memory-to-memory, CouchDB's own unfiltered pull
    seeding: dict[str, dict[str, Any]] = field(default_factory=dict)


class WorkerDb:
    """Phase A on one backend: a server, 20k documents (10k in the worker's set), a phone."""

    def __init__(self, sizes: Sizes, backend: Backend, root: Path, servers: list[Server]) -> None:
        self.sizes, self.backend, self.name = sizes, backend, backend.name
        data_dir = root / f"worker-{self.name}"
        backend.prepare(TAG)
        self.server = Server(
            data_dir, root / f"server-worker-{self.name}.log", backend.settings(TAG)
        )
        servers.append(self.server)
        self.server.start()
        log(f"  [{self.name}] server pid {self.server.pid} at {self.server.url} ({data_dir})")
        self.server.cli("place", "add", "ke")
        self.server.cli("place", "add", "d000", "--parent", "ke")
        self.server.cli("place", "add", WORKER_PLACE, "--parent", "d000")
        self.server.stop()  # seed with no server running, as a migration would: its
        # CouchDB log watcher and settler then start after the seeding, not during it
        self.seeding = self._seed(data_dir)
        self.server.start()
        self.server.cli(
            "user", "add", "chw_big", "--role", "chw", "--place", WORKER_PLACE, password=PASSWORD
        )
        self.server.cli("user", "add", "bench_admin", "--role", "admin", password=PASSWORD)
        headers = enrol(self.server, "chw_big", f"BENCH-A-{self.name}")
        self.remote = self.server.remote("chw_big", PASSWORD, headers)
        self.headers = headers
        self.by_id = {d.id: d for d in self.worker_docs}
        n = sizes.worker_set
        self.full = Measurement(
            "full_pull", f"full pull, {fmt_count(n)}-doc worker set", n, self.name
        )
        self.noop = Measurement("noop_pull", "no-op pull (same local db)", 0, self.name)
        self.incr = Measurement(
            "incremental_pull",
            f"incremental pull, {sizes.changed} changed",
            sizes.changed,
            self.name,
        )
        self.push = Measurement(
            "push", f"push of {fmt_count(sizes.pushed)} new docs", sizes.pushed, self.name
        )
        self.device = ""

    def _seed(self, data_dir: Path) -> dict[str, Any]:
        sizes = self.sizes
        others = [f"a{n:05d}" for n in range(sizes.worker_set // sizes.small_set)]
        started = time.perf_counter()
        with self.backend.seeder(data_dir, TAG) as seeder:
            seeder.add_places([(p, "d000") for p in others])
            rng = random.Random(1)

            def docs() -> Iterator[dict[str, Any]]:
                for i in range(2 * sizes.worker_set):
                    place = WORKER_PLACE if i % 2 == 0 else others[(i // 2) % len(others)]
                    yield record(rng, place, i)

            count, self.worker_docs = seeder.seed(docs(), keep=frozenset({WORKER_PLACE}))
            seed_s = time.perf_counter() - started
            details = seeder.finish()
        ready_s = time.perf_counter() - started
        log(
            f"  [{self.name}] seeded {count} docs ({len(self.worker_docs)} in the worker's set) "
            f"in {seed_s:.1f} s ({count / seed_s:,.0f} docs/s); ready to serve after "
            f"{ready_s:.1f} s"
        )
        return {
            "docs": count,
            "seconds": round(seed_s, 3),
            "ready_s": round(ready_s, 3),
            "worker_set": len(self.worker_docs),
            **details,
        }

    # -- the timed runs -----------------------------------------------------------------
    def full_pull(self, client: PouchClient, i: int) -> str:
        """A phone's first pull, from a server just started: nothing of the worker's set is
        in its memory (the CouchDB backend keeps bodies it read, bodies.BodyCache), as for a
        phone whose set no other phone pulled lately."""
        local = f"full-{self.name}-{i}"
        self.server.stop()
        self.server.start()
        pids = {"server": self.server.pid, "client": client.pid, **self.backend.pids()}
        cpu: dict[str, Any] = {}
        with profiled(self.server, f"full_pull-{self.name}-{i}"), placed(pids), spent(pids, cpu):
            run = client.call("pull", remote=self.remote, local=local)
        if self.backend.name == "couchdb":  # how much of the pull a place's base served
            bases = self.server.gauge("fieldsync_couchdb_bases", ("bench_admin", PASSWORD))
            run["from_base"] = int(bases.get('{what="sent"}', 0))
        self.full.add(expect(run | cpu, self.sizes.worker_set, self.full.name))
        return local

    def keep_device(self, client: PouchClient, local: str) -> None:
        sample = self.worker_docs[len(self.worker_docs) // 2]
        same_doc(client.call("get", local=local, doc_id=sample.id), sample)
        self.device = local

    def noop_pull(self, client: PouchClient) -> None:
        run = client.call("pull", remote=self.remote, local=self.device)
        self.noop.add(expect(run, 0, self.noop.name))

    def incremental_pull(self, client: PouchClient, round_: int) -> None:
        changed = self.worker_docs[round_ * self.sizes.changed : (round_ + 1) * self.sizes.changed]
        edit_server_side(self.server, changed, self.by_id, round_)
        run = client.call("pull", remote=self.remote, local=self.device)
        self.incr.add(expect(run, self.sizes.changed, self.incr.name))

    def check_edits(self, client: PouchClient) -> None:
        edited = self.by_id[self.worker_docs[0].id]
        same_doc(client.call("get", local=self.device, doc_id=edited.id), edited)

    def push_once(self, client: PouchClient, i: int) -> None:
        name = f"push-{self.name}-{i}"
        pushed = self.sizes.pushed
        client.call("create", local=name, place=WORKER_PLACE, prefix=f"dev{i}", count=pushed)
        self.push.add(
            expect(client.call("push", remote=self.remote, local=name), pushed, self.push.name)
        )
        client.call("destroy", local=name)

    def finish(self, client: PouchClient) -> None:
        status, answer = self.server.request(
            "GET", "/health/", ("chw_big", PASSWORD), None, self.headers
        )
        expected = self.sizes.worker_set + self.sizes.runs * self.sizes.pushed
        if status != 200 or answer.get("doc_count") != expected:
            raise AssertionError(
                f"[{self.name}] worker's db info after pushes: {status} {answer}, want {expected}"
            )
        client.call("destroy", local=self.device)
        self.server.stop()

    @property
    def measurements(self) -> list[Measurement]:
        return [self.full, self.noop, self.incr, self.push]


class Peer:
    """CouchDB's own replication: PouchDB pulls a plain database holding the same documents."""

    def __init__(self, couch: Couch, docs: list[Seeded], n: int) -> None:
        self.couch, self.docs = couch, docs
        self.database = couch.prefix(PEER_TAG) + "health"
        couch.delete(PEER_TAG)
        started = time.perf_counter()
        asyncio.run(couch_seed.seed_plain(couch.url, self.database, docs))
        self.seed_s = time.perf_counter() - started
        log(f"  [peer] {len(docs)} plain docs in {self.database} in {self.seed_s:.1f} s")
        self.pull = Measurement(
            "couchdb_unfiltered", f"CouchDB's own unfiltered pull, same {fmt_count(n)}", n, "peer"
        )

    def pull_once(self, client: PouchClient, i: int) -> None:
        local = f"peer-{i}"
        cpu: dict[str, Any] = {}
        pids = {"client": client.pid, **self.couch.pids()}
        with placed(pids), spent(pids, cpu):
            run = client.call("pull", remote=self.couch.remote(self.database), local=local)
        self.pull.add(expect(run | cpu, len(self.docs), self.pull.name))
        if i == 0:
            sample = self.docs[len(self.docs) // 2]
            same_doc(client.call("get", local=local, doc_id=sample.id), sample)
        client.call("destroy", local=local)


def phase_worker(
    sizes: Sizes,
    root: Path,
    client: PouchClient,
    backends: list[Backend],
    couch: Couch | None,
    servers: list[Server],
) -> WorkerResults:
    dbs = []
    for backend in backends:
        log(f"\n[A] worker set of {sizes.worker_set} docs on {backend.name}")
        dbs.append(WorkerDb(sizes, backend, root, servers))
    n = sizes.worker_set
    copy = Measurement(
        "memory_to_memory", f"PouchDB memory-to-memory, same {fmt_count(n)}", n, "peer"
    )
    peer = Peer(couch, dbs[-1].worker_docs, n) if couch is not None else None
    also = ", and CouchDB's own" if peer else ""
    log(f"\n[A] full pulls, one per backend each round{also}")
    _full_pulls(sizes, client, dbs, copy, peer)
    log("\n[A] no-op, incremental pulls and pushes, alternating between backends")
    for r in range(sizes.short_runs):
        for db in rotated(dbs, r):
            db.noop_pull(client)
    for r in range(sizes.runs):
        for db in rotated(dbs, r):
            db.incremental_pull(client, r)
    for db in dbs:
        db.check_edits(client)
    for i in range(sizes.runs):
        for db in rotated(dbs, i):
            db.push_once(client, i)
    for db in dbs:
        db.finish(client)
    results = WorkerResults(
        {db.name: db.measurements for db in dbs},
        [copy] + ([peer.pull] if peer else []),
        {db.name: db.seeding for db in dbs},
    )
    if peer is not None:
        results.seeding["peer"] = {"docs": len(peer.docs), "seconds": round(peer.seed_s, 3)}
    return results


def _full_pulls(
    sizes: Sizes, client: PouchClient, dbs: list[WorkerDb], copy: Measurement, peer: Peer | None
) -> None:
    """Each round: a full pull from every backend and from the peer, then a local copy."""
    last: dict[str, str] = {}
    for i in range(sizes.runs):
        steps: list[Any] = [*dbs, peer] if peer is not None else list(dbs)
        for step in rotated(steps, i):
            if isinstance(step, Peer):
                step.pull_once(client, i)
                continue
            local = step.full_pull(client, i)
            if step.name in last:
                client.call("destroy", local=last[step.name])
            last[step.name] = local
        source = last[dbs[0].name]
        with placed({"client": client.pid}):
            run = client.call("copy", source=source, target=f"copy-{i}")
        copy.add(expect(run, sizes.worker_set, copy.name))
        client.call("destroy", local=f"copy-{i}")
    for db in dbs:
        db.keep_device(client, last[db.name])


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
        doc = json.loads(json.dumps(by_id[seeded.id].doc))
        doc["_rev"] = by_id[seeded.id].rev
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
