"""An app served on an event loop of its own, for hypothesis tests.

``@given`` tests are plain functions, and starting the app for every example
would cost more than the example; so one app serves every example, and each
example runs its requests with :meth:`Served.run`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

T = TypeVar("T")


def fuzz_settings(examples: int) -> Any:
    """Hypothesis settings of a fuzz run against one served app: no per-example deadline
    (one shared, sometimes busy server), generated requests may be large."""
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


Client = TestClient[Any, Any]


@dataclass
class Served:
    loop: asyncio.AbstractEventLoop
    client: Client

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)


@contextmanager
def served(app: web.Application) -> Iterator[Served]:
    loop = asyncio.new_event_loop()
    try:
        client = loop.run_until_complete(_start(app))
        try:
            yield Served(loop, client)
        finally:
            loop.run_until_complete(client.close())
    finally:
        loop.close()


async def _start(app: web.Application) -> Client:
    """Built inside the loop: the client's cookie jar binds to the running loop."""
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    return client


def json_junk(text_size: int, keys: Any = None, words: Any = None, max_leaves: int = 6) -> Any:
    """Small JSON values of every kind (extreme integers, floats, short text, ``words``),
    nested in lists and objects whose keys are short text or ``keys``."""
    leaves = [
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=text_size),
    ]
    key = st.text(max_size=5) if keys is None else st.one_of(st.text(max_size=5), keys)
    return st.recursive(
        st.one_of(*leaves, *([] if words is None else [words])),
        lambda kids: st.lists(kids, max_size=3) | st.dictionaries(key, kids, max_size=3),
        max_leaves=max_leaves,
    )
