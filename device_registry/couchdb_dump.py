"""Export and import of the CouchDB device adapter (``device_registry.dump``'s shape).

Imported documents are named from what they record (a device by its serial, a
code or token by its hash, a history entry or refused attempt by the row's id
in the dump), so running an import again creates nothing twice: ``_bulk_docs``
answers a conflict for each document already there, and it is kept.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from device_registry.couchdb_docs import (
    DEVICE_FIELDS,
    HISTORY_FIELDS,
    Doc,
    claim_id,
    code_id,
    device_id,
    gone_id,
    token_id,
)
from device_registry.dump import TABLES
from device_registry.lookup import GONE
from device_registry.status import ACTIVE

if TYPE_CHECKING:
    from device_registry.couchdb import CouchDevices


async def export_docs(store: CouchDevices) -> dict[str, list[dict[str, Any]]]:
    """Every document, as the embedded store's rows (devices numbered from 1 by serial)."""
    devices = await store.range("device:")
    ids = {str(d["serial"]): n for n, d in enumerate(devices, start=1)}
    found: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}
    for doc in devices:
        found["devices"].append({"id": ids[str(doc["serial"])], **_pick(doc, DEVICE_FIELDS)})
    history = await store.range("history:")
    for n, doc in enumerate(history, start=1):
        row = {"id": n, "device": ids.get(str(doc["serial"])), **_pick(doc, HISTORY_FIELDS)}
        found["device_history"].append(row)
    by_serial = {str(d["serial"]): d for d in devices}
    for doc in await store.range("code:"):
        device = by_serial.get(str(doc["serial"]), {})
        found["enrolment_codes"].append(_code_row(doc, ids, device))
    for doc in await store.range("token:"):
        device = by_serial.get(str(doc["serial"]), {})
        found["device_tokens"].append(_token_row(doc, ids, device))
    refusals = await store.range("refusal:")
    columns = TABLES["device_refusals"][1:]
    for n, doc in enumerate(refusals, start=1):
        found["device_refusals"].append({"id": n, **_pick(doc, columns)})
    return found


def _code_row(doc: Doc, ids: Mapping[str, int], device: Mapping[str, Any]) -> dict[str, Any]:
    key = str(doc["_id"]).split(":", 1)[1]
    return {
        "code_hash": key,
        "device": ids.get(str(doc["serial"])),
        **_pick(doc, ("worker", "issued_by", "created", "expires", "used")),
        "superseded": 0 if device.get("code") == key or doc.get("used") else 1,
    }


def _token_row(doc: Doc, ids: Mapping[str, int], device: Mapping[str, Any]) -> dict[str, Any]:
    key = str(doc["_id"]).split(":", 1)[1]
    live = device.get("token") == key
    return {
        "token_hash": key,
        "device": ids.get(str(doc["serial"])),
        "worker": doc.get("worker"),
        "created": doc.get("created"),
        "revoked": None if live else doc.get("revoked") or device.get("updated"),
        "revoked_reason": None if live else doc.get("revoked_reason") or device.get("revoked"),
    }


async def import_rows(store: CouchDevices, dump: Mapping[str, Sequence[Mapping[str, Any]]]) -> int:
    """Create the documents of ``dump`` not there yet; how many were new."""
    serials = {row["id"]: str(row["serial"]) for row in dump.get("devices", ())}
    tokens = dump.get("device_tokens", ())
    codes = dump.get("enrolment_codes", ())
    docs: list[Doc] = []
    for row in dump.get("devices", ()):
        docs += _device_docs(row, tokens, codes)
    for row in dump.get("device_history", ()):
        serial = serials.get(row["device"], "?")
        docs.append(
            {
                "_id": f"history:{serial}:{_ns(row['at'])}:imported-{int(row['id']):012d}",
                "type": "history",
                "serial": serial,
                **_pick(row, HISTORY_FIELDS),
            }
        )
    for row in codes:
        fields = _pick(row, ("worker", "issued_by", "created", "expires", "used"))
        docs.append(
            {
                "_id": code_id(str(row["code_hash"])),
                "type": "code",
                "serial": serials.get(row["device"], "?"),
                **fields,
            }
        )
    for row in tokens:
        fields = _pick(row, ("worker", "created", "revoked", "revoked_reason"))
        docs.append(
            {
                "_id": token_id(str(row["token_hash"])),
                "type": "token",
                "serial": serials.get(row["device"], "?"),
                **fields,
            }
        )
    for row in dump.get("device_refusals", ()):
        docs.append(
            {
                "_id": f"refusal:{_ns(row['at'])}:imported-{int(row['id']):012d}",
                "type": "refusal",
                **_pick(row, TABLES["device_refusals"][1:]),
            }
        )
    return sum([await store.bulk(docs[i : i + 500]) for i in range(0, len(docs), 500)])


def _device_docs(
    row: Mapping[str, Any],
    tokens: Sequence[Mapping[str, Any]],
    codes: Sequence[Mapping[str, Any]],
) -> list[Doc]:
    """The device's document (live token and code from the dump) and its claims."""
    own = [t for t in tokens if t["device"] == row["id"]]
    live = [t["token_hash"] for t in own if t.get("revoked") is None]
    revoked = [t.get("revoked_reason") for t in own if t.get("revoked") is not None]
    open_codes = [
        c["code_hash"]
        for c in codes
        if c["device"] == row["id"] and not c.get("used") and not c.get("superseded")
    ]
    serial = str(row["serial"])
    device: Doc = {"_id": device_id(serial), "type": "device", **_pick(row, DEVICE_FIELDS)}
    device.update(
        token=live[-1] if live else None,
        code=open_codes[-1] if open_codes else None,
        revoked=revoked[-1] if revoked else None,
    )
    claim = {"type": "claim", "serial": serial, "at": 0}
    docs = [device]
    docs += [{"_id": claim_id("imei", v), **claim} for v in (row["imei"], row.get("imei2")) if v]
    if row.get("phone") and row.get("status") in {s.value for s in ACTIVE}:
        docs.append({"_id": claim_id("phone", str(row["phone"])), **claim})
    if row.get("phone") and row.get("status") in GONE and row.get("worker"):
        docs.append({"_id": gone_id(str(row["phone"])), "type": "gone", "serial": serial})
    return docs


def _ns(at: Any) -> str:
    """``at`` (UTC ISO 8601) as the nanoseconds the adapter's own ids start with, so
    imported entries sort among native ones by time."""
    moment = dt.datetime.fromisoformat(str(at))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return f"{int(moment.timestamp()) * 1_000_000_000:020d}"


def _pick(row: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    return {name: row.get(name) for name in names}
