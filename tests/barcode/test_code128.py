"""The Code 128 encoder: its table, its set choices, and zbar reading what it draws."""

from __future__ import annotations

import string

import numpy as np
import pytest
from pyzbar.pyzbar import ZBarSymbol, decode
from reportlab.graphics.barcode import code128 as reportlab_code128

from barcode import code128
from barcode.code128 import CODE_B, CODE_C, START_B, START_C, STOP, encode_values


def draw(text: str, module: int = 3, height: int = 80) -> np.ndarray:
    """The symbol as a grey image, ``module`` pixels a module."""
    row = np.array([0 if bar else 255 for bar in code128.modules(text)], np.uint8)
    return np.ascontiguousarray(np.tile(np.repeat(row, module), (height, 1)))


def read(text: str) -> list[str]:
    found = decode(draw(text), symbols=[ZBarSymbol.CODE128])
    return [symbol.data.decode("latin-1") for symbol in found]


def test_table_matches_reportlab() -> None:
    """An independent copy of the table: reportlab writes widths as letters (A=1 .. D=4)."""
    theirs = reportlab_code128._patterns
    assert len(code128.PATTERNS) == len(theirs) == 107
    for value, pattern in enumerate(code128.PATTERNS):
        expected = "".join(str(ord(letter.upper()) - ord("A") + 1) for letter in theirs[value])
        assert pattern == expected, value


def test_table_shape() -> None:
    assert len(set(code128.PATTERNS)) == 107
    assert all(sum(map(int, p)) == 11 for p in code128.PATTERNS[:STOP])
    assert sum(map(int, code128.PATTERNS[STOP])) == 13


def test_check_symbol() -> None:
    # ISO/IEC 15417's checksum by hand for "PJJ123C" (set B throughout):
    # (104 + 1*48 + 2*42 + 3*42 + 4*17 + 5*18 + 6*19 + 7*35) mod 103 = 879 mod 103 = 55.
    assert encode_values("PJJ123C") == [START_B, 48, 42, 42, 17, 18, 19, 35, 55, STOP]


@pytest.mark.parametrize(
    ("text", "data"),
    [
        ("123456", [START_C, 12, 34, 56]),
        ("1003EY", [START_C, 10, 3, CODE_B, 37, 57]),
        ("12345", [START_B, 17, CODE_C, 23, 45]),
        ("A12345B", [START_B, 33, 17, CODE_C, 23, 45, CODE_B, 34]),
        ("A123B", [START_B, 33, 17, 18, 19, 34]),
        ("ABC", [START_B, 33, 34, 35]),
    ],
)
def test_set_choice(text: str, data: list[int]) -> None:
    values = encode_values(text)
    assert values[:-2] == data
    assert values[-1] == STOP


@pytest.mark.parametrize("text", ["", "é", "tab\there"])
def test_unencodable_text_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        encode_values(text)


def test_zbar_reads_every_code_set_b_character() -> None:
    printable = "".join(chr(c) for c in range(32, 127))
    for start in range(0, len(printable), 16):
        chunk = printable[start : start + 16]
        assert read(chunk) == [chunk]


def test_zbar_reads_every_digit_pair_in_code_set_c() -> None:
    pairs = "".join(f"{n:02d}" for n in range(100))
    for start in range(0, len(pairs), 20):
        chunk = pairs[start : start + 20]
        assert encode_values(chunk)[0] == START_C
        assert read(chunk) == [chunk]


@pytest.mark.parametrize(
    "text", ["10000X", "1003EY", "A12345B", "2468 7", "X", string.ascii_uppercase]
)
def test_zbar_reads_mixed_texts(text: str) -> None:
    assert read(text) == [text]


def test_quiet_zones_and_bars() -> None:
    row = code128.modules("AB")
    assert row[: code128.QUIET_ZONE] == [False] * code128.QUIET_ZONE
    assert row[-code128.QUIET_ZONE :] == [False] * code128.QUIET_ZONE
    assert len(row) == 2 * code128.QUIET_ZONE + 11 * 4 + 13
    assert sum(width for _, width in code128.bars("AB")) == sum(row)
