"""Design documents: kept and replicated, never run.

This server runs no JavaScript, so a design document's functions (filters,
views, shows, lists, updates, ``validate_doc_update``) have no effect here.
A client asking for one gets CouchDB's answer when it does not exist
(404 ``not_found``) and a clear 400 when it does, never a silent no-op.
https://docs.couchdb.org/en/stable/api/ddoc/index.html
https://docs.couchdb.org/en/stable/api/database/changes.html#filtering
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sync.errors import BadRequest, NotFound
from sync.replication.context import Caller
from sync.replication.reads import Reader, ReadOptions

if TYPE_CHECKING:
    from sync.replication.routes import Replication, Target

BUILTIN_FILTERS = frozenset({"_doc_ids", "_selector", "_design"})
NARROW_INSTEAD = (
    "the server decides each worker's documents; use _doc_ids or _selector to narrow them"
)


async def check_filter(reader: Reader, db: str, caller: Caller, query: Mapping[str, str]) -> None:
    """Refuse a ``_changes`` filter that names a design document function.

    As CouchDB's ``couch_changes:configure_filter``: a missing design document,
    ``filters`` or ``views`` member, or function is 404 ``not_found``; a
    malformed name is 400.  One that exists is 400 too: it would not be run.
    """
    name = query.get("filter")
    if name is None or name in BUILTIN_FILTERS:
        return
    if name == "_view":
        view = query.get("view")
        if not view:
            raise BadRequest("`view` filter parameter is not provided.")
        ddoc, function = _split(view, "`view` must be of the form `designname/viewname`")
        await _member(reader, db, caller, ddoc, "views", function)
        raise BadRequest(f"filter=_view (view {view!r}) is not supported: {NARROW_INSTEAD}")
    if name.startswith("_"):
        raise BadRequest("unknown builtin filter name")
    ddoc, function = _split(name, "`filter` must be of the form `designname/filtername`")
    await _member(reader, db, caller, ddoc, "filters", function)
    raise BadRequest(f"filter {name!r} is not supported: {NARROW_INSTEAD}")


async def design_function(
    request: web.Request, rep: Replication, caller: Caller, t: Target
) -> web.Response:
    """``/db/_design/x/_view/y`` and the like: 404 without the design document, else 400."""
    assert t.doc_id is not None and t.attachment is not None
    await rep.reader.get_doc(t.db, caller, t.doc_id, None, ReadOptions())
    kind = t.attachment.split("/", 1)[0]
    raise BadRequest(
        f"{kind} is not supported: this server does not run design document functions "
        "(views, shows, lists, updates). Query documents with _all_docs or _changes "
        "(filter=_selector), or build the view locally in PouchDB."
    )


def _split(name: str, reason: str) -> tuple[str, str]:
    parts = [p for p in name.split("/") if p]
    if len(parts) != 2:
        raise BadRequest(reason)
    return parts[0], parts[1]


async def _member(
    reader: Reader, db: str, caller: Caller, ddoc: str, section: str, function: str
) -> Any:
    """``ddoc[section][function]`` of ``_design/{ddoc}``, or CouchDB's 404."""
    doc = await reader.get_doc(db, caller, f"_design/{ddoc}", None, ReadOptions())
    found: Any = doc
    for key in (section, function):
        if not isinstance(found, dict) or key not in found:
            raise NotFound(f"missing json key: {key}")
        found = found[key]
    return found
