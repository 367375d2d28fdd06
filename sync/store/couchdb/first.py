"""A document made once and then used by every instance: a place's data key, a shared secret.

Two instances may make it at once.  Each writes its own with a fresh token in
``mark``, through :meth:`CouchClient.put_alone`: a 201 stands (no rival can also
reach a quorum), a 409 or a 202 does not, and a 202's leaf is taken back.  But
until it is, that leaf is in CouchDB, and CouchDB's winner of the moment may be
it; and a reader whose quorum read came before the rival's 201 landed sees it
alone.  A data key read then seals bodies under a key about to vanish.

So a document is made **pending** and only its maker, once its write stood
(201), clears the flag.  A reader uses a document that is not pending and
whose leaves all carry one maker's token; otherwise it waits (a 202 is taken
back at once).  A pending document whose maker died between its 201 and the
clearing write is cleared by the first reader that has waited
:data:`ADOPT_AFTER` seconds for it: by then no rival's 201 can still be on its way.
Documents written before this flag existed have none: they stand.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any

import structlog

from sync.errors import Conflict, NotFound, StoreUnavailable
from sync.store.couchdb.client import CouchClient, path

PENDING = "pending"
ADOPT_AFTER = 5.0  # seconds a reader waits for a pending document's maker
PAUSE, LONGEST_PAUSE = 0.02, 0.25  # seconds between two reads of an unsettled document
TRIES = 20  # makes tried before giving up (each lost to a rival, or taken back)
log = structlog.get_logger("fieldsync.couchdb")

Doc = dict[str, Any]


async def make_or_read(
    client: CouchClient, couch_db: str, body: Mapping[str, Any], mark: str
) -> Doc:
    """The document every instance uses: the one found, else ``body`` once made."""
    doc_id = str(body["_id"])
    for _ in range(TRIES):
        found = await read(client, couch_db, doc_id, mark)
        if found is not None:
            return found
        if await client.put_alone(couch_db, {**body, PENDING: True}, mark):
            await _clear(client, couch_db, doc_id, mark, str(body[mark]))
            return dict(body)
        # 409, or a 202 taken back: read again (a rival's, or make it once more)
    raise StoreUnavailable(f"Could not make {doc_id} in {couch_db} (too many rivals); try again.")


async def read(client: CouchClient, couch_db: str, doc_id: str, mark: str) -> Doc | None:
    """The document once it is settled (module docstring); None if there is none."""
    started, pause = time.monotonic(), PAUSE
    while True:
        leaves = (await client.leaves_by_id(couch_db, [doc_id])).get(doc_id, [])
        if not leaves:
            return None
        makers = {leaf.get(mark) for leaf in leaves}
        if len(makers) == 1 and not leaves[0].get(PENDING):
            return leaves[0]
        if time.monotonic() - started >= ADOPT_AFTER:
            log.warning("document_unsettled", db=couch_db, id=doc_id, leaves=len(leaves))
            if leaves[0].get(PENDING):  # its maker is gone: CouchDB's winner it is
                await _clear(client, couch_db, doc_id, mark, str(leaves[0].get(mark)))
                started = time.monotonic()
                continue
            return leaves[0]
        await asyncio.sleep(pause)
        pause = min(pause * 2, LONGEST_PAUSE)


async def _clear(client: CouchClient, couch_db: str, doc_id: str, mark: str, token: str) -> None:
    """Clear the pending flag of the leaf ``token`` made (written against its ``_rev``)."""
    found = (await client.leaves_by_id(couch_db, [doc_id])).get(doc_id, [])
    for leaf in found:
        if leaf.get(mark) == token and leaf.get(PENDING):
            body = {k: v for k, v in leaf.items() if k != PENDING}
            # 202 is fine: the leaf it extends stands, and so does its content; a 409:
            # cleared (or re-wrapped) meanwhile, and a reader clears what is left
            with contextlib.suppress(Conflict, NotFound):
                await client.put_status(path(couch_db, doc_id), body)
