"""Luhn mod N: the Luhn check digit generalised to any even-sized alphabet.

Algorithm: https://en.wikipedia.org/wiki/Luhn_mod_N_algorithm, exactly as
OpenMRS idgen implements it in ``LuhnModNIdentifierValidator``
(openmrs/openmrs-module-idgen, api/src/main/java/org/openmrs/module/idgen/
validator/LuhnModNIdentifierValidator.java), so IDs printed by OpenMRS validate
here and IDs made here validate there:

    code point   the index of a character in the alphabet (N characters)
    weighting    walk the string from the RIGHT; when computing a check
                 character the rightmost payload character is doubled, then
                 every second one leftwards (factors 2, 1, 2, 1, ...); when
                 validating a full ID the check character has factor 1
    doubling     2·c is written in base N and its two digits are added:
                 (2c // N) + (2c % N)
    check char   alphabet[(N - sum % N) % N]; a full ID is valid when its
                 weighted sum is 0 mod N

idgen's LuhnMod30 alphabet is ``0123456789ACDEFGHJKLMNPRTUVWXY`` (B, I, O, Q,
S, Z left out as easy to confuse); LuhnMod10 is ``0123456789`` and equals
plain Luhn (ISO/IEC 7812-1).

What it catches, for even N: every single-character substitution (doubling is
then a permutation of 0..N-1), and every adjacent transposition except
swapping the alphabet's first and last characters (``0`` <-> ``Y`` in mod 30,
``0`` <-> ``9`` in mod 10), at any position, the check character included.
For odd N doubling is not a permutation (idgen's LuhnMod25 cannot tell ``4``
from ``K`` in a doubled position), so odd alphabets are refused.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LuhnModN:
    """A Luhn mod N scheme over ``alphabet``; ``name`` is what users are told."""

    alphabet: str
    name: str

    def __post_init__(self) -> None:
        size = len(self.alphabet)
        if size < 2 or size % 2:
            raise ValueError(f"a Luhn mod N alphabet needs an even size of at least 2, not {size}")
        if len(set(self.alphabet)) != size:
            raise ValueError("a Luhn mod N alphabet must not repeat a character")

    def check_char(self, payload: str) -> str:
        """The character to append to ``payload`` (every character in the alphabet)."""
        remainder = self._weighted_sum(payload, double_rightmost=True)
        return self.alphabet[-remainder % len(self.alphabet)]

    def is_valid(self, full_id: str) -> bool:
        """Whether ``full_id`` (payload + check character) sums to 0 mod N."""
        return self._weighted_sum(full_id, double_rightmost=False) == 0

    def _weighted_sum(self, text: str, *, double_rightmost: bool) -> int:
        size = len(self.alphabet)
        total = 0
        double = double_rightmost
        for char in reversed(text):
            code_point = self._code_point(char)
            if double:
                code_point = sum(divmod(2 * code_point, size))
            total += code_point
            double = not double
        return total % size

    def _code_point(self, char: str) -> int:
        code_point = self.alphabet.find(char)
        if code_point < 0:
            raise ValueError(f"{char!r} is not in the {self.name} alphabet")
        return code_point


LUHN_MOD_30 = LuhnModN(alphabet="0123456789ACDEFGHJKLMNPRTUVWXY", name="luhn30")
LUHN_MOD_10 = LuhnModN(alphabet="0123456789", name="luhn10")
