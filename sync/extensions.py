"""The extension points: everything a package may add to the server, declared once.

After datasette's ``hookspecs.py``: each point below is a typed callable with a
docstring, and :class:`Extensions` holds what the packages registered for each.
A package registers in one function of its own, ``extend(ext)`` (an
:class:`Extend`); the packages the server is made of, and their order, are
listed once in :mod:`sync.packages`.  The core reads only these lists; no
package appends to another's internals.

    routes         SetupRoutes     add a package's routes (before the catch-all /{db})
    workers        Worker          resources and background work with a lifetime
    validators     MakeValidator   a check every written document passes
    device_checks  DeviceCheck     the device an authenticated request comes from, or a refusal
    intent_checks  IntentCheck     a cookie-authenticated change carries a token our page issued
    sealed_blobs   SealedBlobs     sealed columns ``fieldsync keys rotate`` re-seals
    couch_sealed_blobs  SealedDocs sealed documents in CouchDB it re-seals (FIELDSYNC_COUCHDB_URL)
    couch_databases  str           a CouchDB database it keeps (after the prefix): no
                                   fieldsync database may take its name
    settings       Setting         a FIELDSYNC_* setting, listed by ``fieldsync settings``
    cli_commands   AddCommands     a command group of the ``fieldsync`` command

Everything is used in registration order.  The server's start and stop, in the
one start-up context the app factory installs (:mod:`sync.app`):

1. the core opens the store, the keys, the audit trail, authentication (with
   every device check) and replication;
2. every validator is made, so that no write, not even a worker's, goes unchecked;
3. the workers start, one after the other (:func:`running`);
4. ... the server answers requests ...
5. the workers stop, in reverse order; then the core closes what it opened.

So a worker relies on the core, not on another package's worker.  (Where a
package asks another's port while it runs -- the SMS processor looks phones up
through the device registry's, found when it asks -- :mod:`sync.packages` lists
the owner first, so the port is open for as long as the asker runs.)
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

if TYPE_CHECKING:
    from sync.clitools import Commands
    from sync.couchsealed import SealedDocs
    from sync.datakeys.embedded_rotation import SealedBlobs
    from sync.scopes import User
    from sync.settings import Setting


class SetupRoutes(Protocol):
    """``setup_routes(app)``: add a package's routes; called once, while the app is built.

    Every package names this function ``setup_routes``.  The replication routes
    (their ``/{db}`` patterns match nearly any path) are added after all of them.
    """

    def __call__(self, app: web.Application, /) -> None: ...


class Worker(Protocol):
    """A package's resources and background work: an async generator, like aiohttp's
    ``cleanup_ctx``.  The code before its one ``yield`` starts it (the store, the audit
    trail, authentication and replication are open); the code after stops it (they
    are still open).  Workers start in registration order and stop in reverse."""

    def __call__(self, app: web.Application, /) -> AsyncIterator[None]: ...


class Validator(Protocol):
    """``validate(db, doc) -> reason | None``: a reason refuses the write (403 ``forbidden``,
    per document in ``_bulk_docs``); ``doc`` is the document as the client sent it.

    Optional, for the refused-records list (:mod:`sync.refusals`): an attribute
    ``refusal_code`` (a short code such as ``form_schema``; else ``validator``) and a
    method ``explain(db, doc) -> str``, the refusal in a supervisor's words (which
    field, which rule), asked only after the validator refused."""

    def __call__(self, db: str, doc: dict[str, Any], /) -> str | None: ...


class MakeValidator(Protocol):
    """Makes a :class:`Validator` from the starting app (its configuration), once the core
    is open and before any worker starts: so every write, a worker's too, is checked."""

    def __call__(self, app: web.Application, /) -> Validator: ...


class DeviceCheck(Protocol):
    """Sees each authenticated request and its user; returns the id of the device the
    request comes from (None when no device is involved), or raises ``Unauthorized``
    (or ``TooManyRequests``) to refuse it.  It reaches what it needs through
    ``request.app``: checks are fixed when authentication opens, before workers start."""

    async def __call__(self, request: web.Request, user: User, /) -> str | None: ...


class IntentCheck(Protocol):
    """Does this state-changing request, authenticated by the session cookie alone, carry
    a token one of the package's pages issued?  (Cross-site request forgery: :mod:`sync.intent`.)"""

    async def __call__(self, request: web.Request, /) -> bool: ...


class AddCommands(Protocol):
    """Adds a package's command group to ``fieldsync``'s sub-commands (use
    :func:`sync.clitools.add_group`); groups appear in ``fieldsync --help`` in
    registration order."""

    def __call__(self, subparsers: Commands, /) -> None: ...


@dataclass
class Extensions:
    """What the packages registered, per extension point (see the module's docstring)."""

    routes: list[SetupRoutes] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)
    validators: list[MakeValidator] = field(default_factory=list)
    device_checks: list[DeviceCheck] = field(default_factory=list)
    intent_checks: list[IntentCheck] = field(default_factory=list)
    sealed_blobs: list[SealedBlobs] = field(default_factory=list)
    couch_sealed_blobs: list[SealedDocs] = field(default_factory=list)
    couch_databases: list[str] = field(default_factory=list)
    settings: list[Setting] = field(default_factory=list)
    cli_commands: list[AddCommands] = field(default_factory=list)


class Extend(Protocol):
    """A package's one registration function, ``extend(ext)``: it appends to ``ext``
    what the package adds, and does nothing else (no I/O: it runs for every command)."""

    def __call__(self, ext: Extensions, /) -> None: ...


EXTENSIONS = web.AppKey("extensions", Extensions)


def collect(packages: Sequence[Extend]) -> Extensions:
    """The registry with every package's additions, in the order of ``packages``."""
    ext = Extensions()
    for extend in packages:
        extend(ext)
    return ext


@contextlib.asynccontextmanager
async def running(app: web.Application, workers: Sequence[Worker]) -> AsyncIterator[None]:
    """Start ``workers`` in order; on leaving, stop the started ones in reverse order.

    Like aiohttp's ``cleanup_ctx``, a worker's code after its ``yield`` runs as it is
    (nothing is thrown into it), however the server stops.  A worker that fails to
    start stops the start: the ones already started are stopped, and its error goes
    on.  A worker that fails to stop does not keep the others from stopping; the
    error goes on once all have stopped.
    """
    started: list[AsyncIterator[None]] = []
    try:
        for worker in workers:
            steps = worker(app)
            await anext(steps)
            started.append(steps)
        yield
    finally:
        await _stop(reversed(started))


async def _stop(started: Iterable[AsyncIterator[None]]) -> None:
    errors: list[Exception] = []
    for steps in started:
        try:
            await anext(steps)
        except StopAsyncIteration:
            continue
        except Exception as exc:
            errors.append(exc)
            continue
        errors.append(RuntimeError(f"the worker {steps!r} yields more than once"))
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ExceptionGroup("workers failed to stop", errors)
