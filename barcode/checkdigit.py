"""Patient-ID check digits: the one front door to the schemes fieldsync accepts.

An ID is ``payload + check character``.  The schemes (algorithms, sources and
what each one catches are in the modules named):

    luhn30    Luhn mod 30 over ``0123456789ACDEFGHJKLMNPRTUVWXY``    barcode.luhn
              = OpenMRS idgen LuhnMod30IdentifierValidator; the default, so
              cards printed by OpenMRS validate here
    luhn10    Luhn mod 10 over ``0123456789``                        barcode.luhn
              = idgen LuhnMod10IdentifierValidator = plain Luhn
    verhoeff  Verhoeff, digits only                                  barcode.verhoeff

A deployment with its own alphabet passes a :class:`barcode.luhn.LuhnModN`
wherever a :class:`Scheme` is taken.

:func:`validate` takes whatever a person typed or a scanner read and never
raises on a string; it answers with the first problem found, in this order::

    raw --normalise--> id -> EMPTY -> BAD_CHARACTER -> BAD_LENGTH -> BAD_CHECK_DIGIT -> valid

Positions in reasons are 1-based and count the characters of the normalised
ID (spaces and hyphens are formatting, not part of the ID).  A wrong check
digit is reported without the expected one: telling a user the "right" digit
would turn a mistyped ID into a valid-looking wrong patient.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from barcode.luhn import LUHN_MOD_10, LUHN_MOD_30
from barcode.verhoeff import VERHOEFF


class CheckAlgorithm(Protocol):
    """What a scheme provides: see :class:`barcode.luhn.LuhnModN`."""

    @property
    def alphabet(self) -> str: ...

    @property
    def name(self) -> str: ...

    def check_char(self, payload: str) -> str: ...

    def is_valid(self, full_id: str) -> bool: ...


class Scheme(enum.Enum):
    LUHN30 = "luhn30"
    LUHN10 = "luhn10"
    VERHOEFF = "verhoeff"

    @property
    def algorithm(self) -> CheckAlgorithm:
        return _ALGORITHMS[self]


_ALGORITHMS: dict[Scheme, CheckAlgorithm] = {
    Scheme.LUHN30: LUHN_MOD_30,
    Scheme.LUHN10: LUHN_MOD_10,
    Scheme.VERHOEFF: VERHOEFF,
}

SchemeLike: TypeAlias = Scheme | CheckAlgorithm


class Problem(enum.Enum):
    EMPTY = "empty"
    BAD_CHARACTER = "bad_character"
    BAD_LENGTH = "bad_length"
    BAD_CHECK_DIGIT = "bad_check_digit"


@dataclass(frozen=True)
class CheckResult:
    """The verdict on one ID; ``reason`` and ``problem`` are None when valid."""

    valid: bool
    id: str
    reason: str | None
    problem: Problem | None


# Hyphen-minus and the dashes phone keyboards and autocorrect put in its place.
_DASHES = frozenset("-\u2010\u2011\u2012\u2013\u2014\u2212")


def compute_check_char(payload: str, scheme: SchemeLike = Scheme.LUHN30) -> str:
    """The check character for ``payload``, which must already be normalised.

    Raises ValueError for an empty payload or a character outside the scheme's
    alphabet: allocation owns its payloads, so a bad one is a bug, not input.
    """
    if not payload:
        raise ValueError("cannot compute a check character for an empty payload")
    return _algorithm(scheme).check_char(payload)


def append_check_char(payload: str, scheme: SchemeLike = Scheme.LUHN30) -> str:
    """``payload`` followed by its check character (idgen's getValidIdentifier)."""
    return payload + compute_check_char(payload, scheme)


def normalise(raw: str, scheme: SchemeLike = Scheme.LUHN30) -> str:
    """Drop whitespace and dashes, and fold case toward the scheme's alphabet.

    An all-upper-case alphabet (the default) upper-cases the input, as idgen
    does; an all-lower-case one lower-cases it; a mixed-case one keeps case.
    """
    kept = "".join(char for char in raw if not char.isspace() and char not in _DASHES)
    alphabet = _algorithm(scheme).alphabet
    if alphabet == alphabet.upper():
        return kept.upper()
    if alphabet == alphabet.lower():
        return kept.lower()
    return kept


def validate(
    raw: str,
    scheme: SchemeLike = Scheme.LUHN30,
    *,
    min_length: int = 2,
    max_length: int = 32,
) -> CheckResult:
    """Check a typed or scanned ID; never raises on a string.

    The lengths count the normalised ID, check character included.  Raises
    ValueError only for impossible bounds (``min_length`` < 2 leaves no room
    for a payload, or ``max_length`` < ``min_length``).
    """
    if min_length < 2 or max_length < min_length:
        raise ValueError(f"impossible ID length bounds {min_length}..{max_length}")
    algorithm = _algorithm(scheme)
    normalised = normalise(raw, algorithm)
    found = _first_problem(normalised, algorithm, min_length, max_length)
    if found is None:
        return CheckResult(valid=True, id=normalised, reason=None, problem=None)
    problem, reason = found
    return CheckResult(valid=False, id=normalised, reason=reason, problem=problem)


def _first_problem(
    normalised: str, algorithm: CheckAlgorithm, min_length: int, max_length: int
) -> tuple[Problem, str] | None:
    if not normalised:
        return Problem.EMPTY, "ID is empty"
    for position, char in enumerate(normalised, start=1):
        if char not in algorithm.alphabet:
            reason = (
                f"character {char!r} at position {position} is not allowed in a {algorithm.name} ID"
            )
            return Problem.BAD_CHARACTER, reason
    if not min_length <= len(normalised) <= max_length:
        return Problem.BAD_LENGTH, f"ID must be {min_length} to {max_length} characters"
    if not algorithm.is_valid(normalised):
        return Problem.BAD_CHECK_DIGIT, "check digit is wrong"
    return None


def _algorithm(scheme: SchemeLike) -> CheckAlgorithm:
    return scheme.algorithm if isinstance(scheme, Scheme) else scheme
