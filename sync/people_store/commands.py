"""How the management commands reach users, places and sessions: through the same port as
the server (``sync.people_store.backends``), so ``fieldsync user disable`` run next to
any instance changes what every instance sees.

Each command runs one coroutine against the configured adapter; the change's
audit entry names ``cli:<os user>`` and is made safe before the command returns
(in the change's own transaction on the embedded store).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sync import audit
from sync.config import Config
from sync.people_store.backends import command_ports
from sync.people_store.ports import AccountStore, Actor

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
    async with command_ports(config, audited=audited) as ports:
        return await call(ports.store, Actor(audit.cli_actor()))
