"""The documents of the CouchDB device adapter, and their conversion to the registry's values.

One database, ``<prefix>devices``::

    device:<SERIAL>         {"type": "device", serial, imei, imei2, model, os_version,
                             app_version, phone, worker, place, issued, status, last_sync,
                             notes, created, updated,
                             "token": live token hash | null,   at most one live token
                             "code": live code hash | null,     a newer code voids the older
                             "revoked": why the last live token stopped being live}
    claim:imei:<IMEI>       {"type": "claim", "serial", "at"}   who holds an IMEI, or an
    claim:phone:<E.164>     {"type": "claim", "serial", "at"}   active device's SIM number
    gone:<E.164>            {"type": "gone", "serial"}  the number's latest lost or stolen
                            phone (its texts are flagged to the worker's supervisor)
    code:<sha256 of code>   {"type": "code", serial, worker, issued_by, created, expires,
                             used, "by": the redemption that used it}
    token:<sha256 of token> {"type": "token", serial, worker, created, revoked?, revoked_reason?}
    history:<SERIAL>:<ns>:<random>   one history entry, {"type": "history", serial, at, actor,
                             action, from_status, to_status, from_worker, to_worker, reason}
    refusal:<ns>:<random>   one refused attempt (``device_registry.enrolment.RefusedAttempt``)
    failures:<sha256 of key>  the refusal limits' counters (``device_registry.couchdb_limits``)
    secret:csrf             {"sealed": the pages' CSRF signing secret, wrapped by the
                             master key}: one secret for every instance

Only hashes of codes and tokens are stored (as in the embedded store).  A
token is live while its device's ``token`` names it: revoking is one write of
the device document, so the next ``binding`` through any instance sees it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Any

from device_registry.dump import TABLES
from device_registry.model import Device, HistoryEntry
from device_registry.status import DeviceStatus
from sync.scopes import User

Doc = dict[str, Any]

DB_NAME = "devices"  # after the deployment's prefix
DEVICE_FIELDS = TABLES["devices"][1:]  # a row's columns but its number
HISTORY_FIELDS = TABLES["device_history"][2:]  # an entry's columns but its number and device


def device_id(serial: str) -> str:
    return f"device:{serial.strip().upper()}"


def claim_id(kind: str, value: str) -> str:
    return f"claim:{kind}:{value}"


def gone_id(phone: str) -> str:
    return f"gone:{phone}"


def code_id(code_hash: str) -> str:
    return f"code:{code_hash}"


def token_id(token_hash: str) -> str:
    return f"token:{token_hash}"


def unique_suffix() -> str:
    """A suffix that orders by time and never repeats (nanoseconds, then randomness)."""
    return f"{time.time_ns():020d}:{secrets.token_hex(6)}"


def history_id(serial: str) -> str:
    return f"history:{serial}:{unique_suffix()}"


def device_doc(device: Device) -> Doc:
    body: Doc = {"_id": device_id(device.serial), "type": "device"}
    for name in DEVICE_FIELDS:
        value = getattr(device, name)
        body[name] = value.value if isinstance(value, DeviceStatus) else value
    body.update(token=None, code=None, revoked=None)
    return body


def device_of(doc: Mapping[str, Any], user: User | None) -> Device:
    """The device of ``doc``, with its worker's places and account status from ``user``."""
    return Device(
        serial=str(doc["serial"]),
        imei=str(doc["imei"]),
        imei2=doc.get("imei2"),
        model=str(doc.get("model") or ""),
        os_version=str(doc.get("os_version") or ""),
        app_version=str(doc.get("app_version") or ""),
        phone=doc.get("phone"),
        worker=doc.get("worker"),
        worker_places=user.places if user is not None else (),
        place=doc.get("place"),
        issued=doc.get("issued"),
        status=DeviceStatus(doc["status"]),
        last_sync=doc.get("last_sync"),
        notes=str(doc.get("notes") or ""),
        created=str(doc.get("created") or ""),
        updated=str(doc.get("updated") or ""),
        worker_status=user.status if user is not None else None,
    )


def history_doc(serial: str, entry: HistoryEntry) -> Doc:
    body: Doc = {"_id": history_id(serial), "type": "history", "serial": serial}
    body.update({name: getattr(entry, name) for name in HISTORY_FIELDS})
    return body


def history_of(doc: Mapping[str, Any]) -> HistoryEntry:
    return HistoryEntry(*(doc.get(name) for name in HISTORY_FIELDS))  # type: ignore[arg-type]


def without_meta(doc: Mapping[str, Any]) -> Doc:
    """A leaf as the body of its next revision (``_rev`` kept, CouchDB's extras dropped)."""
    return {k: v for k, v in doc.items() if k not in ("_conflicts", "_revisions")}
