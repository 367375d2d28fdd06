"""The app factory: ``create_app(config) -> web.Application``.

It reads top to bottom: the middlewares; the packages' registry
(:mod:`sync.packages`, :mod:`sync.extensions`); every package's
``setup_routes``, then the replication routes (their ``/{db}`` patterns catch
everything else); and one ``cleanup_ctx``, :func:`_resources`, that opens the
store, the key ring, the audit trail, authentication and replication, makes the
packages' validators, starts their workers in order, and at shutdown stops them
in reverse before it closes what it opened.  One middleware renders every error
CouchDB-style.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress

import structlog
from aiohttp import web

from sync import audit as audit_trail
from sync import (
    datadir,
    extensions,
    forwarded,
    headers,
    intent,
    packages,
    readings,
    requestlog,
)
from sync import metrics as app_metrics
from sync.activity import couchdb as couch_activity
from sync.appkeys import ACCOUNTS, AUTH, CONFIG, STORE
from sync.audit import AUDIT, AuditLog, ChainWriter
from sync.audit_store import couchdb as couch_audit
from sync.audit_store import embedded as embedded_audit
from sync.audit_store.backends import instance_store
from sync.audit_store.embedded_journal import ServerChain, recover
from sync.audit_store.embedded_verify import check_at_start
from sync.audit_store.links import ChainKey
from sync.auditjournal import Journal, journal_path
from sync.auditverify import AuditBroken
from sync.auth import LOGIN_LIMITS, Authenticator
from sync.config import Config
from sync.couchaudit import new_instance_id
from sync.datakeys import couchdb as couch_keys
from sync.datakeys import embedded_admin
from sync.datakeys.backends import data_key_store
from sync.errors import (
    FieldsyncError,
    MethodNotAllowed,
    NotFound,
    PreconditionFailed,
    StoreUnavailable,
    TooLarge,
)
from sync.extensions import EXTENSIONS, Extensions
from sync.http import json_response
from sync.keys import KeyRing, MasterKey, load_master_key
from sync.people_store import couchdb as couch_accounts
from sync.people_store.backends import account_ports
from sync.refusals import couchdb as couch_refusals
from sync.replication import routes as replication_routes
from sync.replication.ahead import Ahead
from sync.replication.changes import ChangesFeed, SnapshotRegistry
from sync.replication.context import Parts
from sync.replication.notifier import Notifier
from sync.replication.reads import Reader
from sync.replication.routes import REPLICATION, Replication, close_longpolls
from sync.replication.writes import Writer
from sync.sessions import Lifetime
from sync.store import couchdb, opening
from sync.store.base import DocStore
from sync.store.couchdb import lease as couch_leases
from sync.store.couchdb.readings import couch_reading, watch_couch
from sync.store.couchdb.store import AuditSink, CouchStore
from sync.store.readings import sqlite_reading
from sync.store.schema import db_path
from sync.store.server_secrets import server_identity
from sync.store.snapshots import load_snapshot, save_snapshot
from sync.store.sqlite import SqliteStore
from sync.vault import Vault

log = structlog.get_logger("fieldsync")


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except FieldsyncError as exc:
        if exc.status >= 500:
            route = app_metrics.route_of(request)
            log.error("request_failed", route=route, error=exc.error_token, reason=exc.reason)
        return json_response(exc.to_json(), status=exc.status)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[CONFIG].max_request_bytes
        error = TooLarge(f"Request body is larger than the limit of {limit} bytes.")
        return json_response(error.to_json(), status=413)
    except web.HTTPNotFound:
        return json_response(NotFound("Database does not exist.").to_json(), status=404)
    except web.HTTPMethodNotAllowed as exc:
        return json_response(
            MethodNotAllowed(f"Only {', '.join(sorted(exc.allowed_methods))} allowed").to_json(),
            status=405,
        )
    except web.HTTPException:
        raise  # aiohttp's own answers: redirects and the like
    except Exception:
        # A bug.  Logged with its traceback; the client gets JSON it can read (PouchDB
        # could not parse aiohttp's text page, and showed "invalid json") naming the
        # request, never the exception's text (it may quote data).  An answer already
        # under way cannot be replaced: its connection is closed instead.
        if request.get(requestlog.STARTED):
            raise
        log.exception("request_crashed", route=app_metrics.route_of(request))
        rid = request.get(requestlog.REQUEST_ID, "")
        reason = f"Unexpected server error; the server's log has it under request id {rid}."
        return json_response(FieldsyncError(reason).to_json(), status=500)


COMPRESS_ABOVE = 1024


@web.middleware
async def compression_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """gzip JSON answers worth compressing: sync runs over slow, metered links."""
    response = await handler(request)
    if (
        isinstance(response, web.Response)
        and response.body is not None
        and len(response.body) > COMPRESS_ABOVE  # type: ignore[arg-type]
        and response.content_type == "application/json"
        and "gzip" in request.headers.get("Accept-Encoding", "")
    ):
        response.enable_compression(web.ContentCoding.gzip)
    return response


async def _resources(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    opening.check_master_key(config)  # before the lock file, the store or a new key is written
    async with datadir.serving(config.data_dir, config.lock_wait_seconds):
        async for _ in _serving(app, config):
            yield


async def _serving(app: web.Application, config: Config) -> AsyncIterator[None]:
    path = db_path(config.data_dir)
    store = SqliteStore(path)
    try:
        master = load_master_key(config.key_file, create=True)
        await store.read(lambda conn: embedded_admin.check_master(conn, master))
        audit = await _open_audit(store, master, config)
    except BaseException:
        await store.close()
        raise
    _, server_uuid = await store.write_tx(server_identity)
    documents: DocStore = store
    couch: CouchStore | None = None
    notifier = Notifier()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(store.close)  # last, after the workers (even a failed one)
        stack.push_async_callback(audit.close)
        stored_keys = await stack.enter_async_context(data_key_store(config, master))
        keys = KeyRing(master, stored_keys, config.key_refresh_seconds)
        if config.couchdb_url:
            documents = couch = couchdb.open_store(config, own_couch_databases(app[EXTENSIONS]))
            stack.push_async_callback(couch.close)
            couch.audit_sink = _audit_sink(store, audit)
            await stack.enter_async_context(couchdb.background(couch, config.db_name, notifier))
            log.info("document_store", backend="couchdb", url=couch.client.endpoint.shown)
            where = f"CouchDB at {couch.client.endpoint.shown}"
        else:
            await _ensure_db(store, config.db_name)
            where = "embedded"
        await store.write_tx(lambda c: embedded_admin.set_documents_backend(c, where))
        stores = [sqlite_reading(store)]
        if couch is not None:
            stores.append(couch_reading(couch, config.db_name))
            watch_couch(app[app_metrics.METRICS], couch)
        readings.install(app, config.db_name, stores, documents, audit, notifier)
        async for _ in _answering(
            app, config, store, documents, notifier, audit, keys, server_uuid
        ):
            yield


async def _answering(
    app: web.Application,
    config: Config,
    store: SqliteStore,
    documents: DocStore,
    notifier: Notifier,
    audit: AuditLog,
    keys: KeyRing,
    server_uuid: str,
) -> AsyncIterator[None]:
    app[AUDIT] = audit
    ext = app[EXTENSIONS]
    validators = tuple(make(app) for make in ext.validators)  # before any worker writes
    ahead = Ahead() if audit.remote is not None else None  # entries cost a write each
    parts = Parts(documents, Vault(keys), notifier, validators, audit=audit, ahead=ahead)
    reader = Reader(parts)
    snapshots = SnapshotRegistry(
        lambda h, p: store.write_tx(lambda c: save_snapshot(c, h, p)),
        lambda h: store.read(lambda c: load_snapshot(c, h)),
    )
    lifetime = Lifetime(config.session_seconds, config.session_idle_seconds)
    failed = app[app_metrics.METRICS].login_failures.inc
    async with account_ports(config, store, LOGIN_LIMITS, audit) as people:
        log.info("account_store", backend=people.backend)
        auth = Authenticator(
            people.store,
            lifetime,
            config.https,
            audit,
            on_login_failed=failed,
            device_checks=ext.device_checks,
            limits=people.limits,
            remembered=config.verified_passwords,
        )
        app[STORE] = store
        app[ACCOUNTS] = people.store
        app[AUTH] = auth
        feed = ChangesFeed(parts, reader, snapshots)
        replication = Replication(parts, reader, Writer(parts), feed, auth, config, server_uuid)
        app[REPLICATION] = replication
        async with extensions.running(app, ext.workers):
            yield


async def _open_audit(store: SqliteStore, master: MasterKey, config: Config) -> AuditLog:
    """Check the audit trail's tail, head and triggers; refuse to serve on a broken one."""
    chain, report = await store.write_tx(lambda c: check_at_start(c, master))
    if report.ok:
        log.info("audit_chain_checked", ok=True, summary=report.summary())
        started = "audit tail ok"
    else:
        hint = "run `fieldsync audit verify` to see the whole trail"
        log.error("audit_chain_checked", ok=False, problem=str(report.problem), hint=hint)
        if not config.audit_allow_broken:
            raise AuditBroken(
                f"{report.summary()}; not starting ({hint}; FIELDSYNC_AUDIT_ALLOW_BROKEN=1 "
                "starts anyway)"
            )
        started = f"audit broken: {report.problem}"
    journal: Journal | None = await _open_journal(store, chain, config)
    remote = _open_remote(config, master)
    if remote is not None and journal is not None:  # what a crash left is moved: not used now
        journal.close()
        journal = None
    audit = AuditLog(ServerChain(store.write_tx, chain), journal, remote=remote)
    audit.record("server", "server_start", None, (), detail=started)
    try:
        await audit.flush()
    except StoreUnavailable:  # CouchDB away: the entry waits for it, like every answer
        if remote is None:
            raise
        log.warning("audit_waits_for_couchdb", instance=remote.instance)
    return audit


async def _open_journal(store: SqliteStore, chain: ChainKey, config: Config) -> Journal:
    """The read journal, after moving into the chain what a crash left in it."""
    path = journal_path(config.data_dir)
    moved, next_seq = await store.write_tx(lambda c: recover(c, chain, path))
    if moved:
        log.warning("audit_journal_recovered", entries=moved)
    journal = Journal(path, next_seq, chain)
    journal.empty()  # all it held is in the chain now
    return journal


def _open_remote(config: Config, master: MasterKey) -> ChainWriter | None:
    """This process's own chain in the instances' audit store (CouchDB's ``<prefix>audit``,
    a new instance id per start); it starts with its first entry, so a CouchDB away at
    start only delays it.  None without CouchDB (the data dir's chain records all)."""
    store = instance_store(config)
    if store is None:
        return None
    instance = new_instance_id()
    log.info("audit_instance", instance=instance, database=config.couchdb_prefix + "audit")
    return ChainWriter(store, master, instance)


def own_couch_databases(ext: Extensions) -> list[str]:
    """The CouchDB databases (after the prefix) the server keeps its own data in: the
    core's, then the packages'. No fieldsync database may take one of these names."""
    core = [
        couch_accounts.DB_NAME,
        couch_activity.DB_NAME,
        couch_audit.DB_NAME,
        couch_keys.DB_NAME,
        couch_leases.DB_NAME,
        couch_refusals.DB_NAME,
    ]
    return [*core, *ext.couch_databases]


def _audit_sink(store: SqliteStore, audit: AuditLog) -> AuditSink:
    """Where the CouchDB store sends the entry of a write: this instance's CouchDB chain,
    or (no remote) the data dir's chain."""
    remote = audit.remote
    if remote is not None:
        return lambda stamp, db, ids: remote.append([stamp.entry(db, ids)] if ids else [])
    return lambda stamp, db, ids: store.write_tx(
        lambda c: embedded_audit.append_write(c, stamp, db, ids)
    )


async def _ensure_db(store: DocStore, name: str) -> None:
    with suppress(PreconditionFailed):
        await store.create_db(name)


def create_app(config: Config) -> web.Application:
    app = web.Application(
        middlewares=[
            forwarded.middleware(config.trusted_proxies),  # first: the others see the client
            requestlog.middleware,  # outside error_middleware: it logs rendered errors
            app_metrics.middleware,  # outside error_middleware: it counts rendered errors
            error_middleware,
            compression_middleware,
            intent.middleware(config.public_url),  # inside error_middleware: it renders the 403
            audit_trail.middleware,  # inside error_middleware: a failed flush answers 500
        ],
        client_max_size=config.max_request_bytes,
    )
    ext = packages.extensions()
    app[CONFIG] = config
    app[EXTENSIONS] = ext
    app_metrics.setup(app)  # before the packages: they add their readings
    headers.setup(app)
    intent.setup(app, ext.intent_checks)
    app.cleanup_ctx.append(_resources)  # the only one: the packages' workers run inside it
    app.on_shutdown.append(close_longpolls)
    app.on_response_prepare.append(audit_trail.flush_before_answer)
    app.on_response_prepare.append(requestlog.mark_answer)
    for setup_routes in ext.routes:
        setup_routes(app)
    replication_routes.setup_routes(app)  # last: its /{db} routes catch everything else
    return app
