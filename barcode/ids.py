"""How allocated patient IDs are spelt: a sequence number, written in the scheme's alphabet.

    ID       = payload + check character           (barcode.checkdigit)
    payload  = number written in base N over the scheme's alphabet (N = its
               size), left-padded with the alphabet's first character to
               ``min_payload_length``; it simply grows longer once the
               numbers outgrow that width

The default numbering starts at the payload ``10000`` (OpenMRS idgen's usual
``firstIdentifierBase``): the first luhn30 ID is ``10000X``, then ``10001V``.
Five payload characters in base 30 leave about 23 million IDs before the
sixth.  Sequence numbers are handed out by the adapters of :mod:`barcode.ports`; this
module only spells them.
"""

from __future__ import annotations

from dataclasses import dataclass

from barcode.checkdigit import Scheme, append_check_char


@dataclass(frozen=True)
class IdFormat:
    scheme: Scheme = Scheme.LUHN30
    first_payload: str = "10000"
    min_payload_length: int = 5

    def __post_init__(self) -> None:
        if not self.first_payload:
            raise ValueError("first_payload must not be empty")
        self.number_of(self.first_payload)  # every character must be in the alphabet

    @property
    def alphabet(self) -> str:
        return self.scheme.algorithm.alphabet

    @property
    def first_number(self) -> int:
        return self.number_of(self.first_payload)

    def payload_for(self, number: int) -> str:
        """``number`` written in base N, padded to the minimum payload length."""
        if number < 0:
            raise ValueError("sequence numbers are not negative")
        base, digits = len(self.alphabet), []
        while True:
            number, digit = divmod(number, base)
            digits.append(self.alphabet[digit])
            if number == 0:
                break
        return "".join(reversed(digits)).rjust(self.min_payload_length, self.alphabet[0])

    def number_of(self, payload: str) -> int:
        """The inverse of :meth:`payload_for` (padding ignored)."""
        base, number = len(self.alphabet), 0
        for char in payload:
            digit = self.alphabet.find(char)
            if digit < 0:
                raise ValueError(f"{char!r} is not in the {self.scheme.value} alphabet")
            number = number * base + digit
        return number

    def id_for(self, number: int) -> str:
        """The full patient ID (payload + check character) for sequence ``number``."""
        return append_check_char(self.payload_for(number), self.scheme)
