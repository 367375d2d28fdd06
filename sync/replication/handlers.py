"""Handlers for paths under ``/{db}``: each parses, calls one step, renders.

Signature: ``(request, replication, caller, target) -> response``.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from contextlib import suppress
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from aiohttp import web

from sync import activity, metrics
from sync.auth import user_ctx
from sync.errors import (
    BadRequest,
    Conflict,
    FieldsyncError,
    Forbidden,
    NotFound,
    TooLarge,
    TooManyRequests,
    Unauthorized,
)
from sync.headers import attachment_headers, served_type
from sync.http import flag, integer, json_param, json_response, read_json, read_object
from sync.replication import design, revtree
from sync.replication.changes import ChangesPage, ChangesQuery, Token, parse_doc_ids
from sync.replication.context import Caller
from sync.replication.documents import RefusedDocument, check_depth, check_doc_id, check_shape
from sync.replication.reads import ReadOptions
from sync.replication.selector import Selector
from sync.store.base import AllDocsQuery, WriteResult

log = structlog.get_logger()

if TYPE_CHECKING:
    from sync.replication.routes import Replication, Target

__all__ = ["user_ctx"]


def _admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise Forbidden("You are not a server admin.")


def read_options(request: web.Request) -> ReadOptions:
    return ReadOptions(
        revs=flag(request, "revs"),
        revs_info=flag(request, "revs_info"),
        conflicts=flag(request, "conflicts"),
        deleted_conflicts=flag(request, "deleted_conflicts"),
        attachments=flag(request, "attachments"),
        latest=flag(request, "latest"),
        local_seq=flag(request, "local_seq"),
    )


# -- databases -------------------------------------------------------------------
async def db_info(
    request: web.Request, rep: Replication, caller: Caller, t: Target
) -> web.Response:
    info, update_seq = await rep.feed.described(t.db, caller)
    return json_response(
        {
            "db_name": info.name,
            "doc_count": info.doc_count,
            "doc_del_count": info.doc_del_count,
            "update_seq": update_seq,
            "purge_seq": 0,
            "compact_running": False,
            "instance_start_time": info.instance_start_time,
            "disk_format_version": 8,
            "sizes": {"file": 0, "external": 0, "active": 0},
            "props": {},
        }
    )


async def create_db(
    request: web.Request, rep: Replication, caller: Caller, t: Target
) -> web.Response:
    _admin(caller)
    await rep.parts.store.create_db(t.db)
    return json_response({"ok": True}, status=201)


async def delete_db(
    request: web.Request, rep: Replication, caller: Caller, t: Target
) -> web.Response:
    _admin(caller)
    if t.db == rep.config.db_name:
        raise Forbidden(f"The deployment database {t.db!r} cannot be deleted over HTTP.")
    await rep.parts.store.delete_db(t.db)
    rep.parts.notifier.notify(t.db)
    return json_response({"ok": True})


async def ensure_full_commit(
    request: web.Request, rep: Replication, caller: Caller, t: Target
) -> web.Response:
    await rep.parts.store.db_info(t.db, frozenset())
    return json_response({"ok": True, "instance_start_time": "0"}, status=201)


async def get_revs_limit(
    request: web.Request, rep: Replication, caller: Caller, t: Target
) -> web.Response:
    info = await rep.parts.store.db_info(t.db, frozenset())
    return json_response(info.revs_limit)


async def put_revs_limit(
    request: web.Request, rep: Replication, caller: Caller, t: Target
) -> web.Response:
    _admin(caller)
    limit = await read_json(request)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise BadRequest("revs_limit must be a positive integer")
    await rep.parts.store.set_revs_limit(t.db, limit)
    return json_response({"ok": True})


async def compact(
    request: web.Request, rep: Replication, caller: Caller, t: Target
) -> web.Response:
    _admin(caller)
    await rep.parts.store.db_info(t.db, frozenset())
    return json_response({"ok": True}, status=202)


async def get_security(
    request: web.Request, rep: Replication, caller: Caller, t: Target
) -> web.Response:
    await rep.parts.store.db_info(t.db, frozenset())
    return json_response({})


# -- changes ---------------------------------------------------------------------
async def changes(
    request: web.Request, rep: Replication, caller: Caller, t: Target
) -> web.StreamResponse:
    body = await read_object(request) if request.method == "POST" and request.can_read_body else {}
    await design.check_filter(rep.reader, t.db, caller, request.query)
    query = _changes_query(request, body, lambda raw: rep.feed.parse_since(raw, caller))
    _check_count(rep, len(query.doc_ids or ()), "_changes", "doc_ids")
    feed = request.query.get("feed", "normal")
    if feed not in ("normal", "longpoll"):
        raise BadRequest(f"feed={feed} is not supported; use normal or longpoll")
    if feed == "longpoll" and query.descending:
        raise BadRequest("descending=true is only supported with feed=normal, not longpoll")
    if feed == "normal":
        page = await rep.feed.page(t.db, caller, query)
        rep.parts.store.expect_more(t.db, caller.name, page.pending > 0)
        return json_response(
            {"results": page.results, "last_seq": page.last_seq, "pending": page.pending}
        )
    return await _longpoll(request, rep, caller, t, query)


async def _longpoll(
    request: web.Request, rep: Replication, caller: Caller, t: Target, query: ChangesQuery
) -> web.StreamResponse:
    """Answer when the caller's set changes, at the timeout, or at once on shutdown.

    Only a write in one of the caller's places wakes it (:mod:`sync.replication.notifier`),
    or a change of users and places (each waiter checks its caller again).  A heartbeat
    reads again only where a write might not have woken it: a database whose writes are
    not all announced, or a read after a wake that found nothing (a copy behind)."""
    timeout_ms = integer(request, "timeout", int(rep.config.longpoll_max_seconds * 1000)) or 0
    heartbeat_ms = _heartbeat_ms(request)
    deadline = asyncio.get_running_loop().time() + min(
        timeout_ms / 1000, rep.config.longpoll_max_seconds
    )
    notifier = rep.parts.notifier
    rep.parts.store.expect_more(t.db, caller.name, False)  # live: every save goes to the store
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    quiet: str | int = 0  # the last_seq of the last page read with no changes
    loop = asyncio.get_running_loop()
    woke = False  # the next read follows a wake
    # A client gone away is no error: the write that finds the connection closed ends it.
    with suppress(ConnectionResetError):
        try:
            while True:
                with notifier.watch(t.db, caller.scope.read) as woken:  # before the read
                    read_at = loop.time()
                    page = await rep.feed.page(t.db, caller, query)
                    if page.results or deadline <= loop.time() or notifier.closed:
                        break
                    quiet = page.last_seq
                    query = replace(query, since=rep.feed.parse_since(quiet, caller))
                    if not response.prepared:  # a first read that fails is an error answer
                        await response.prepare(request)
                    # A wake whose read found nothing: read again at the next heartbeat.
                    announced = None if woke else partial(notifier.announced, t.db, read_at)
                    woke = await _until_read_again(
                        response, woken, deadline, heartbeat_ms, announced
                    )
                    if not woke and announced is not None and announced():
                        break  # its end, and nothing it could see was written: this read stands
                refreshed = await _still_allowed(request, rep)
                if refreshed is None:  # revoked while waiting: nothing more, not even ids
                    page = ChangesPage([], page.last_seq, 0)
                    break
                caller = refreshed
            if rep.parts.audit is not None:  # headers may have gone out: the reads go to disk
                await rep.parts.audit.flush()
        except FieldsyncError as exc:
            if not response.prepared:
                raise
            # The status line went out, so no error answer can follow: end this one with no
            # changes, where the last read found none (the phone asks again at once, and that
            # request gets the error itself).  Left open, the answer would hang the phone's
            # live sync (CouchDB away while it waited).
            log.warning("longpoll_ended_early", error=exc.error, reason=exc.reason)
            page = ChangesPage([], quiet, 0)
        if not response.prepared:
            await response.prepare(request)
        answer = {"results": page.results, "last_seq": page.last_seq, "pending": page.pending}
        await response.write(orjson.dumps(answer))
        await response.write_eof()
    return response


async def _until_read_again(
    response: web.StreamResponse,
    woken: asyncio.Event,
    deadline: float,
    heartbeat_ms: int,
    every_write_wakes: Callable[[], bool] | None,
) -> bool:
    """Wait for a wake (True), the deadline, or a heartbeat after which to read again.

    Heartbeats keep the connection open; each is also a read unless every write that
    the caller could see since the last read would have woken it.  Nothing but the
    heartbeat is sent meanwhile, so the caller need not be checked again until a read."""
    loop = asyncio.get_running_loop()
    while True:
        remaining = deadline - loop.time()
        wait = remaining if not heartbeat_ms else min(remaining, heartbeat_ms / 1000)
        try:
            await asyncio.wait_for(woken.wait(), wait)
            return True
        except TimeoutError:
            if heartbeat_ms:
                await response.write(b"\n")
        if deadline <= loop.time() or every_write_wakes is None or not every_write_wakes():
            return False


async def _still_allowed(request: web.Request, rep: Replication) -> Caller | None:
    """The caller as of now (scope and device checked again), None if refused.

    A long poll lasts up to a minute; a phone marked lost, a password changed or a
    scope narrowed in that time must take effect before anything more is sent.
    The status line has gone out already, so a refusal ends the answer empty and
    the client's next request gets the error itself.
    """
    try:
        return await rep.auth.require(request)
    except (Unauthorized, Forbidden, TooManyRequests):
        return None


def _heartbeat_ms(request: web.Request) -> int:
    """``heartbeat=N`` milliseconds; ``heartbeat=true`` means CouchDB's default of 60 s."""
    if request.query.get("heartbeat") == "true":
        return 60_000
    return integer(request, "heartbeat", 0) or 0


def _changes_query(
    request: web.Request, body: dict[str, Any], parse: Callable[[object], Token]
) -> ChangesQuery:
    """The feed's parameters; any filter but the built-in ones was refused by ``check_filter``."""
    descending = flag(request, "descending")
    raw_since = request.query.get("since", "0")
    # CouchDB ignores since when descending
    since = None if descending or raw_since == "now" else parse(raw_since)
    filter_name = request.query.get("filter")
    doc_ids = None
    selector = None
    if filter_name == "_doc_ids" or "doc_ids" in request.query or "doc_ids" in body:
        doc_ids = parse_doc_ids(body.get("doc_ids", request.query.get("doc_ids", "[]")))
    if filter_name == "_selector":
        if "selector" not in body:
            raise BadRequest("filter=_selector needs a selector in the request body")
        selector = Selector.parse(body["selector"])
    return ChangesQuery(
        since=since,
        limit=integer(request, "limit", 10_000_000) or 1,  # CouchDB: 0 acts like 1
        style_all_docs=request.query.get("style") == "all_docs",
        include_docs=flag(request, "include_docs"),
        descending=descending,
        doc_ids=doc_ids,
        selector=selector,
        design_only=filter_name == "_design",
        read=ReadOptions(
            conflicts=flag(request, "conflicts"), attachments=flag(request, "attachments")
        ),
    )


# -- bulk endpoints ------------------------------------------------------------
async def revs_diff(
    request: web.Request, rep: Replication, caller: Caller, t: Target
) -> web.Response:
    body = await read_object(request)
    _check_count(rep, len(body), "_revs_diff", "document ids")
    return json_response(await rep.reader.revs_diff(t.db, caller, body))


async def bulk_get(
    request: web.Request, rep: Replication, caller: Caller, t: Target
) -> web.Response:
    body = await read_object(request)
    docs = body.get("docs")
    if not isinstance(docs, list):
        raise BadRequest('_bulk_get needs a "docs" array')
    _check_count(rep, len(docs), "_bulk_get", "documents")
    opts = read_options(request)
    answer = await rep.reader.bulk_get(t.db, caller, docs, opts)
    found = sum("ok" in one for item in answer["results"] for one in item["docs"])
    _served(request, caller, found)
    return json_response(answer)


async def bulk_docs(
    request: web.Request, rep: Replication, caller: Caller, t: Target
) -> web.Response:
    body = await _pushed_object(request, rep, caller)
    docs = body.get("docs")
    if not isinstance(docs, list):
        raise BadRequest('_bulk_docs needs a "docs" array')
    _check_count(rep, len(docs), "_bulk_docs", "documents")
    new_edits = body.get("new_edits", True)
    if not isinstance(new_edits, bool):
        raise BadRequest("new_edits must be true or false")
    await rep.parts.store.db_info(t.db, frozenset())
    for doc in docs:  # CouchDB refuses the whole request for these, before any write
        _shape_checked(rep, caller, doc, new_edits)
    sized = [_size_checked(rep, d) for d in docs]
    results = await _write_with_locals(rep, caller, t.db, sized, new_edits)
    for doc, result in zip(docs, results, strict=True):
        _note_refused(rep, caller, doc, result)
    rendered = [_result(r) for r in results if not (new_edits is False and r.error is None)]
    written = sum(r.error is None and not _is_local(d) for d, r in zip(docs, results, strict=True))
    metrics.documents(request, caller.user.role.value, "received", written)
    activity.received(request.app, caller.name, caller.device, written)
    return json_response(rendered, status=201)


# -- refused pushes (sync.refusals): noted for the supervisor, never failing the push -----
async def _pushed_object(request: web.Request, rep: Replication, caller: Caller) -> dict[str, Any]:
    """The pushed body; one that is not a JSON object is noted as unreadable, then refused."""
    try:
        return await read_object(request)
    except BadRequest as exc:
        if rep.refusals is not None:
            rep.refusals.unreadable(caller.name, caller.device, await request.read(), exc.reason)
        raise


def _shape_checked(rep: Replication, caller: Caller, doc: Any, new_edits: bool) -> None:
    """``check_shape``; the document it refuses (and so the whole request) is noted first."""
    try:
        check_shape(doc, new_edits=new_edits)
    except RefusedDocument as exc:
        _note_refused(rep, caller, doc, WriteResult("", "", exc))
        raise


def _note_refused(rep: Replication, caller: Caller, doc: Any, result: WriteResult) -> None:
    if rep.refusals is not None and result.error is not None and not _is_local(doc):
        rep.refusals.note(caller.name, caller.device, doc, result.doc_id, result.error)


def _served(request: web.Request, caller: Caller, count: int) -> None:
    metrics.documents(request, caller.user.role.value, "served", count)


def _received(request: web.Request, caller: Caller, answer: web.Response) -> web.Response:
    """``answer`` to a write of one document (it raises when the write failed)."""
    metrics.documents(request, caller.user.role.value, "received", 1)
    activity.received(request.app, caller.name, caller.device, 1)
    return answer


def _check_count(rep: Replication, count: int, route: str, what: str) -> None:
    """One request may name at most ``max_bulk_docs`` documents, refused before any work (413).

    A single request of 100k documents holds the writer (or a reader) for seconds,
    during which every other phone waits; PouchDB sends batches of 100.
    """
    limit = rep.config.max_bulk_docs
    if count > limit:
        raise TooLarge(
            f"{route} accepts at most {limit} {what} per request ({count} sent); "
            "send them in smaller batches."
        )


def _size_checked(rep: Replication, doc: Any) -> Any:
    if len(orjson.dumps(doc)) > rep.config.max_document_bytes:
        doc_id = doc.get("_id") if isinstance(doc, dict) else None
        error = TooLarge(f"Document exceeds the limit of {rep.config.max_document_bytes} bytes.")
        return WriteResult(doc_id if isinstance(doc_id, str) else "", "", error)
    return doc


def _is_local(doc: Any) -> bool:
    return isinstance(doc, dict) and str(doc.get("_id", "")).startswith("_local/")


async def _write_with_locals(
    rep: Replication, caller: Caller, db: str, docs: list[Any], new_edits: bool
) -> list[WriteResult]:
    """Replicated documents go to the writer; ``_local`` ones to the caller's local docs."""
    early: dict[int, WriteResult] = {}
    for i, doc in enumerate(docs):
        if isinstance(doc, WriteResult):
            early[i] = doc
        elif _is_local(doc):
            early[i] = await _write_local(rep, caller, db, doc)
    rest = [d for i, d in enumerate(docs) if i not in early]
    written = iter(await rep.writer.bulk_docs(db, caller, rest, new_edits) if rest else [])
    return [early[i] if i in early else next(written) for i in range(len(docs))]


async def _write_local(
    rep: Replication, caller: Caller, db: str, doc: dict[str, Any]
) -> WriteResult:
    """A ``_local`` document in a write batch: CouchDB keeps it out of the replicated set."""
    doc_id = doc["_id"]
    try:
        return WriteResult(
            doc_id, await _store_local(rep, caller, db, doc_id, doc.get("_rev"), doc)
        )
    except FieldsyncError as exc:
        return WriteResult(doc_id, "", exc)


async def _store_local(
    rep: Replication, caller: Caller, db: str, doc_id: str, rev: str | None, doc: dict[str, Any]
) -> str:
    """Write (sealed) or delete the caller's ``_local`` document; the revision CouchDB
    answers (a delete: ``0-0``, as CouchDB does for a ``_deleted: true`` write)."""
    if doc.get("_deleted") is True:
        await rep.parts.store.delete_local(db, caller.name, doc_id, rev)
        return "0-0"
    sealed = await rep.parts.seal_local(db, caller.name, doc_id, _local_body(doc))
    return await rep.parts.store.put_local(db, caller.name, doc_id, rev, sealed)


def _local_body(doc: dict[str, Any]) -> dict[str, Any]:
    """What a ``_local`` document keeps: CouchDB drops ``_attachments`` and ``_revisions``
    (a ``_local`` document has no revision history), and ``_id``, ``_rev``."""
    return {k: v for k, v in doc.items() if k not in _NOT_KEPT_LOCALLY}


_NOT_KEPT_LOCALLY = frozenset({"_id", "_rev", "_attachments", "_revisions"})


def _result(result: WriteResult) -> dict[str, Any]:
    if result.error is None:
        return {"ok": True, "id": result.doc_id, "rev": result.rev}
    return {"id": result.doc_id, "error": result.error.error_token, "reason": result.error.reason}


async def all_docs(
    request: web.Request, rep: Replication, caller: Caller, t: Target
) -> web.Response:
    body = await read_object(request) if request.method == "POST" else {}
    keys = body.get("keys", json_param(request, "keys"))
    if keys is not None and not isinstance(keys, list):
        raise BadRequest("keys must be an array")
    _check_count(rep, len(keys or ()), "_all_docs", "keys")
    check_depth(keys, what="keys")  # each key is sent back in its row
    key = _key(request, body, "key")
    start = _key(request, body, "startkey", "start_key")
    end = _key(request, body, "endkey", "end_key")
    if keys and (key, start, end) != (None, None, None):
        raise BadRequest(
            "`keys` is incompatible with `key`, `start_key` and `end_key`",
            error="query_parse_error",
        )
    query = AllDocsQuery(
        start=key if key is not None else start,
        end=key if key is not None else end,
        inclusive_end=flag(request, "inclusive_end", True),
        descending=flag(request, "descending"),
        limit=integer(request, "limit"),
        skip=integer(request, "skip", 0) or 0,
    )
    include_docs = flag(request, "include_docs") or body.get("include_docs") is True
    opts = ReadOptions(
        conflicts=flag(request, "conflicts"), attachments=flag(request, "attachments")
    )
    answer = await rep.reader.all_docs(t.db, caller, query, keys, include_docs, opts)
    if include_docs:
        _served(request, caller, sum(row.get("doc") is not None for row in answer["rows"]))
    if flag(request, "update_seq"):
        answer["update_seq"] = (await rep.parts.store.db_info(t.db, frozenset())).update_seq
    return json_response(answer)


def _key(request: web.Request, body: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = body.get(name, json_param(request, name))
        if value is not None:
            if not isinstance(value, str):
                raise BadRequest(f"{name} must be a string (document ids are strings)")
            return value
    return None


# -- local documents ------------------------------------------------------------
async def get_local(
    request: web.Request, rep: Replication, caller: Caller, t: Target
) -> web.Response:
    assert t.doc_id is not None
    found = await rep.parts.store.get_local(t.db, caller.name, t.doc_id)
    if found is None:
        raise NotFound("missing")
    doc = await rep.parts.open_local(t.db, caller.name, t.doc_id, found.body)
    return json_response({"_id": t.doc_id, "_rev": found.rev, **doc})


async def put_local(
    request: web.Request, rep: Replication, caller: Caller, t: Target
) -> web.Response:
    assert t.doc_id is not None
    body = await read_object(request)
    check_doc_id(t.doc_id)
    check_depth(body)
    expected = body.get("_rev") or request.query.get("rev")
    rev = await _store_local(rep, caller, t.db, t.doc_id, expected, body)
    return json_response({"ok": True, "id": t.doc_id, "rev": rev}, status=201)


async def delete_local(
    request: web.Request, rep: Replication, caller: Caller, t: Target
) -> web.Response:
    assert t.doc_id is not None
    await rep.parts.store.delete_local(t.db, caller.name, t.doc_id, request.query.get("rev"))
    return json_response({"ok": True, "id": t.doc_id, "rev": "0-0"})


# -- single documents and attachments ----------------------------------------------
async def get_doc(
    request: web.Request, rep: Replication, caller: Caller, t: Target
) -> web.StreamResponse:
    assert t.doc_id is not None
    if t.attachment is not None:
        return await _get_attachment(request, rep, caller, t)
    opts = read_options(request)
    open_revs = request.query.get("open_revs")
    if open_revs is not None:
        revs = None if open_revs == "all" else json_param(request, "open_revs")
        if revs is not None and (
            not isinstance(revs, list) or not all(isinstance(r, str) for r in revs)
        ):
            raise BadRequest('open_revs must be "all" or a JSON array of revisions')
        for rev in revs or ():
            revtree.parse_rev(rev)  # CouchDB: 400 "Invalid rev format"
        found = await rep.reader.open_revs(t.db, caller, t.doc_id, revs, opts)
        _served(request, caller, sum("ok" in one for one in found))
        return json_response(found)
    doc = await rep.reader.get_doc(t.db, caller, t.doc_id, _query_rev(request), opts)
    _served(request, caller, 1)
    return json_response(doc, headers={"ETag": f'"{doc["_rev"]}"'})


async def _get_attachment(
    request: web.Request, rep: Replication, caller: Caller, t: Target
) -> web.Response:
    assert t.doc_id is not None and t.attachment is not None
    doc = await rep.reader.get_doc(t.db, caller, t.doc_id, _query_rev(request), ReadOptions())
    stub = (doc.get("_attachments") or {}).get(t.attachment)
    if stub is None:
        raise NotFound("Document is missing attachment")
    data = await rep.reader.attachment_bytes(t.db, caller, stub["digest"])
    content_type = served_type(stub.get("content_type"))
    return web.Response(
        body=data,
        content_type=content_type,
        headers={
            "ETag": f'"{stub["digest"]}"',
            "Content-MD5": stub["digest"].removeprefix("md5-"),
            **attachment_headers(t.attachment, content_type),  # user content: never active
        },
    )


async def post_doc(
    request: web.Request, rep: Replication, caller: Caller, t: Target
) -> web.Response:
    body = await _pushed_object(request, rep, caller)
    return _received(request, caller, await _write_one(rep, caller, t.db, body, status=201))


async def put_doc(
    request: web.Request, rep: Replication, caller: Caller, t: Target
) -> web.Response:
    assert t.doc_id is not None
    if t.attachment is not None:
        return _received(request, caller, await _put_attachment(request, rep, caller, t))
    body = await _pushed_object(request, rep, caller)
    if "_id" in body and body["_id"] != t.doc_id:
        raise BadRequest("Document id in the body does not match the URL.")
    body["_id"] = t.doc_id
    rev = request.query.get("rev") or request.headers.get("If-Match", "").strip('"') or None
    if rev and body.setdefault("_rev", rev) != rev:
        raise BadRequest("Document rev from request body and query string have different values")
    new_edits = request.query.get("new_edits", "true") != "false"
    written = await _write_one(rep, caller, t.db, body, status=201, new_edits=new_edits)
    return _received(request, caller, written)


async def delete_doc(
    request: web.Request, rep: Replication, caller: Caller, t: Target
) -> web.Response:
    assert t.doc_id is not None
    rev = request.query.get("rev") or request.headers.get("If-Match", "").strip('"')
    if not rev:
        raise Conflict("Document update conflict.")
    if t.attachment is not None:
        return _received(request, caller, await _delete_attachment(rep, caller, t, rev))
    meta = (await rep.parts.visible_metas(t.db, caller, [t.doc_id])).get(t.doc_id)
    if meta is None:
        raise NotFound("missing")
    tombstone = {"_id": t.doc_id, "_rev": rev, "_deleted": True}
    return _received(request, caller, await _write_one(rep, caller, t.db, tombstone, status=200))


async def _write_one(
    rep: Replication,
    caller: Caller,
    db: str,
    doc: dict[str, Any],
    status: int,
    new_edits: bool = True,
) -> web.Response:
    await rep.parts.store.db_info(db, frozenset())
    _shape_checked(rep, caller, doc, new_edits)  # before the size check: too deep to measure
    [result] = await _write_with_locals(rep, caller, db, [_size_checked(rep, doc)], new_edits)
    if result.error is not None:
        _note_refused(rep, caller, doc, result)
        raise result.error
    return json_response({"ok": True, "id": result.doc_id, "rev": result.rev}, status=status)


async def _current_body(
    rep: Replication, caller: Caller, t: Target, rev: str | None
) -> dict[str, Any]:
    assert t.doc_id is not None
    try:
        doc = await rep.reader.get_doc(t.db, caller, t.doc_id, None, ReadOptions())
    except NotFound:
        if rev:
            raise Conflict() from None
        return {"_id": t.doc_id}
    if doc["_rev"] != rev:
        raise Conflict()
    return doc


async def _put_attachment(
    request: web.Request, rep: Replication, caller: Caller, t: Target
) -> web.Response:
    assert t.attachment is not None
    rev = request.query.get("rev") or request.headers.get("If-Match", "").strip('"') or None
    doc = await _current_body(rep, caller, t, rev)
    data = await request.read()
    atts = dict(doc.get("_attachments") or {})
    atts[t.attachment] = {
        "content_type": request.content_type or "application/octet-stream",
        "data": base64.b64encode(data).decode(),
    }
    doc["_attachments"] = atts
    return await _write_one(rep, caller, t.db, doc, status=201)


async def _delete_attachment(rep: Replication, caller: Caller, t: Target, rev: str) -> web.Response:
    doc = await _current_body(rep, caller, t, rev)
    atts = dict(doc.get("_attachments") or {})
    if t.attachment not in atts:
        raise NotFound("Document is missing attachment")
    del atts[t.attachment]
    doc["_attachments"] = atts
    return await _write_one(rep, caller, t.db, doc, status=200)


def _query_rev(request: web.Request) -> str | None:
    """``?rev=`` of a read: absent, or a well-formed rev (CouchDB answers 400 otherwise)."""
    rev = request.query.get("rev")
    if rev is not None:
        revtree.parse_rev(rev)
    return rev
