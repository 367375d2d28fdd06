"""Serial numbers, IMEIs and phone numbers: what is accepted, its canonical form, and why not."""

from __future__ import annotations

import pytest

from device_registry import validators
from sync.errors import BadRequest


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("490154203237518", "490154203237518"),  # the example of 3GPP TS 23.003 annex B
        ("35-209900-176148-1", "352099001761481"),  # as printed under the battery
        ("35 209900 176148 1", "352099001761481"),
        ("35/209900/176148/1", "352099001761481"),
        ("012345678901237", "012345678901237"),  # leading zero kept
    ],
)
def test_valid_imeis_are_canonicalised(raw: str, expected: str) -> None:
    assert validators.imei(raw) == expected


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        ("490154203237519", "wrong check digit"),  # last digit changed
        ("490154203237158", "wrong check digit"),  # two digits swapped
        ("49015420323751", "15 digits, not 14"),
        ("4901542032375180", "15 digits, not 16"),
        ("49015420323751X", "only digits"),
        ("", "IMEI is required"),
        ("٤٩٠١٥٤٢٠٣٢٣٧٥١٨", "only digits"),  # Arabic-Indic digits are digits, not ASCII
    ],
)
def test_invalid_imeis_say_what_is_wrong(raw: str, complaint: str) -> None:
    with pytest.raises(BadRequest, match=complaint):
        validators.imei(raw)


@pytest.mark.parametrize(
    ("digits", "valid"),
    [
        ("79927398713", True),  # the Luhn algorithm's textbook example
        ("79927398710", False),
        ("0", True),
        ("18", True),
        ("19", False),
    ],
)
def test_luhn(digits: str, valid: bool) -> None:
    assert validators.luhn_valid(digits) is valid


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+254712345678", "+254712345678"),
        ("+254 712 345 678", "+254712345678"),
        ("+1 (415) 555-0100", "+14155550100"),
        ("00254712345678", "+254712345678"),
        ("+44.20.7946.0958", "+442079460958"),
        ("+123456789012345", "+123456789012345"),  # 15 digits: the E.164 maximum
    ],
)
def test_valid_phone_numbers_become_e164(raw: str, expected: str) -> None:
    assert validators.phone(raw) == expected


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        ("0712345678", "must be international"),  # a national number: which country?
        ("254712345678", "must be international"),
        ("+0712345678", "not E.164"),  # no country code starts with 0
        ("+1234567890123456", "not E.164"),  # 16 digits
        ("+12345", "not E.164"),
        ("+2547123x5678", "not E.164"),
    ],
)
def test_invalid_phone_numbers_say_what_is_wrong(raw: str, complaint: str) -> None:
    with pytest.raises(BadRequest, match=complaint):
        validators.phone(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("r58m12345ab", "R58M12345AB"), ("  SN-001 ", "SN-001"), ("a.b_c-1", "A.B_C-1")],
)
def test_serials_are_upper_case(raw: str, expected: str) -> None:
    assert validators.serial(raw) == expected


@pytest.mark.parametrize("raw", ["", "_refusals", "-x", "SN 1", "SN/1", "X" * 65, "SN1?"])
def test_bad_serials_are_refused(raw: str) -> None:
    with pytest.raises(BadRequest, match="serial number"):
        validators.serial(raw)


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [("x" * 101, "at most 100"), ("Nokia\x00", "control characters")],
)
def test_free_text_is_bounded(raw: str, complaint: str) -> None:
    with pytest.raises(BadRequest, match=complaint):
        validators.text(raw, "model", 100)
