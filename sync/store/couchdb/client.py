"""The one boundary between fieldsync and CouchDB's HTTP API.

Every request to CouchDB (or Cloudant) goes through :class:`CouchClient`: one
shared ``aiohttp.ClientSession``, a bound on requests in flight, a timeout on
each, and one function (:func:`_failure`) that turns whatever went wrong —
connection refused, timeout, 5xx, 401, 409, 412, 413 — into an error of
:mod:`sync.errors`.  Nothing above this module sees an aiohttp exception or a
CouchDB status code.  Credentials never appear in an error or a log line.

https://docs.couchdb.org/en/stable/api/basics.html#http-status-codes
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from sync.config import Endpoint
from sync.errors import (
    Conflict,
    FieldsyncError,
    NotFound,
    PreconditionFailed,
    StoreError,
    StoreUnavailable,
    TooLarge,
)

# Ids of one ``_bulk_get`` request (leaves_by_id); more go as further requests sent
# together.  A page of PouchDB's (100 changes) is one request: on a loaded two-core machine
# a 10k pull took 8.3 s so, 9.7 s at 50 keys a request and 10.4 s at 25 (each request
# costs fieldsync's process CPU).
KEYS_PER_REQUEST = 100

# The revision hash of a body put back after a 202 (``CouchClient._put_back``): below
# every hash CouchDB makes, so any rival's leaf beside it wins.
LOWEST_HASH = "0" * 32

# Produces the Authorization header of a request (Cloudant's IAM bearer tokens).
HeaderSource = Callable[[], Awaitable[str]]


def path(*segments: str) -> str:
    """``/seg/seg``, each segment percent-encoded whole (database names hold ``$``, ids ``/``)."""
    return "".join("/" + quote(s, safe="") for s in segments)


class CouchClient:
    """Requests to one CouchDB server, mapped to fieldsync's errors at this one place."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        authorization: HeaderSource | None = None,
        invalidate: Callable[[], None] | None = None,
        max_in_flight: int = 32,
        timeout: float = 30.0,
    ) -> None:
        self.endpoint = endpoint
        self._authorization = authorization
        self._invalidate = invalidate
        self._slots = asyncio.Semaphore(max_in_flight)
        self._max_in_flight = max_in_flight
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        # Sees every request before it goes (tests count what a sync costs CouchDB).
        self.observe: Callable[[str, str, Mapping[str, str] | None, Any], None] | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"User-Agent": "fieldsync"}
            if self.endpoint.user is not None:
                basic = aiohttp.encode_basic_auth(self.endpoint.user, self.endpoint.password or "")
                headers["Authorization"] = basic
            connector = aiohttp.TCPConnector(limit=self._max_in_flight, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector,
                skip_auto_headers=("User-Agent",),
                headers=headers,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def json(
        self,
        method: str,
        where: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        timeout: float | None = None,
        accept: tuple[int, ...] = (200, 201, 202),
    ) -> Any:
        """One request whose answer is JSON; an answer outside ``accept`` raises ours."""
        raw, _status = await self._send(method, where, params, body, None, timeout, accept)
        return orjson.loads(raw) if raw else None

    async def leaves_by_id(
        self, couch_db: str, ids: Sequence[str], chunk: int = KEYS_PER_REQUEST
    ) -> dict[str, list[dict[str, Any]]]:
        """Every live leaf of each of ``ids``, CouchDB's winner first; absent: missing, deleted.

        ``_bulk_get`` without revisions: CouchDB answers every leaf of each document
        (open_revs=all), so a document that forked in the cluster comes whole in one
        request.  It is a quorum read in a cluster, never a lagging range, and it costs
        CouchDB much less than a keyed ``_all_docs`` with ``include_docs``: CouchDB
        3.5.0 spent 1.6-1.9 CPU seconds reading 10,000 documents 100 a request so,
        4.2-4.8 s through ``_all_docs``.  ``chunk`` ids go in each request and the
        requests go together (bounded by ``max_in_flight``).
        """

        async def one(part: Sequence[str]) -> list[dict[str, Any]]:
            body = {"docs": [{"id": i} for i in part]}
            answer = await self.json("POST", path(couch_db, "_bulk_get"), body=body)
            results: list[dict[str, Any]] = answer.get("results", [])
            return results

        unique = list(dict.fromkeys(ids))
        parts = [unique[start : start + chunk] for start in range(0, len(unique), chunk)]
        found: dict[str, list[dict[str, Any]]] = {}
        for results in await asyncio.gather(*(one(part) for part in parts)):
            for result in results:
                leaves = _live_leaves(self.endpoint, couch_db, result)
                if leaves:
                    found[str(result["id"])] = leaves
        return found

    async def with_losers(
        self, couch_db: str, winners: Sequence[Mapping[str, Any]], *, attachments: bool = False
    ) -> list[list[dict[str, Any]]]:
        """Each of ``winners`` (documents listed with ``conflicts=true``) as its live leaves:
        itself, then the losing leaves its ``_conflicts`` name, read by revision in one
        ``_bulk_get`` (``attachments``: inline).  For the commands that must reach every
        copy of a document that forked on a cluster (shredding, re-sealing); a
        ``_bulk_get`` without revisions answers every leaf on CouchDB but only the winner
        on pouchdb-server."""
        wanted = [(str(d["_id"]), rev) for d in winners for rev in d.get("_conflicts", [])]
        losing: dict[str, list[dict[str, Any]]] = {}
        if wanted:
            body = {"docs": [{"id": doc_id, "rev": rev} for doc_id, rev in wanted]}
            params = {"attachments": "true"} if attachments else None
            answer = await self.json("POST", path(couch_db, "_bulk_get"), body=body, params=params)
            for result in answer.get("results", []):
                leaves = _live_leaves(self.endpoint, couch_db, result)
                losing.setdefault(str(result["id"]), []).extend(leaves)
        return [
            [{k: v for k, v in doc.items() if k != "_conflicts"}, *losing.get(str(doc["_id"]), [])]
            for doc in winners
        ]

    async def put_status(self, where: str, body: Any) -> int:
        """``PUT`` a document; 201 (a quorum of copies took it) or 202 (fewer did)."""
        return (await self._send("PUT", where, None, body, None, None, (201, 202)))[1]

    async def put_alone(self, couch_db: str, body: Mapping[str, Any], mark: str) -> bool:
        """``PUT`` a document that only one writer may change from a revision (a claim, a
        counter, a device); whether this write stands.  ``body[mark]`` must be a fresh
        random token: it finds our leaf again.

        201 stands.  409 does not: a rival wrote first.  Nor does 202: fewer than a quorum
        of copies took it, so a rival may hold the others, and that rival may have had
        its 201 (at most one writer can: each copy takes one of two writes from the same
        revision).  Keeping a 202 that "is the only leaf" or "is CouchDB's winner", as
        read a moment later, let two writers both stand on a three-node cluster; so the
        202's write is taken back (:meth:`_take_back`) and the caller reads and decides
        again, as after a 409.
        """
        try:
            status = await self.put_status(path(couch_db, str(body["_id"])), body)
        except Conflict:
            return False
        if status == 201:
            return True
        await self._take_back(couch_db, body, mark)
        return False

    async def _take_back(self, couch_db: str, body: Mapping[str, Any], mark: str) -> None:
        """Undo a 202'd write: the document holds what it held before, or a rival's write.

        Deleting our leaf alone deleted the whole document when no rival had written (a
        device, a login counter gone).  So the revision we wrote from is first put back
        beside ours as a sibling that loses to any rival's (the lowest hash, written as
        replication writes: ``new_edits: false``), then our leaf is deleted; the sibling
        goes too once a rival's leaf is seen winning.  A create has nothing to put back."""
        doc_id = str(body["_id"])
        found = (await self.leaves_by_id(couch_db, [doc_id])).get(doc_id, [])
        ours = [leaf for leaf in found if leaf.get(mark) == body[mark]]
        if not ours:  # already built on, or not shown (pouchdb-server shows the winner)
            return
        restored = None
        if body.get("_rev") is not None:
            restored = await self._put_back(couch_db, doc_id, str(body["_rev"]))
            if restored is None and len(found) == 1:
                # nothing to put back (compacted away): deleting ours would delete the
                # document; it stays, a conflict the next reader of all leaves sees
                return
        await self.delete_leaves(couch_db, doc_id, ours)
        if restored is not None:
            after = (await self.leaves_by_id(couch_db, [doc_id])).get(doc_id, [])
            if after and after[0]["_rev"] != restored:  # a rival's write wins: it alone
                await self.delete_leaves(couch_db, doc_id, [{"_rev": restored}])

    async def _put_back(self, couch_db: str, doc_id: str, rev: str) -> str | None:
        """Write revision ``rev``'s body again as its child with the lowest possible hash
        (CouchDB's winner is the longest branch, then the highest hash: any rival writing
        from ``rev`` wins over it); its revision, or None if ``rev``'s body is gone."""
        try:
            base = await self.json(
                "GET", path(couch_db, doc_id), params={"rev": rev, "revs": "true"}
            )
        except NotFound:
            return None
        history = base.pop("_revisions", None)
        if not isinstance(history, dict) or not history.get("ids"):
            return None
        start = int(history["start"]) + 1
        restored = f"{start}-{LOWEST_HASH}"
        base.update(
            _rev=restored, _revisions={"start": start, "ids": [LOWEST_HASH, *history["ids"]]}
        )
        answer = await self.json(
            "POST", path(couch_db, "_bulk_docs"), body={"docs": [base], "new_edits": False}
        )
        refused = [row for row in answer if isinstance(row, dict) and "error" in row]
        if refused:
            raise StoreError(f"CouchDB refused to put {doc_id} back: {refused[0]['error']}")
        return restored

    async def delete_leaves(
        self, couch_db: str, doc_id: str, leaves: Sequence[Mapping[str, Any]]
    ) -> None:
        """Delete these leaves of a document, each by its ``_rev``; one changed or deleted
        meanwhile (409, 404) is left as it is."""
        for leaf in leaves:
            with contextlib.suppress(Conflict, NotFound):
                params = {"rev": str(leaf["_rev"])}
                await self.json("DELETE", path(couch_db, doc_id), params=params)

    async def raw(self, where: str, *, params: Mapping[str, str] | None = None) -> bytes:
        """``GET`` an answer as bytes (an attachment)."""
        data, _ = await self._send("GET", where, params, None, None, None, (200,))
        return data

    async def status(self, method: str, where: str) -> int:
        """The status of a request whose answer only matters by its code (``HEAD``)."""
        accept = tuple(range(200, 600))
        return (await self._send(method, where, None, None, None, None, accept))[1]

    async def _send(
        self,
        method: str,
        where: str,
        params: Mapping[str, str] | None,
        body: Any,
        data: bytes | None,
        timeout: float | None,
        accept: tuple[int, ...],
    ) -> tuple[bytes, int]:
        if self.observe is not None:
            self.observe(method, where, params, body)
        for attempt in (1, 2):
            headers = {"Accept": "application/json"}
            if self._authorization is not None:
                headers["Authorization"] = await self._authorization()
            if body is not None:
                data, headers["Content-Type"] = orjson.dumps(body), "application/json"
            try:
                async with self._slots:
                    session = self._open()
                    limit = aiohttp.ClientTimeout(total=timeout or self._timeout, connect=10)
                    async with session.request(
                        method,
                        self.endpoint.base + where,
                        params=params,
                        data=data,
                        headers=headers,
                        timeout=limit,
                    ) as answer:
                        raw = await answer.read()
                        code = answer.status
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise _unreachable(self.endpoint, exc) from exc
            if code == 401 and self._invalidate is not None and attempt == 1:
                self._invalidate()  # an IAM token that expired early: fetch one and retry
                continue
            if code in accept:
                return raw, code
            raise _failure(self.endpoint, method, where, code, raw)
        raise AssertionError("unreachable")


def _live_leaves(endpoint: Endpoint, couch_db: str, result: Mapping[str, Any]) -> list[Any]:
    """The live leaves of one ``_bulk_get`` result, the winner first (CouchDB's rule: the
    highest revision number, then the highest hash).  A document missing is no leaves;
    any other error is CouchDB failing, never a document taken for missing."""
    leaves = []
    for item in result.get("docs", []):
        if "ok" in item:
            if not item["ok"].get("_deleted"):
                leaves.append(item["ok"])
            continue
        error = item.get("error")
        if error is None:  # pouchdb-server (the tests' CouchDB-API server) answers a
            continue  # missing or deleted document as {}: CouchDB always names the error
        kind, reason = (
            (error.get("error"), error.get("reason")) if isinstance(error, dict) else (error, "")
        )
        if kind != "not_found":
            raise StoreUnavailable(
                f"CouchDB at {endpoint.shown} could not read {couch_db}/{result.get('id')}: "
                f"{kind}: {reason}; try again shortly."
            )
    return sorted(leaves, key=_rank, reverse=True)


def _rank(doc: Mapping[str, Any]) -> tuple[int, str]:
    number, _, digest = str(doc["_rev"]).partition("-")
    return int(number), digest


def _unreachable(endpoint: Endpoint, exc: BaseException) -> StoreUnavailable:
    kind = "timed out" if isinstance(exc, TimeoutError) else "cannot be reached"
    detail = type(exc).__name__
    return StoreUnavailable(f"CouchDB at {endpoint.shown} {kind} ({detail}); try again shortly.")


def _failure(endpoint: Endpoint, method: str, where: str, code: int, raw: bytes) -> FieldsyncError:
    """CouchDB's answer ``code`` as one of our errors (its reason kept, ours added)."""
    reason = _reason(raw)
    if code == 404:
        return NotFound(_only_reason(raw) or "missing")
    if code == 409:
        return Conflict()
    if code == 412:
        return PreconditionFailed(reason or "precondition failed", error="file_exists")
    if code == 413:
        return TooLarge(f"CouchDB refused a request as too large: {reason}")
    if code in (401, 403):
        return StoreUnavailable(
            f"CouchDB at {endpoint.shown} refused fieldsync's credentials ({code}): "
            "check FIELDSYNC_COUCHDB_URL / _USER / _PASSWORD or the Cloudant API key."
        )
    if code >= 500 or code == 429:
        return StoreUnavailable(f"CouchDB at {endpoint.shown} answered {code}: {reason}")
    return StoreError(f"CouchDB refused {method} {where.split('?')[0]} ({code}): {reason}")


def _only_reason(raw: bytes) -> str:
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ""
    return (
        str(answer.get("reason") or answer.get("error") or "") if isinstance(answer, dict) else ""
    )


def _reason(raw: bytes) -> str:
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:200].decode("utf-8", "replace")
    if isinstance(answer, dict):
        return f"{answer.get('error', '')}: {answer.get('reason', '')}".strip(": ")
    return str(answer)[:200]
