"""The document stores the bench measures side by side: the embedded SQLite store and CouchDB.

``BENCH_BACKEND=sqlite|couchdb|both``. Unset, it is ``both`` when a CouchDB is at
hand: ``BENCH_COUCHDB_URL`` (an admin URL with its credentials, e.g.
``http://admin:pw@127.0.0.1:5984``), else the tests' CouchDB-API server
(``FIELDSYNC_TEST_COUCHDB_URL``, else ``pouchdb-server`` in memory, started here as the
test fixtures start it); ``sqlite`` alone when neither can be had.

Every CouchDB database of the bench is named ``BASE TAG _ ...``: ``BASE`` is
``FIELDSYNC_COUCHDB_PREFIX`` (default ``fsbench_``), ``TAG`` names one server's
store (``w`` for phase A, ``s10k`` ... for phase B) or ``peer``. They are deleted
before they are made and after the run (unless ``BENCH_KEEP=1``).

The users, places and data keys stay in the data dir's SQLite file on both
backends (issue 10 moves only the documents), so both seed places and keys with
:class:`bench.seed.Seeder`; the documents go to the store under test.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from bench import couch_seed, cpu
from bench.seed import Seeded, Seeder
from sync.datakeys.couchdb import CouchDataKeys
from tests.couchdb_server import (
    POUCHDB_SERVER,
    couch_request,
    couchdb_server,
    db_path,
    delete_databases,
)

ENV_BACKEND = "BENCH_BACKEND"
ENV_URL = "BENCH_COUCHDB_URL"
ENV_PREFIX = "FIELDSYNC_COUCHDB_PREFIX"
DEFAULT_PREFIX = "fsbench_"
INDEX_TIMEOUT = 3600.0


class DocSeeder(Protocol):
    """Places, keys and documents straight into one server's stores."""

    def add_places(self, places: Sequence[tuple[str, str | None]]) -> None: ...

    def seed(
        self, docs: Iterable[dict[str, Any]], keep: frozenset[str] = frozenset()
    ) -> tuple[int, list[Seeded]]: ...

    def finish(self) -> dict[str, Any]:
        """Make the seeded documents ready to serve; what that took and how big they are."""
        ...


class Backend(Protocol):
    name: str

    def settings(self, tag: str) -> dict[str, str]:
        """The environment of a ``fieldsync serve`` whose documents are in this store."""
        ...

    def prepare(self, tag: str) -> None:
        """An empty store for ``tag``, before its server starts."""
        ...

    def seeder(self, data_dir: Path, tag: str) -> AbstractContextManager[DocSeeder]: ...

    def pids(self) -> dict[str, int | None]:
        """The store's own processes, by name, whose CPU a run counts (none: in the server)."""
        ...


# -- SQLite ------------------------------------------------------------------------------
class SqliteSeeding:
    def __init__(self, seeder: Seeder) -> None:
        self.seeder = seeder

    def add_places(self, places: Sequence[tuple[str, str | None]]) -> None:
        self.seeder.add_places(places)

    def seed(
        self, docs: Iterable[dict[str, Any]], keep: frozenset[str] = frozenset()
    ) -> tuple[int, list[Seeded]]:
        return self.seeder.seed(docs, keep=keep)

    def finish(self) -> dict[str, Any]:
        self.seeder.close()
        # Let the kernel write back the seed's dirty pages first: otherwise the pulls'
        # checkpoint commits (fsync) queue behind gigabytes of the bench's own writes.
        started = time.perf_counter()
        os.sync()
        size = self.seeder.path.stat().st_size
        return {"sync_s": round(time.perf_counter() - started, 3), "file_mib": size / 2**20}


class SqliteBackend:
    name = "sqlite"

    def settings(self, tag: str) -> dict[str, str]:
        return {}

    def prepare(self, tag: str) -> None:
        pass

    def pids(self) -> dict[str, int | None]:
        return {}

    @contextmanager
    def seeder(self, data_dir: Path, tag: str) -> Iterator[DocSeeder]:
        seeder = Seeder(data_dir)
        try:
            yield SqliteSeeding(seeder)
        finally:
            seeder.close()


# -- CouchDB -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Couch:
    """A CouchDB (or CouchDB-API server) and the bench's database-name prefix on it."""

    url: str  # admin URL, credentials included
    base: str  # every database of the bench starts with it
    welcome: dict[str, Any]  # its answer to GET /

    @property
    def description(self) -> str:
        """E.g. ``CouchDB 3.5.0 (git 11f0d36) at http://127.0.0.1:5984``."""
        w = self.welcome
        if "couchdb" in w:
            product = "CouchDB"
        else:
            product = next((k for k, v in w.items() if v == "Welcome"), "a CouchDB-API server")
        extra = [f"git {w['git_sha']}"] if w.get("git_sha") else []
        extra += [f"vendor {w['vendor']['name']}"] if isinstance(w.get("vendor"), dict) else []
        shown = f" ({', '.join(extra)})" if extra else ""
        return f"{product} {w.get('version', '?')}{shown} at {without_credentials(self.url)}"

    def prefix(self, tag: str) -> str:
        return f"{self.base}{tag}_"

    def remote(self, database: str) -> dict[str, Any]:
        """A PouchDB driver reference to ``database``, as CouchDB's admin."""
        parts = urlsplit(self.url)
        return {
            "url": without_credentials(self.url) + db_path(database),
            "username": parts.username or "",
            "password": parts.password or "",
            "headers": {},
        }

    def delete(self, tag: str) -> list[str]:
        return delete_databases(self.url, self.prefix(tag))

    def pids(self) -> dict[str, int | None]:
        """CouchDB's process when it runs on this machine (found by its port), for its CPU."""
        parts = urlsplit(self.url)
        local = parts.hostname in ("127.0.0.1", "localhost", "::1")
        return {"couchdb": cpu.listening_pid(parts.port or 5984) if local else None}

    def request(self, method: str, where: str, body: Any = None) -> tuple[int, Any]:
        return couch_request(self.url, method, where, body)


def without_credentials(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")).rstrip("/")


class CouchSeeding:
    def __init__(self, couch: Couch, seeder: Seeder, tag: str) -> None:
        self.couch, self.seeder, self.tag = couch, seeder, tag
        self.requests = 0

    def add_places(self, places: Sequence[tuple[str, str | None]]) -> None:
        self.seeder.add_places(places)
        asyncio.run(self._share_keys())

    async def _share_keys(self) -> None:
        """The seeder made the places' data keys in the data dir; a server on CouchDB reads
        them from ``<prefix>keys`` (sync.datakeys): the same keys go there, still sealed."""
        client = couch_seed.open_client(self.couch.url)
        try:
            store = CouchDataKeys.for_prefix(client, self.couch.prefix(self.tag))
            keys = self.seeder.data_keys()
            for start in range(0, len(keys), 50):
                await asyncio.gather(
                    *(
                        store.add_async(k.place, k.version, k.wrapped, k.created)
                        for k in keys[start : start + 50]
                    )
                )
        finally:
            await client.close()

    def seed(
        self, docs: Iterable[dict[str, Any]], keep: frozenset[str] = frozenset()
    ) -> tuple[int, list[Seeded]]:
        return asyncio.run(self._seed(docs, keep))

    async def _seed(
        self, docs: Iterable[dict[str, Any]], keep: frozenset[str]
    ) -> tuple[int, list[Seeded]]:
        client = couch_seed.open_client(self.couch.url)
        try:
            seeding = couch_seed.CouchSeeder(self.seeder, client, self.couch.prefix(self.tag))
            done = await seeding.seed(docs, keep)
            self.requests += seeding.requests
            await self._share_keys()  # keys made while sealing (places added another way)
            return done
        finally:
            await client.close()

    def finish(self) -> dict[str, Any]:
        """Build the meta database's views now, as a running server keeps them built; then
        wait for CouchDB's compactions of the seeded databases to end."""
        prefix = self.couch.prefix(self.tag)
        started = time.perf_counter()
        asyncio.run(couch_seed.build_views(self.couch.url, prefix))
        index_s = time.perf_counter() - started
        waited = asyncio.run(couch_seed.quiet(self.couch.url, prefix))
        quiet_s = time.perf_counter() - started - index_s
        sizes = {}
        for name, database in couch_seed.databases(self.couch.prefix(self.tag)).items():
            status, info = self.couch.request("GET", db_path(database))
            if status == 200:
                file = (info.get("sizes") or {}).get("file") or info.get("disk_size")
                sizes[name] = {"docs": info.get("doc_count"), "mib": (file or 0) / 2**20}
        return {
            "requests": self.requests,
            "index_s": round(index_s, 3),
            "background_s": round(quiet_s, 3),
            "background": ",".join(waited) or "none",
            "databases": sizes,
        }


class CouchBackend:
    name = "couchdb"

    def __init__(self, couch: Couch) -> None:
        self.couch = couch

    def settings(self, tag: str) -> dict[str, str]:
        return {"FIELDSYNC_COUCHDB_URL": self.couch.url, ENV_PREFIX: self.couch.prefix(tag)}

    def pids(self) -> dict[str, int | None]:
        return self.couch.pids()

    def prepare(self, tag: str) -> None:
        self.couch.delete(tag)  # left by an earlier run stopped half-way
        asyncio.run(couch_seed.create_db(self.couch.url, self.couch.prefix(tag)))

    @contextmanager
    def seeder(self, data_dir: Path, tag: str) -> Iterator[DocSeeder]:
        seeder = Seeder(data_dir)
        try:
            yield CouchSeeding(self.couch, seeder, tag)
        finally:
            seeder.close()


# -- choosing ------------------------------------------------------------------------------
def chosen() -> str | None:
    """``sqlite``, ``couchdb``, ``both``, or None: both if a CouchDB can be had."""
    value = os.environ.get(ENV_BACKEND, "").strip().lower() or None
    if value not in (None, "sqlite", "couchdb", "both"):
        raise SystemExit(f"{ENV_BACKEND} must be sqlite, couchdb or both, not {value!r}")
    return value


def couch_at_hand() -> bool:
    return bool(os.environ.get(ENV_URL) or os.environ.get("FIELDSYNC_TEST_COUCHDB_URL")) or (
        POUCHDB_SERVER.exists()
    )


@contextmanager
def opened() -> Iterator[tuple[list[Backend], Couch | None]]:
    """The backends of this run, and the CouchDB they use (None on SQLite alone)."""
    choice = chosen()
    if choice is None:
        choice = "both" if couch_at_hand() else "sqlite"
    backends: list[Backend] = [SqliteBackend()] if choice in ("sqlite", "both") else []
    if choice == "sqlite":
        yield backends, None
        return
    with _couch() as couch:
        yield [*backends, CouchBackend(couch)], couch


@contextmanager
def _couch() -> Iterator[Couch]:
    base = os.environ.get(ENV_PREFIX) or DEFAULT_PREFIX
    configured = os.environ.get(ENV_URL)
    with (
        _given(configured) if configured else couchdb_server()
    ) as url:  # the tests' server: pouchdb-server unless FIELDSYNC_TEST_COUCHDB_URL
        status, welcome = couch_request(url, "GET", "/")
        if status != 200 or not isinstance(welcome, dict):
            raise SystemExit(f"CouchDB at {without_credentials(url)}: GET / answered {status}")
        status, answer = couch_request(url, "GET", "/_all_dbs")
        if status != 200:
            raise SystemExit(f"CouchDB at {without_credentials(url)} needs an admin URL: {answer}")
        yield Couch(url.rstrip("/"), base, welcome)


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url.rstrip("/")
