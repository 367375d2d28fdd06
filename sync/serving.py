"""Running the server so that slow or many clients cannot starve it.

One address once held 1,100 half-open connections: the process ran out of file
descriptors, stopped answering everyone for 40 s, and asyncio logged every failed
``accept()`` (188k lines). aiohttp has no read deadlines of its own and no
connection caps, so every connection goes through :class:`GuardedHandler`:

- **Admission.** A connection is closed at once, unread, when its address already
  holds ``max_connections_per_address`` or the server holds ``max_connections``.
  The global cap stays below the open-file limit (raised to the hard limit at
  start) with room for SQLite files and outgoing connections, so ``accept()`` never
  fails. The per-address cap is generous because phones share carrier-NAT
  addresses; IPv6 clients are grouped by /64, which one subscriber usually holds
  whole. A trusted proxy's connections carry many clients: they count toward the
  global cap only (limit clients per address in the proxy).
- **Header deadline.** From the first byte of a request (or the connection's
  start) its line and headers must be complete within ``header_timeout_seconds``.
- **Body idle deadline.** Inside a body, a silence longer than
  ``body_timeout_seconds`` ends the connection; a slow but moving upload (2G) never
  does, and time the server itself holds reading paused does not count.
- **Keep-alive.** Between requests a connection may idle for
  ``keepalive_timeout_seconds`` (aiohttp's own timer).
- Long-poll ``_changes`` have their head complete and no body, so neither deadline
  applies to them; they count toward the caps like any connection.
- **TLS.** Admission comes before the handshake (:class:`TlsAdmission`), which must
  finish within the header deadline: a client that never says hello counts too.
- **Quiet logs.** Refusals, timeouts, malformed requests and vanished clients are
  counted and logged as one line per kind per minute (:class:`Trouble`), never one
  per connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import ipaddress
import resource
import signal
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from sync.config import Config
from sync.forwarded import Network

log = structlog.get_logger("fieldsync")

TROUBLE_INTERVAL = 60.0
BACKLOG = 128  # also how many connections asyncio accepts at once, before any is refused
# Files besides connections: one burst of accepts, SQLite databases with their WAL and
# shm files, keys, logs, outgoing HTTP.
HEADROOM_FILES = BACKLOG + 128
UNLIMITED_FILES = 65536  # the soft limit we ask for when the hard limit is "unlimited"


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard one; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = UNLIMITED_FILES if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return UNLIMITED_FILES if soft == resource.RLIM_INFINITY else soft


def connection_budget(open_files: int, configured: int) -> int:
    """Connections the process can hold and still open its own files (0 = no setting)."""
    room = max(1, open_files - HEADROOM_FILES, open_files // 4)
    return room if configured <= 0 else min(configured, room)


@dataclass(frozen=True)
class Limits:
    header_timeout: float
    body_timeout: float
    keepalive_timeout: float
    per_address: int
    total: int

    @classmethod
    def from_config(cls, config: Config, open_files: int) -> Limits:
        return cls(
            header_timeout=config.header_timeout_seconds,
            body_timeout=config.body_timeout_seconds,
            keepalive_timeout=config.keepalive_timeout_seconds,
            per_address=config.max_connections_per_address,
            total=connection_budget(open_files, config.max_connections),
        )


class Trouble:
    """Counts what misbehaving clients cause; one log line per kind per interval."""

    def __init__(self, interval: float = TROUBLE_INTERVAL) -> None:
        self.interval = interval
        self._counts: Counter[tuple[str, str]] = Counter()

    def note(self, event: str, reason: str = "") -> None:
        self._counts[(event, reason)] += 1

    def flush(self) -> None:
        for (event, reason), count in sorted(self._counts.items()):
            detail = {"reason": reason} if reason else {}
            log.warning(event, count=count, in_last_seconds=self.interval, **detail)
        self._counts.clear()

    async def report(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.flush()


class Gate:
    """Who may open one more connection: per-address and global counts."""

    def __init__(self, limits: Limits, trusted: tuple[Network, ...], trouble: Trouble) -> None:
        self.limits = limits
        self.trouble = trouble
        self._trusted = trusted
        self._open: Counter[str] = Counter()
        self._total = 0

    def key(self, peername: Any) -> str | None:
        """The address a per-address cap applies to; None for none (trusted proxy, socket)."""
        if not isinstance(peername, tuple) or not peername:
            return None
        try:
            ip = ipaddress.ip_address(str(peername[0]).split("%", 1)[0])
        except ValueError:
            return None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self._trusted):
            return None
        if isinstance(ip, ipaddress.IPv6Address):
            return str(ipaddress.IPv6Network((ip, 64), strict=False))
        return str(ip)

    def admit(self, key: str | None) -> bool:
        if self._total >= self.limits.total:
            self.trouble.note("connections_refused", "server_full")
            return False
        if key is not None and self._open[key] >= self.limits.per_address:
            self.trouble.note("connections_refused", "per_address")
            return False
        self._total += 1
        if key is not None:
            self._open[key] += 1
        return True

    def release(self, key: str | None) -> None:
        self._total -= 1
        if key is not None:
            self._open[key] -= 1
            if self._open[key] <= 0:
                del self._open[key]

    @property
    def open_connections(self) -> int:
        return self._total


class GuardedHandler(RequestHandler):
    """aiohttp's HTTP protocol with admission and the header and body read deadlines."""

    def __init__(self, manager: Server, gate: Gate, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._gate = gate
        self._key: str | None = None
        self._admitted = False
        self._cut = False  # we closed it: what the handler then raises is not news
        self._head_timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_seen = 0.0

    def admit(self, transport: asyncio.BaseTransport) -> bool:
        """Count the connection, or close it at once, unread, when over a cap."""
        key = self._gate.key(transport.get_extra_info("peername"))
        if not self._gate.admit(key):
            self._manager = None  # aiohttp's connection_lost then has nothing to undo
            cast(asyncio.Transport, transport).abort()
            return False
        self._key, self._admitted = key, True
        return True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._admitted and not self.admit(transport):
            return
        super().connection_made(transport)
        if self._request_count == 0 and self._head_timer is None:
            self._arm_head_timer()  # (after TLS, a request may have come in already)

    def release(self) -> None:
        """Give back the connection's place under the caps (once)."""
        if self._admitted:
            self._admitted = False
            self._gate.release(self._key)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.release()
        self._stop_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        heads, body_before = self._request_count, self._in_body()
        super().data_received(data)
        if data:
            self._body_seen = self._loop.time()
        if self._request_count != heads:
            self._head_complete()
        elif data and not body_before and self._head_timer is None:
            self._arm_head_timer()  # the first byte of the next request on this connection

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """Count what broken or vanished clients cause instead of a traceback each."""
        exc = kw.get("exc_info")
        if isinstance(exc, HttpProcessingError):
            self._gate.trouble.note("bad_requests")
        elif self._cut:
            pass  # counted as the timeout that cut it
        elif isinstance(exc, ConnectionError):
            self._gate.trouble.note("clients_gone_mid_request")
        else:
            super().log_exception(*args, **kw)

    def note_trouble(self, event: str) -> None:
        self._gate.trouble.note(event)

    def _in_body(self) -> bool:
        return self._body is not None and not self._body.is_eof()

    def _head_complete(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._body = self._messages[-1][1] if self._messages else None
        if self._in_body() and self._body_timer is None:
            self._body_timer = self._loop.call_at(
                self._body_seen + self._gate.limits.body_timeout, self._check_body
            )

    def _arm_head_timer(self) -> None:
        if self._gate.limits.header_timeout > 0:
            self._head_timer = self._loop.call_later(
                self._gate.limits.header_timeout, self._head_expired
            )

    def _head_expired(self) -> None:
        self._head_timer = None
        if self.transport is not None:
            self._cut_off("header_timeouts")

    def _check_body(self) -> None:
        self._body_timer = None
        if self.transport is None or not self._in_body():
            return
        now = self._loop.time()
        if self._reading_paused or getattr(self, "_buffer_paused", False):
            self._body_seen = now  # we are not reading: the silence is ours, not the client's
        due = self._body_seen + self._gate.limits.body_timeout
        if now < due:
            self._body_timer = self._loop.call_at(due, self._check_body)
        else:
            self._cut_off("body_timeouts")

    def _cut_off(self, event: str) -> None:
        self._gate.trouble.note(event)
        self._cut = True
        self.force_close()

    def _stop_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None
        self._body = None


class TlsAdmission(asyncio.Protocol):
    """Admits a TCP connection before its TLS handshake, then hands it to its handler.

    With ``create_server(ssl=...)`` a handler would see a connection only after the
    handshake: a client that never says hello would hold a file for the whole
    handshake timeout without counting toward any cap. Here the caps apply first, and
    the handshake must finish within the header deadline.
    """

    _handshakes: set[asyncio.Task[None]] = set()  # strong references while they run

    def __init__(self, handler: GuardedHandler, context: ssl.SSLContext, timeout: float) -> None:
        self._handler, self._context, self._timeout = handler, context, timeout

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp = cast(asyncio.Transport, transport)
        if not self._handler.admit(tcp):
            return
        tcp.pause_reading()  # the ClientHello is for the TLS layer, not for us
        task = asyncio.ensure_future(self._handshake(tcp))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._handler.release()  # lost before the TLS layer took over

    async def _handshake(self, tcp: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        try:
            tls = await loop.start_tls(
                tcp,
                self._handler,
                self._context,
                server_side=True,
                ssl_handshake_timeout=self._timeout,
            )
        except OSError:  # timed out, reset, or not TLS at all
            tls = None
        if tls is None or tls.is_closing():
            # A failed handshake never reaches the handler's connection_lost.
            self._handler.note_trouble("tls_handshakes_failed")
            self._handler.release()
            return
        self._handler.connection_made(tls)


class GuardedSite(web.BaseSite):
    """A TCP site whose connections are :class:`GuardedHandler` (aiohttp has no such hook)."""

    def __init__(
        self,
        runner: web.AppRunner,
        config: Config,
        gate: Gate,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host, self._port, self._gate = config.host, config.port, gate

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        limits = self._gate.limits
        options: dict[str, Any] = {
            "loop": loop,
            "keepalive_timeout": limits.keepalive_timeout,
            "access_log": None,  # as under web.run_app(access_log=None)
        }

        def make_handler() -> GuardedHandler:
            return GuardedHandler(server, self._gate, **options)

        def make_tls(context: ssl.SSLContext) -> TlsAdmission:
            return TlsAdmission(make_handler(), context, limits.header_timeout)

        tls = self._ssl_context
        self._server = await loop.create_server(
            make_handler if tls is None else functools.partial(make_tls, tls),
            self._host,
            self._port,
            backlog=BACKLOG,
        )


# Python's cyclic garbage collector runs a young collection every 700 net new container
# objects, and a full one (every tracked object) every hundred of those.  A pull
# allocates in bursts (a page of 100 documents parsed from CouchDB, opened, encoded)
# that reference counting frees at once, yet each burst crossed the threshold: on
# the 10k-document pull (CouchDB backend) the collector took 0.3-0.55 s of the
# server's 2-2.9 CPU s, with 3-5 full collections over ~120,000 objects each, most of
# them the modules, tables and settings loaded at start.  Frozen, those are never
# scanned again; with a young threshold of 20,000 the pull caused 4 collections in
# all (0.015 s).  Cycles are still collected, in larger batches.
GC_YOUNG = 20_000
GC_OLDER = 20


def settle_garbage_collector() -> None:
    """Once the app has started: what exists now lives as long as the process."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG, GC_OLDER, GC_OLDER)


def serve(app: web.Application, config: Config, ssl_context: ssl.SSLContext | None) -> None:
    """Run ``app`` until SIGINT or SIGTERM, then shut down gracefully."""
    limits = Limits.from_config(config, raise_open_file_limit())
    asyncio.run(_serve(app, config, ssl_context, limits))


async def _serve(
    app: web.Application, config: Config, ssl_context: ssl.SSLContext | None, limits: Limits
) -> None:
    loop = asyncio.get_running_loop()
    trouble = Trouble()
    loop.set_exception_handler(_quiet_accept_failures(trouble))
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    settle_garbage_collector()
    reporter = asyncio.create_task(trouble.report())
    try:
        await GuardedSite(
            runner, config, Gate(limits, config.trusted_proxies, trouble), ssl_context
        ).start()
        log.info("connection_limits", **dataclasses.asdict(limits))
        await stop.wait()
    finally:
        await runner.cleanup()
        reporter.cancel()
        trouble.flush()


def _quiet_accept_failures(
    trouble: Trouble,
) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """asyncio logs a traceback for every failed ``accept()`` (up to 128 a second): count them."""

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            trouble.note("accept_failures")
        else:
            loop.default_exception_handler(context)

    return handle
