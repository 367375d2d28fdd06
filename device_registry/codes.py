"""Enrolment codes and device tokens: made at random, stored only as hashes.

An enrolment code is typed or scanned once, so it is short and unambiguous:
10 characters of Crockford's base32 (no I, L, O, U; https://www.crockford.com/base32.html)
shown as ``XXXXX-XXXXX``, 50 bits.  It is single-use, expires, and guessing is
slowed down by the failure limits, so 50 bits is ample.  Reading it back forgives
case, spaces, hyphens and the look-alikes Crockford names (O for 0, I and L for 1).

A device token is what the app then sends on every request (``X-Device-Token``):
256 random bits, URL-safe base64.  Both are high-entropy, so a plain SHA-256 is
the right hash (a slow password hash would buy nothing and cost every request).
"""

from __future__ import annotations

import hashlib
import json
import secrets

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 10
_LOOK_ALIKES = str.maketrans({"O": "0", "I": "1", "L": "1"})
TOKEN_BYTES = 32


def new_code() -> str:
    """A fresh enrolment code, ``XXXXX-XXXXX``."""
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
    return f"{raw[:5]}-{raw[5:]}"


def normalise_code(typed: str) -> str | None:
    """The canonical 10 characters of a typed code, or None if it cannot be one."""
    value = "".join(typed.split()).replace("-", "").upper().translate(_LOOK_ALIKES)
    if len(value) != CODE_LENGTH or any(char not in ALPHABET for char in value):
        return None
    return value


def code_hash(code: str) -> str:
    """The stored form of an enrolment code (normalise it first)."""
    return hashlib.sha256(b"enrolment-code\x00" + code.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """The stored form of a device token."""
    return hashlib.sha256(b"device-token\x00" + token.encode()).hexdigest()


def qr_payload(code: str, serial: str, server: str | None) -> str:
    """What the QR code holds: the app learns the serial from it (Android 10+ hides it)."""
    payload = {"fieldsync": "enrol", "code": code, "serial": serial}
    if server:
        payload["server"] = server
    return json.dumps(payload, separators=(",", ":"))
