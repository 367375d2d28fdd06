"""CSRF tokens for the supervisor pages' forms (signed double-submit, bound to the session).

A random nonce lives in a cookie the page sets (``HttpOnly``, ``SameSite=Strict``);
each form carries ``HMAC(secret, nonce, session cookie)``.  A cross-site page can
neither read the nonce nor forge the MAC, and a token stops working when the
session changes (log in, log out).  OWASP CSRF Prevention Cheat Sheet,
"Signed Double-Submit Cookie".
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

COOKIE = "fieldsync_csrf"
FIELD = "csrf"


def new_nonce() -> str:
    return secrets.token_urlsafe(24)


def token(secret: bytes, nonce: str, session: str) -> str:
    message = f"csrf\x00{nonce}\x00{session}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def valid(secret: bytes, nonce: str | None, session: str, given: str | None) -> bool:
    if not nonce or not given:
        return False
    return hmac.compare_digest(token(secret, nonce, session), given)
