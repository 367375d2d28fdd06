"""A proxy in front of the tests' CouchDB-API store that makes one write a 202.

Only a cluster under contention answers 202 (fewer than a quorum of copies took a
write), and a rival's write from the same revision may then stand on the other
copies.  :class:`Proxy` forwards everything to the real store; the next ``PUT`` of
an armed document is answered 202 — and a rival's write from the same revision
(``change`` on the body it was written from) is put beside it, as another copy
would hold it.  What the code under test then does is read back from the store.

pouchdb-server (CI's stand-in) answers a ``_bulk_get`` of a document asked without
a revision with its winner only, where CouchDB answers every leaf; behind the
proxy it is answered as CouchDB does, from the store's ``open_revs=all``, so the
tests of forks run in CI too.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, unquote

import aiohttp
from aiohttp import web
from couchdb_server import couch_request, db_path
from yarl import URL

# Above the hash of a body put back after a 202 (all zeros), below any CouchDB makes:
# a rival that loses to our write.  A rival that wins: "f" * 32.
RIVAL_HASH = "0" * 31 + "1"


class Proxy:
    def __init__(self, couchdb_url: str) -> None:
        self.url = couchdb_url
        self.base, self.headers = _split(couchdb_url)
        self.armed: dict[str, tuple[dict[str, Any] | None, str, bool]] = {}
        self.late: list[tuple[str, dict[str, Any]]] = []  # rivals the next read misses
        self.leaves_shown = reads_every_leaf(couchdb_url)  # else: as CouchDB (_every_leaf)
        self.session: aiohttp.ClientSession | None = None

    def arm(
        self,
        doc_id: str,
        change: dict[str, Any] | None = None,
        rev_hash: str = "",
        *,
        late: bool = False,
    ) -> None:
        """The next ``PUT`` of ``doc_id`` gets a 202; with ``change``, a rival's beside it
        — ``late``: only after the next ``_bulk_get`` (it reached a copy that lagged)."""
        self.armed[doc_id] = (change, rev_hash or RIVAL_HASH, late)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.forward)
        return app

    async def forward(self, request: web.Request) -> web.Response:
        if self.session is None:
            self.session = aiohttp.ClientSession(headers=self.headers)
        segments = request.path.split("/")
        armed, rival = None, None
        if request.method == "PUT" and len(segments) == 3:
            couch_db, doc_id = unquote(segments[1]), unquote(segments[2])
            armed = self.armed.pop(doc_id, None)
            if armed is not None and armed[0] is not None:
                rival = self._rival(couch_db, doc_id, armed[0], armed[1])
        data = await request.read()
        if request.path.endswith("/_bulk_get") and not self.leaves_shown:
            raw, status = await self._every_leaf(unquote(segments[1]), data), 200
        else:
            async with self.session.request(
                request.method,
                self.base + request.path_qs,
                data=data,
                headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
            ) as answer:
                raw, status = await answer.read(), answer.status
        if armed is not None and status == 201:
            status = 202
            if rival is not None:  # beside ours, from the revision ours was written from
                if armed[2]:
                    self.late.append((couch_db, rival))
                else:
                    self._insert(couch_db, rival)
        elif request.path.endswith("/_bulk_get") and self.late:
            for couch_db, rival in self.late:
                self._insert(couch_db, rival)
            self.late.clear()
        return web.Response(body=raw, status=status, content_type="application/json")

    async def _every_leaf(self, couch_db: str, data: bytes) -> bytes:
        """A ``_bulk_get`` answered as CouchDB answers it (every leaf of a document asked
        without a revision), from the store's ``open_revs=all``: pouchdb-server's own
        answer holds the winner only."""
        assert self.session is not None
        results = []
        for item in json.loads(data)["docs"]:
            doc_id = item["id"]
            assert "rev" not in item, "only reads of whole documents are answered here"
            where = f"{self.base}{db_path(couch_db)}/{quote(doc_id, safe='')}?open_revs=all"
            async with self.session.get(where, headers={"Accept": "application/json"}) as got:
                rows = await got.json() if got.status == 200 else []
            missing = {"id": doc_id, "rev": "undefined", "error": "not_found", "reason": "missing"}
            docs = [row for row in rows if "ok" in row] or [{"error": missing}]
            results.append({"id": doc_id, "docs": docs})
        return json.dumps({"results": results}).encode()

    def _insert(self, couch_db: str, rival: dict[str, Any]) -> None:
        body = {"docs": [rival], "new_edits": False}
        status, answer = couch_request(self.url, "POST", f"{db_path(couch_db)}/_bulk_docs", body)
        assert status == 201, answer

    def _rival(
        self, couch_db: str, doc_id: str, change: dict[str, Any], rev_hash: str
    ) -> dict[str, Any]:
        """A rival's write of ``change`` from the revision stored now (ours is from it)."""
        where = f"{db_path(couch_db)}/{quote(doc_id, safe='')}"
        status, base = couch_request(self.url, "GET", where + "?revs=true")
        assert status == 200, base
        history = base.pop("_revisions")
        start = history["start"] + 1
        return {
            **base,
            **change,
            "_rev": f"{start}-{rev_hash}",
            "_revisions": {"start": start, "ids": [rev_hash, *history["ids"]]},
        }

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


def _split(url: str) -> tuple[str, dict[str, str]]:
    """The store's base URL and the header carrying the credentials it held."""
    parts = URL(url)
    headers = {}
    if parts.user is not None:
        headers["Authorization"] = aiohttp.encode_basic_auth(parts.user, parts.password or "")
    return str(parts.with_user(None).with_password(None)).rstrip("/"), headers


def reads_every_leaf(url: str) -> bool:
    """Whether the store answers ``_bulk_get`` without revisions with every live leaf of a
    document (CouchDB) or with its winner only (pouchdb-server, CI's stand-in)."""
    status, root = couch_request(url, "GET", "/")
    return status == 200 and "express-pouchdb" not in root
