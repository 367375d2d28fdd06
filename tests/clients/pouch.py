"""Drive a real PouchDB 9 client (``driver.js`` under node) from asyncio tests.

The driver speaks JSON lines: one request ``{"id", "op", ...}`` per line on its stdin,
one answer ``{"id", "ok", "result" | "error"}`` per line on its stdout. Answers may come
back out of order; each is matched to its request by id. The driver's stderr is
inherited, so pytest shows it with a failing test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

DRIVER = Path(__file__).with_name("driver.js")
NODE_MODULES = Path(__file__).with_name("node_modules")
LINE_LIMIT = 64 * 1024 * 1024  # a 200 KB attachment is one ~270 KB base64 line


class PouchError(Exception):
    """A PouchDB error, as the driver reported it (``name``, ``status``, ``message``...)."""

    def __init__(self, op: str, error: dict[str, Any]) -> None:
        super().__init__(f"{op}: {error.get('status')} {error.get('name')}: {error.get('message')}")
        self.error = error
        self.name = error.get("name")
        self.status = error.get("status")


class PouchDriver:
    """One node process holding PouchDB memory databases for the life of a test."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._next_id = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read_answers())

    @classmethod
    async def start(cls) -> PouchDriver:
        node = shutil.which("node")
        if node is None or not NODE_MODULES.is_dir():
            raise RuntimeError("node and `npm ci` in tests/clients are needed (make setup)")
        process = await asyncio.create_subprocess_exec(
            node,
            str(DRIVER),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=LINE_LIMIT,
        )
        return cls(process)

    async def call(self, op: str, *, timeout: float = 60.0, **kwargs: Any) -> Any:
        """Run one driver op and return its result, or raise `PouchError`."""
        assert self._process.stdin is not None
        self._next_id += 1
        request_id = self._next_id
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = answer
        line = json.dumps({"id": request_id, "op": op, **kwargs}) + "\n"
        self._process.stdin.write(line.encode())
        await self._process.stdin.drain()
        try:
            message = await asyncio.wait_for(answer, timeout)
        finally:
            self._waiting.pop(request_id, None)
        if not message["ok"]:
            raise PouchError(op, message["error"])
        return message["result"]

    async def _read_answers(self) -> None:
        assert self._process.stdout is not None
        while line := await self._process.stdout.readline():
            message = json.loads(line)
            answer = self._waiting.get(message["id"])
            if answer is not None and not answer.done():
                answer.set_result(message)
        for answer in self._waiting.values():
            if not answer.done():
                answer.set_exception(RuntimeError("the PouchDB driver exited"))

    async def aclose(self) -> None:
        """Close stdin (the driver answers what is in flight, then exits); kill if it hangs."""
        assert self._process.stdin is not None
        self._process.stdin.close()
        try:
            await asyncio.wait_for(self._process.wait(), 10)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()
        with contextlib.suppress(Exception):
            await self._reader
