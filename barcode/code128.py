"""A small, table-driven Code 128 encoder (code sets B and C).

Symbology: ISO/IEC 15417; table and worked examples as in
https://en.wikipedia.org/wiki/Code_128.  A symbol is::

    quiet zone · start · data symbols · check symbol · stop · quiet zone

    symbol       6 elements (bar, space, bar, space, bar, space) of 1-4
                 modules each, 11 modules in all; the stop has a final bar,
                 7 elements, 13 modules
    value        0..102 data, 103/104/105 start A/B/C, 106 stop
    code set B   value = ord(char) - 32 for ASCII 32..127
    code set C   value = the number of a pair of digits, 00..99
    switching    value 99 = "CODE C" (from B), value 100 = "CODE B" (from C)
    check        (start value + sum(position * value)) mod 103, positions
                 counted from 1 over the data symbols (switches included)

Runs of at least four digits (or a whole even-length number) go in set C,
two digits per symbol; everything else in set B.  Set A (control
characters) is never needed for patient IDs and is not offered.
"""

from __future__ import annotations

import re

# The element widths of values 0..106 (bars and spaces alternate, bar first).
PATTERNS: tuple[str, ...] = (
    "212222", "222122", "222221", "121223", "121322", "131222", "122213", "122312",
    "132212", "221213", "221312", "231212", "112232", "122132", "122231", "113222",
    "123122", "123221", "223211", "221132", "221231", "213212", "223112", "312131",
    "311222", "321122", "321221", "312212", "322112", "322211", "212123", "212321",
    "232121", "111323", "131123", "131321", "112313", "132113", "132311", "211313",
    "231113", "231311", "112133", "112331", "132131", "113123", "113321", "133121",
    "313121", "211331", "231131", "213113", "213311", "213131", "311123", "311321",
    "331121", "312113", "312311", "332111", "314111", "221411", "431111", "111224",
    "111422", "121124", "121421", "141122", "141221", "112214", "112412", "122114",
    "122411", "142112", "142211", "241211", "221114", "413111", "241112", "134111",
    "111242", "121142", "121241", "114212", "124112", "124211", "411212", "421112",
    "421211", "212141", "214121", "412121", "111143", "111341", "131141", "114113",
    "114311", "411113", "411311", "113141", "114131", "311141", "411131", "211412",
    "211214", "211232", "2331112",
)  # fmt: skip

CODE_C, CODE_B = 99, 100
START_B, START_C, STOP = 104, 105, 106
QUIET_ZONE = 10  # modules each side, the minimum the standard asks for

_DIGIT_RUN = re.compile(r"\d{4,}")


def encode_values(text: str) -> list[int]:
    """The symbol values for ``text``: start, data (with switches), check, stop.

    Raises ValueError for an empty text or a character outside ASCII 32..127.
    """
    if not text:
        raise ValueError("Code 128 cannot encode an empty text")
    for char in text:
        if not 32 <= ord(char) <= 127:
            raise ValueError(f"{char!r} cannot be encoded in Code 128 set B or C")
    data = _data_values(text)
    check = (data[0] + sum(position * value for position, value in enumerate(data))) % 103
    return [*data, check, STOP]


def _data_values(text: str) -> list[int]:
    """Start code and data values, choosing set C for long digit runs."""
    if text.isdigit() and len(text) % 2 == 0:
        return [START_C, *_pairs(text)]
    values: list[int] = []
    current: int | None = None
    position = 0
    for run in _DIGIT_RUN.finditer(text):
        start = run.start() + (len(run.group()) % 2)  # an odd digit stays in set B
        current = _emit_b(values, current, text[position:start])
        values.extend([START_C] if current is None else [CODE_C])
        values.extend(_pairs(text[start : run.end()]))
        current, position = START_C, run.end()
    _emit_b(values, current, text[position:])
    return values


def _emit_b(values: list[int], current: int | None, chunk: str) -> int | None:
    if not chunk:
        return current
    if current is None:
        values.append(START_B)
    elif current == START_C:
        values.append(CODE_B)
    values.extend(ord(char) - 32 for char in chunk)
    return START_B


def _pairs(digits: str) -> list[int]:
    return [int(digits[i : i + 2]) for i in range(0, len(digits), 2)]


def modules(text: str) -> list[bool]:
    """The symbol as modules, True for a bar, quiet zones included."""
    row = [False] * QUIET_ZONE
    for value in encode_values(text):
        bar = True
        for width in PATTERNS[value]:
            row.extend([bar] * int(width))
            bar = not bar
    row.extend([False] * QUIET_ZONE)
    return row


def bars(text: str) -> list[tuple[int, int]]:
    """The bars as (first module, width in modules), counting the leading quiet zone."""
    runs: list[tuple[int, int]] = []
    row = modules(text)
    index = 0
    while index < len(row):
        if row[index]:
            end = index
            while end < len(row) and row[end]:
                end += 1
            runs.append((index, end - index))
            index = end
        else:
            index += 1
    return runs
