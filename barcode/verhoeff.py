"""The Verhoeff check digit (digits only).

Algorithm: J. Verhoeff, "Error Detecting Decimal Codes", Mathematical Centre
Tract 29, 1969; tables as in https://en.wikipedia.org/wiki/Verhoeff_algorithm:

    d    multiplication table of the dihedral group D5 (10 elements)
    p    p[i] = p[1] applied i times, p[1] = (1 5 7 6 2 8 3 0 9 4); p[8] = p[0]
    inv  inv[j] is the k with d[j][k] == 0

Walk the digits from the RIGHT, position i = 0, 1, 2, ...:
``c = d[c][p[i % 8][digit]]``.  A full number is valid when c ends at 0.  To
make a check digit, run the same walk over the payload with positions shifted
by one (the check digit will take position 0) and append ``inv[c]``.

It catches every single-digit substitution and every adjacent transposition,
the check digit included (tests/barcode/test_checkdigit.py brute-forces both).
"""

from __future__ import annotations

from dataclasses import dataclass, field

_D: tuple[tuple[int, ...], ...] = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)

_P1 = (1, 5, 7, 6, 2, 8, 3, 0, 9, 4)


def _permutation_powers() -> tuple[tuple[int, ...], ...]:
    powers = [tuple(range(10))]
    for _ in range(7):
        powers.append(tuple(_P1[digit] for digit in powers[-1]))
    return tuple(powers)


_P = _permutation_powers()
_INV = tuple(row.index(0) for row in _D)

DIGITS = "0123456789"


def _walk(digits: str, first_position: int) -> int:
    check = 0
    for position, char in enumerate(reversed(digits), start=first_position):
        digit = DIGITS.find(char)
        if digit < 0:
            raise ValueError(f"{char!r} is not a digit")
        check = _D[check][_P[position % 8][digit]]
    return check


@dataclass(frozen=True)
class Verhoeff:
    """The Verhoeff scheme, shaped like :class:`barcode.luhn.LuhnModN`."""

    alphabet: str = field(default=DIGITS, init=False)
    name: str = field(default="verhoeff", init=False)

    def check_char(self, payload: str) -> str:
        """The digit to append to ``payload`` (ASCII digits only)."""
        return str(_INV[_walk(payload, first_position=1)])

    def is_valid(self, full_id: str) -> bool:
        """Whether ``full_id`` (payload + check digit) walks back to 0."""
        return _walk(full_id, first_position=0) == 0


VERHOEFF = Verhoeff()
