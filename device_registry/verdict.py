"""Whether a request from a worker's app may go on, and why not.

The device check (``guard``) looks the token up (one indexed read; on CouchDB kept
for a moment, which changes that refuse a phone wait out: docs/adr/0006)
and hands what it found to :func:`judge`; the answer is either the device's
serial (the request goes on, attributed to that device) or a :class:`Refusal`
whose reason is sent back with the 401, so the app and the supervisor can tell
"not enrolled" from "this phone was reported stolen".
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from device_registry.status import DeviceStatus

TOKEN_HEADER = "X-Device-Token"


class Kind(enum.Enum):
    NO_TOKEN = "no_token"
    UNKNOWN_TOKEN = "unknown_token"
    OTHER_WORKER = "other_worker"
    REVOKED = "revoked"
    ENROLMENT = "enrolment_refused"


# What a revocation reason (a status value, or "reassigned"/"re_enrolled") means to a reader.
REVOKED: Mapping[str, str] = {
    "lost": "it was reported lost",
    "stolen": "it was reported stolen",
    "retired": "it was retired",
    "in_repair": "it was sent for repair",
    "in_stock": "it was returned to stock",
    "assigned": "it was reassigned",
    "reassigned": "it was reassigned to another worker",
    "re_enrolled": "it was enrolled again; a newer token replaced this one",
}


@dataclass(frozen=True)
class TokenBinding:
    """A stored token and the device it belongs to, as they are now."""

    serial: str
    token_worker: str
    revoked: str | None  # the revocation reason, None while the token is live
    status: DeviceStatus
    device_worker: str | None


def worth_keeping(found: tuple[object, TokenBinding] | None) -> bool:
    """A binding an adapter may answer again for a moment: its token is live.  Revoked and
    unknown tokens are read every time, so a phone just enrolled is never "unknown" from
    memory (docs/adr/0006)."""
    return found is not None and found[1].revoked is None


@dataclass(frozen=True)
class Refusal:
    kind: Kind
    reason: str
    serial: str | None = None


def no_token() -> Refusal:
    return Refusal(
        Kind.NO_TOKEN,
        f"This device is not enrolled: the app must send {TOKEN_HEADER}. Ask your "
        "supervisor for an enrolment code and enrol it (POST /api/v1/devices/enroll).",
    )


def judge(binding: TokenBinding | None, user: str) -> str | Refusal:
    """The serial of the device the request comes from, or why it is refused."""
    if binding is None:
        return Refusal(
            Kind.UNKNOWN_TOKEN,
            f"Unknown {TOKEN_HEADER}: this device is not enrolled on this server; "
            "enrol it with a new code from your supervisor.",
        )
    serial = binding.serial
    if binding.token_worker != user:
        return Refusal(
            Kind.OTHER_WORKER,
            f"The {TOKEN_HEADER} of device {serial} was issued to another worker.",
            serial,
        )
    reason = _revocation(binding)
    if reason is not None:
        why = REVOKED.get(reason, f"it is {reason}")
        return Refusal(Kind.REVOKED, f"Device {serial} is revoked: {why}.", serial)
    return serial


def _revocation(binding: TokenBinding) -> str | None:
    if binding.revoked is not None:
        return binding.revoked
    # Belt and braces: a live token on a device that is no longer its worker's.
    if binding.status is not DeviceStatus.ASSIGNED:
        return str(binding.status.value)
    if binding.device_worker != binding.token_worker:
        return "reassigned"
    return None
