"""One error tree for the whole server, rendered CouchDB-style at the edge.

Every error carries CouchDB's HTTP status, its ``error`` token and a
human ``reason``; the middleware in :mod:`sync.app` renders
``{"error": ..., "reason": ...}``.  Library exceptions (sqlite3, aiohttp,
cryptography) are turned into these at the boundary with ``raise ... from``.

    FieldsyncError                 500 unknown_error
    ├── BadRequest                 400 bad_request
    │   └── InvalidJSON            400 bad_request   (body is not UTF-8 JSON)
    ├── ShareError                 400 bad_share     (backup.shares: a mistyped or foreign
    │                                                 share, or fewer than K of them)
    ├── ArchiveError               400 bad_archive   (backup.sealed: not an archive, or one
    │                                                 cut short or altered)
    ├── RefusedDocument            400 bad_request   (replication.documents: refused
    │   │                                             while reading a request, before
    │   │                                             any write)
    │   ├── DocValidationError     400 doc_validation
    │   ├── IllegalDocId           400 illegal_docid
    │   └── DocumentTooDeep        400 bad_request   (nested past the depth limit)
    ├── Unauthorized               401 unauthorized
    │   └── AccountDisabled        401 unauthorized  (auth: the account is disabled;
    │                                                 said once the password is proven)
    ├── Forbidden                  403 forbidden
    │   ├── DocumentElsewhere      403 forbidden     (store.rules: lives in another place)
    │   ├── WriteRefused           403 forbidden     (replication.context: a document refused
    │   │                                             for its place or by a validator, with
    │   │                                             the refused-records code)
    │   └── EnrolmentRefused       403 enrolment_refused  (device_registry.enrolment)
    ├── NotFound                   404 not_found
    ├── NoStore                    404 no_data_dir   (store.schema: a data dir without a
    │                                                 store; only init and serve make one)
    ├── MethodNotAllowed           405 method_not_allowed
    ├── NotAcceptable              406 not_acceptable
    ├── Conflict                   409 conflict
    │   └── NotAssigned            409 conflict      (device_registry.enrolment: a code
    │                                                 for a device no worker holds)
    ├── DataDirBusy                409 data_dir_busy (datadir: another server has it)
    ├── TargetInUse                409 target_not_empty  (backup.archive: restore into a
    │                                                     folder that holds something)
    ├── PreconditionFailed         412 file_exists / precondition_failed
    │   └── MissingStub            412 missing_stub  (replication.writes)
    ├── TooLarge                   413 too_large
    │   └── ImageTooLarge          413 image_too_large  (barcode.errors)
    ├── UnsupportedMediaType       415 bad_content_type
    │   └── NotAnImage             415 not_an_image  (barcode.errors)
    ├── Unprocessable              422 unprocessable (barcode.errors: a photo we cannot use)
    │   ├── ImageDimensions        422 image_dimensions
    │   ├── CorruptImage           422 corrupt_image
    │   ├── UnreadableImage        422 unreadable_image
    │   ├── NoBarcode              422 no_barcode
    │   └── AmbiguousScan          422 several_ids
    ├── TooManyRequests            429 too_many_requests
    ├── KeyError_                  500 key_error     (keys: a data key cannot be opened)
    │   └── MasterKeyMissing       500 master_key_missing  (keys: sealed keys, no master
    │                                                       key file; opening refuses)
    ├── StoreError                 500 internal_server_error
    │   └── AuditBroken            500 audit_broken  (auditverify: refused at start)
    └── ServiceUnavailable         503 service_unavailable
        ├── StoreUnavailable       503 service_unavailable  (store.couchdb.client: CouchDB
        │                                                    unreachable, failing or refusing us)
        ├── AccountsNotReady       503 service_unavailable  (people_store.ports: a server
        │                                                    still copying its users into CouchDB)
        └── DecoderUnavailable     503 decoder_unavailable  (barcode.errors: no zbar)

See https://docs.couchdb.org/en/stable/api/basics.html#http-status-codes
"""

from __future__ import annotations

from typing import Any, ClassVar


class FieldsyncError(Exception):
    status: ClassVar[int] = 500
    error: ClassVar[str] = "unknown_error"
    default_reason: ClassVar[str] = "Unknown error."

    def __init__(self, reason: str | None = None, *, error: str | None = None) -> None:
        self.reason = reason or self.default_reason
        self.error_token = error or self.error
        super().__init__(self.reason)

    def to_json(self) -> dict[str, Any]:
        return {"error": self.error_token, "reason": self.reason}


class BadRequest(FieldsyncError):
    status = 400
    error = "bad_request"
    default_reason = "Bad request."


class InvalidJSON(BadRequest):
    default_reason = "Request body is not valid UTF-8 JSON."


class Unauthorized(FieldsyncError):
    status = 401
    error = "unauthorized"
    default_reason = "Name or password is incorrect."


class Forbidden(FieldsyncError):
    status = 403
    error = "forbidden"
    default_reason = "You are not allowed to do this."


class NotFound(FieldsyncError):
    status = 404
    error = "not_found"
    default_reason = "missing"


class MethodNotAllowed(FieldsyncError):
    status = 405
    error = "method_not_allowed"
    default_reason = "Method not allowed here."


class NotAcceptable(FieldsyncError):
    status = 406
    error = "not_acceptable"
    default_reason = "Not acceptable."


class Conflict(FieldsyncError):
    status = 409
    error = "conflict"
    default_reason = "Document update conflict."


class PreconditionFailed(FieldsyncError):
    status = 412
    error = "precondition_failed"
    default_reason = "Precondition failed."


class TooLarge(FieldsyncError):
    status = 413
    error = "too_large"
    default_reason = "Request body is too large."


class UnsupportedMediaType(FieldsyncError):
    status = 415
    error = "bad_content_type"
    default_reason = "Content-Type is not supported here."


class TooManyRequests(FieldsyncError):
    status = 429
    error = "too_many_requests"
    default_reason = "Too many requests; slow down."


class StoreError(FieldsyncError):
    status = 500
    error = "internal_server_error"
    default_reason = "The store failed."


class ServiceUnavailable(FieldsyncError):
    status = 503
    error = "service_unavailable"
    default_reason = "Service unavailable."


class StoreUnavailable(ServiceUnavailable):
    """The document store (CouchDB/Cloudant) cannot be used right now; retry later."""

    default_reason = "The document store is unavailable; try again shortly."
