"""Validators for what is typed about a phone: serial number, IMEI, SIM phone number.

Each returns the canonical form of a valid value, or raises ``BadRequest`` with a
message that says what is wrong, in words an implementer can act on.

* IMEI: 14 digits (TAC + serial number) and a Luhn check digit, 15 in all.
  3GPP TS 23.003, section 6.2.1 and annex B.  Printed IMEIs carry spaces,
  hyphens or slashes ("35-209900-176148-1"); those are ignored.
* Phone numbers: E.164, ``+`` then the country code and subscriber number,
  at most 15 digits (ITU-T E.164, section 6).  ``00`` is accepted for ``+``.
* Serial numbers: what manufacturers print, 1-64 letters, digits, ``.``, ``_``, ``-``
  (case-insensitive, stored upper-case).
"""

from __future__ import annotations

import re

from sync.errors import BadRequest

IMEI_LENGTH = 15
SERIAL_RE = re.compile(r"^[A-Z0-9][A-Z0-9._-]{0,63}$")
E164_RE = re.compile(r"^\+[1-9][0-9]{6,14}$")
_IMEI_SEPARATORS = re.compile(r"[\s/-]")
_PHONE_SEPARATORS = re.compile(r"[\s().-]")


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits ends in its Luhn (mod 10) check digit."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def imei(raw: str) -> str:
    """The 15 digits of a valid IMEI."""
    value = _IMEI_SEPARATORS.sub("", raw)
    if not value:
        raise BadRequest(f"an IMEI is required: {IMEI_LENGTH} digits (dial *#06# to see it)")
    if not value.isascii() or not value.isdigit():
        raise BadRequest(f"IMEI {raw!r} must contain only digits")
    if len(value) != IMEI_LENGTH:
        raise BadRequest(f"IMEI {raw!r} must have {IMEI_LENGTH} digits, not {len(value)}")
    if not luhn_valid(value):
        raise BadRequest(f"IMEI {raw!r} has a wrong check digit (last digit); check for a typo")
    return value


def phone(raw: str) -> str:
    """A phone number in E.164 form, ``+`` and digits only."""
    value = _PHONE_SEPARATORS.sub("", raw)
    if value.startswith("00"):
        value = "+" + value[2:]
    if not value.startswith("+"):
        raise BadRequest(
            f"phone number {raw!r} must be international (E.164): '+', country code, number"
        )
    if not E164_RE.match(value):
        raise BadRequest(
            f"phone number {raw!r} is not E.164: '+', then 7-15 digits not starting with 0"
        )
    return value


def serial(raw: str) -> str:
    """A serial number, upper-case, surrounding spaces removed."""
    value = raw.strip().upper()
    if not SERIAL_RE.match(value):
        raise BadRequest(
            f"serial number {raw!r} must be 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def text(raw: str, field: str, limit: int = 200) -> str:
    """Free text (model, versions, notes): printable, at most ``limit`` characters."""
    value = raw.strip()
    if len(value) > limit:
        raise BadRequest(f"{field} must be at most {limit} characters")
    if any(not char.isprintable() and char not in "\n\t" for char in value):
        raise BadRequest(f"{field} must not contain control characters")
    return value
