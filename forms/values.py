"""Turning the text of one field into a typed value, or a specific error; and back.

Pure and total: :func:`coerce` never raises on a string.  Digits from any
script (Devanagari ``३``, Arabic-Indic ``٣``, full-width digits...) count as
digits in numbers, dates, phone numbers and patient IDs; names keep their
letters as typed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

from barcode.checkdigit import Problem, Scheme, SchemeLike, validate
from forms.model import Field, FieldType, Value


class ErrorKind(enum.Enum):
    EMPTY = "empty"
    UNKNOWN_FORM = "unknown_form"
    MISSING_FIELD = "missing_field"
    EXTRA_VALUES = "extra_values"
    UNKNOWN_KEY = "unknown_key"
    REPEATED_FIELD = "repeated_field"
    NOT_A_NUMBER = "not_a_number"
    OUT_OF_RANGE = "out_of_range"
    BAD_DATE = "bad_date"
    DATE_OUT_OF_RANGE = "date_out_of_range"
    BAD_BOOLEAN = "bad_boolean"
    BAD_PHONE = "bad_phone"
    BAD_CHOICE = "bad_choice"
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    BAD_PATTERN = "bad_pattern"
    BAD_PATIENT_ID = "bad_patient_id"
    BAD_CHECK_DIGIT = "bad_check_digit"


@dataclass(frozen=True)
class FieldError:
    """One specific problem; ``params`` carry what a reply needs (limits, the text sent)."""

    kind: ErrorKind
    field: str | None = None
    text: str | None = None
    params: Mapping[str, str] = dataclasses.field(default_factory=dict)


TRUE_WORDS = frozenset({"y", "yes", "1", "true", "ndiyo", "ndio", "n'do"})
FALSE_WORDS = frozenset({"n", "no", "0", "false", "hapana", "la"})
_INTEGER_RE = re.compile(r"^[+-]?[0-9]+$")
_PHONE_JUNK = str.maketrans("", "", " -.()/")
_PHONE_RE = re.compile(r"^\+?[0-9]{7,15}$")
_DATE_FORMATS = (
    re.compile(r"^(?P<y>[0-9]{4})[-/.](?P<m>[0-9]{1,2})[-/.](?P<d>[0-9]{1,2})$"),
    re.compile(r"^(?P<d>[0-9]{1,2})[-/.](?P<m>[0-9]{1,2})[-/.](?P<y>[0-9]{4})$"),
)
MAX_INTEGER_DIGITS = 9


def ascii_digits(text: str) -> str:
    """Replace every decimal digit of any script with its ASCII digit."""
    if text.isascii():
        return text
    return "".join(_ascii_digit(c) for c in text)


def _ascii_digit(char: str) -> str:
    digit = unicodedata.decimal(char, None)
    return char if digit is None else str(digit)


@dataclass(frozen=True)
class Reading:
    """What reading a value may depend on: the report day, the patient-ID scheme."""

    today: dt.date | None = None  # None: no date range checks relative to the report day
    scheme: SchemeLike = Scheme.LUHN30


def coerce(spec: Field, text: str, reading: Reading | None = None) -> Value | FieldError:
    """The typed value of ``text`` for field ``spec``, or the first problem with it."""
    converter = _CONVERTERS[spec.type]
    return converter(spec, text, reading or Reading())


def _integer(spec: Field, text: str, reading: Reading) -> Value | FieldError:
    digits = ascii_digits(text)
    if not _INTEGER_RE.match(digits) or len(digits.lstrip("+-")) > MAX_INTEGER_DIGITS:
        return FieldError(ErrorKind.NOT_A_NUMBER, spec.name, text)
    number = int(digits)
    low, high = spec.min, spec.max
    if (low is not None and number < low) or (high is not None and number > high):
        return FieldError(ErrorKind.OUT_OF_RANGE, spec.name, text, _limits(low, high))
    return number


def _limits(low: object, high: object) -> dict[str, str]:
    return {k: str(v) for k, v in (("min", low), ("max", high)) if v is not None}


def _string(spec: Field, text: str, reading: Reading) -> Value | FieldError:
    if spec.choices is not None:
        for code in spec.choices:
            if code.casefold() == text.casefold():
                return code
        return FieldError(
            ErrorKind.BAD_CHOICE, spec.name, text, {"choices": ", ".join(spec.choices)}
        )
    if spec.min_length is not None and len(text) < spec.min_length:
        return FieldError(ErrorKind.TOO_SHORT, spec.name, text, {"min": str(spec.min_length)})
    if spec.max_length is not None and len(text) > spec.max_length:
        return FieldError(ErrorKind.TOO_LONG, spec.name, text, {"max": str(spec.max_length)})
    if spec.pattern is not None and re.fullmatch(spec.pattern, text) is None:
        return FieldError(ErrorKind.BAD_PATTERN, spec.name, text)
    return text


def _date(spec: Field, text: str, reading: Reading) -> Value | FieldError:
    value = parse_date(text)
    if value is None:
        return FieldError(ErrorKind.BAD_DATE, spec.name, text)
    today = reading.today
    if today is not None:
        low = None if spec.min_days is None else today + dt.timedelta(days=spec.min_days)
        high = None if spec.max_days is None else today + dt.timedelta(days=spec.max_days)
        if (low is not None and value < low) or (high is not None and value > high):
            return FieldError(ErrorKind.DATE_OUT_OF_RANGE, spec.name, text, _limits(low, high))
    return value


def parse_date(text: str) -> dt.date | None:
    """``YYYY-MM-DD`` or ``DD-MM-YYYY`` (with ``-``, ``/`` or ``.``); None when neither."""
    digits = ascii_digits(text)
    for pattern in _DATE_FORMATS:
        match = pattern.match(digits)
        if match is None:
            continue
        try:
            return dt.date(int(match["y"]), int(match["m"]), int(match["d"]))
        except ValueError:
            return None
    return None


def _boolean(spec: Field, text: str, reading: Reading) -> Value | FieldError:
    word = ascii_digits(text).casefold()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return FieldError(ErrorKind.BAD_BOOLEAN, spec.name, text)


def normalise_phone(text: str) -> str | None:
    """``+254 712-345 678`` → ``+254712345678``; ``00`` → ``+``; None when not a number."""
    compact = ascii_digits(text).translate(_PHONE_JUNK)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    return compact if _PHONE_RE.match(compact) else None


def _phone(spec: Field, text: str, reading: Reading) -> Value | FieldError:
    phone = normalise_phone(text)
    return FieldError(ErrorKind.BAD_PHONE, spec.name, text) if phone is None else phone


def _patient_id(spec: Field, text: str, reading: Reading) -> Value | FieldError:
    result = validate(ascii_digits(text), reading.scheme)
    if result.valid:
        return result.id
    kind = (
        ErrorKind.BAD_CHECK_DIGIT
        if result.problem is Problem.BAD_CHECK_DIGIT
        else ErrorKind.BAD_PATIENT_ID
    )
    return FieldError(kind, spec.name, text, {"reason": result.reason or ""})


_CONVERTERS = {
    FieldType.INTEGER: _integer,
    FieldType.STRING: _string,
    FieldType.DATE: _date,
    FieldType.BOOLEAN: _boolean,
    FieldType.PHONE: _phone,
    FieldType.PATIENT_ID: _patient_id,
}


def render(value: Value) -> str:
    """The canonical text of a value (what :func:`coerce` reads back as the same value)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def to_json(value: Value) -> int | str | bool:
    """A value as it is stored in a document (dates as ``YYYY-MM-DD``)."""
    return value.isoformat() if isinstance(value, dt.date) else value
