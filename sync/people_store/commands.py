"""How the management commands reach users, places and sessions: through the same port as
the server (``sync.people_store.backends``), so ``fieldsync user disable`` run next to
any instance changes what every instance sees.

Each command runs one coroutine against the configured adapter; the change's
audit entry names ``cli:<os user>`` and is made safe before the command returns
(in the change's own transaction on the embedded store).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sync import audit
from sync.audit import AuditLog
from sync.audit_store import embedded
from sync.audit_store.embedded_journal import ServerChain
from sync.audit_store.links import ChainKey
from sync.config import Config
from sync.datakeys import embedded_admin
from sync.keys import load_master_key
from sync.people_store.backends import account_ports
from sync.people_store.ports import AccountStore, Actor
from sync.store.schema import db_path
from sync.store.sqlite import SqliteStore

T = TypeVar("T")
Call = Callable[[AccountStore, Actor], Awaitable[T]]


def run(config: Config, call: Call[T], *, audited: bool = True) -> T:
    """``call(port, actor)`` on the configured adapter; its audit entry made safe.

    It runs on a thread of its own, so a command also works when called from code
    that already runs an event loop (the tests call ``sync.cli.main`` so).
    """
    with ThreadPoolExecutor(1, thread_name_prefix="fieldsync-command") as pool:
        return pool.submit(asyncio.run, _run(config, call, audited)).result()


async def _run(config: Config, call: Call[T], audited: bool) -> T:
    store = SqliteStore(db_path(config.data_dir), readers=1)
    try:
        trail = await _trail(store, config) if audited else None
        async with account_ports(config, store, {}, trail, adopt=False) as ports:
            result = await call(ports.store, Actor(audit.cli_actor()))
        if trail is not None:
            await trail.flush()
        return result
    finally:
        await store.close()


async def _trail(store: SqliteStore, config: Config) -> AuditLog:
    """The data dir's audit chain, once the master key proves it opens this data dir."""
    master = load_master_key(config.key_file, create=False)

    def opened(conn: sqlite3.Connection) -> ChainKey:
        embedded_admin.check_master(conn, master)
        return embedded.open_chain(conn, master)

    return AuditLog(ServerChain(store.write_tx, await store.write_tx(opened)))
