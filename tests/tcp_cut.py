"""A TCP forwarder on loopback that a test can cut, stall and restore.

Put between fieldsync and CouchDB, it plays the network and CouchDB going away:
``cut()`` closes the listening socket and every open connection (new ones are
refused), ``stall()`` accepts connections but forwards nothing (a hung server),
``restore()`` forwards again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest


class TcpCut:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.stalled = False

    async def start(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        await self.restore()

    async def restore(self) -> None:
        self.stalled = False
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    def stall(self) -> None:
        self.stalled = True

    async def close(self) -> None:
        await self.cut()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if self.stalled:
            with contextlib.suppress(ConnectionError):
                await reader.read()  # hold the connection, answer nothing
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self.stalled:
                    continue
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
            self._writers.discard(writer)


@pytest.fixture
async def cut(couchdb_url: str) -> AsyncIterator[TcpCut]:
    """A forwarder to the tests' CouchDB (give fieldsync :func:`through` it)."""
    target = urlsplit(couchdb_url)
    proxy = TcpCut(target.hostname or "127.0.0.1", target.port or 5984)
    await proxy.start()
    yield proxy
    await proxy.close()


def through(couchdb_url: str, proxy: TcpCut) -> str:
    """``couchdb_url`` with its host and port replaced by the forwarder's."""
    parts = urlsplit(couchdb_url)
    credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return f"{parts.scheme}://{credentials}127.0.0.1:{proxy.port}"
