"""Why a document was refused, in a supervisor's words, and what to do about it.

:func:`reason_of` turns the error a pushed document got into a refused-records
reason (a code and the detail), or None for what is no refusal (a conflict is
CouchDB's normal answer to a concurrent edit, and the phone resolves it).
:data:`REASONS` holds, per code, the plain words and the advice the API and the
pages show; the pages translate both (``SWAHILI_REFUSALS`` in
:mod:`device_registry.refusal_pages`).

    code                  from
    outside_scope         a place outside the worker's capture scope, or a document
                          that lives in such a place (store.rules.DocumentElsewhere)
    unknown_place         a place id the server does not know
    retired_place         a retired place (it takes nothing)
    no_place              a worker's document without ``place``, or one that drops it
    form_schema           the document fails its form's schema (forms.docschema)
    validator             another package's validator refused it
    too_large             larger than FIELDSYNC_MAX_DOCUMENT_BYTES
    malformed             not a valid CouchDB document (bad id, bad special member,
                          bad revision, too deep, bad attachment)
    missing_attachment    an attachment stub the server holds no data for
    unreadable            the request's body was not JSON at all
"""

from __future__ import annotations

from dataclasses import dataclass

from sync.errors import BadRequest, FieldsyncError, Forbidden, TooLarge
from sync.replication.context import WriteRefused
from sync.replication.documents import RefusedDocument
from sync.replication.writes import MissingStub
from sync.store.rules import DocumentElsewhere


@dataclass(frozen=True)
class Words:
    title: str  # the reason in plain words
    advice: str  # what to do about it


REASONS: dict[str, Words] = {
    "outside_scope": Words(
        "Outside the worker's area",
        "The record names a place this worker may not write to. Check the worker's places "
        "on their account; if the record is right, a supervisor of that place must enter it.",
    ),
    "unknown_place": Words(
        "Unknown place",
        "The record names a place the server does not know. Update the app's place list "
        "(sync again), or ask the administrator to add the place.",
    ),
    "retired_place": Words(
        "Place retired",
        "The record names a place that is retired. Enter the record again under the "
        "place that replaced it.",
    ),
    "no_place": Words(
        "No place given",
        "The record has no place. Update the app; if it still happens, report it to the "
        "administrator with the document id.",
    ),
    "form_schema": Words(
        "Does not match its form",
        "A field breaks the form's rule shown above. Ask the worker to correct the record "
        "on the phone; it is sent again at the next sync.",
    ),
    "validator": Words(
        "Refused by a check",
        "The server's check shown above refused the record. Ask the worker to correct it "
        "on the phone.",
    ),
    "too_large": Words(
        "Too large",
        "The record (with its photos) is larger than the server takes. Ask the worker to "
        "remove or shrink large photos, or the administrator to raise the limit.",
    ),
    "malformed": Words(
        "Not a valid record",
        "The app sent something the server cannot store. Update the app; if it still "
        "happens, report it to the administrator with the document id.",
    ),
    "missing_attachment": Words(
        "Photo or file missing",
        "The record points to a photo or file the phone did not send. Ask the worker to "
        "open the record and attach it again.",
    ),
    "unreadable": Words(
        "Unreadable request",
        "The phone sent data the server could not read at all. Check the phone's connection "
        "and app version; report it to the administrator if it repeats.",
    ),
}
UNKNOWN = Words("Refused", "Report it to the administrator with the document id.")


def words(code: str) -> Words:
    return REASONS.get(code, UNKNOWN)


def reason_of(error: FieldsyncError) -> tuple[str, str] | None:
    """``(code, detail)`` of a pushed document's error, or None when it is no refusal."""
    if isinstance(error, WriteRefused):
        return error.code, error.detail
    if isinstance(error, DocumentElsewhere):
        return "outside_scope", "The document lives in a place outside this worker's area."
    if isinstance(error, TooLarge):
        return "too_large", error.reason
    if isinstance(error, MissingStub):
        return "missing_attachment", error.reason
    if isinstance(error, RefusedDocument | BadRequest):  # what makes no valid document
        return "malformed", error.reason
    if isinstance(error, Forbidden):
        return "validator", error.reason
    return None
