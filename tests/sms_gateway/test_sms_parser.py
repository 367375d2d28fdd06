"""The coded-SMS parser: formats, real-looking mistakes, and two properties.

Properties (hypothesis): the parser never raises, whatever the text; and a
valid report, formatted compactly or with labels, parses back to itself.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from barcode.checkdigit import append_check_char
from forms.load import load_forms
from forms.model import Field, FieldType, Form, Value
from forms.values import ErrorKind
from sms_gateway.parser import (
    ParseFailure,
    Report,
    format_compact,
    format_labelled,
    normalise,
    parse,
)

FORMS = load_forms()
TODAY = dt.date(2024, 5, 1)
PID = append_check_char("10000")  # 10000X
OTHER_PID = append_check_char("1234A")
WRONG_PID = PID[:-1] + ("Y" if PID[-1] != "Y" else "X")


def report(code: str, **values: Value) -> Report:
    return Report(code, values)


VALID: list[tuple[str, Report]] = [
    # the compact format, and what the code may be followed by
    ("P 3 Jane", report("P", weeks=3, name="Jane")),
    ("p 3 jane", report("P", weeks=3, name="jane")),
    ("P!3 Jane", report("P", weeks=3, name="Jane")),
    ("P-3 Jane", report("P", weeks=3, name="Jane")),
    ("P,3,Jane", report("P", weeks=3, name="Jane")),
    ("P:3 Jane", report("P", weeks=3, name="Jane")),
    ("P# 3 Jane", report("P", weeks=3, name="Jane")),
    ("P3 Jane", report("P", weeks=3, name="Jane")),  # code glued to the number
    # the last string field takes the rest; quotes group words
    ("P 12 Jane Achieng Otieno", report("P", weeks=12, name="Jane Achieng Otieno")),
    ('P 12 "Mary  Ann"', report("P", weeks=12, name="Mary  Ann")),
    ('P 12 "Say ""Hi"""', report("P", weeks=12, name='Say "Hi"')),
    ("P 12 \u201cMama Njeri\u201d", report("P", weeks=12, name="Mama Njeri")),  # curly quotes
    # whitespace, trailing punctuation, invisible characters
    ("   P    3     Jane   ", report("P", weeks=3, name="Jane")),
    ("P 3 Jane.", report("P", weeks=3, name="Jane")),
    ("P 3 Jane!!", report("P", weeks=3, name="Jane")),
    ("P 3 Jane#", report("P", weeks=3, name="Jane")),
    ("P\t3\nJane", report("P", weeks=3, name="Jane")),
    ("\u200fP 3 Jane\u200e", report("P", weeks=3, name="Jane")),
    ("\ufeffP 3 Jane", report("P", weeks=3, name="Jane")),
    # non-ASCII letters and digits
    ("P 3 Zoë Wanjikũ", report("P", weeks=3, name="Zoë Wanjikũ")),
    ("P 3 Zoe\u0308", report("P", weeks=3, name="Zoë")),  # NFD input, NFC value
    ("P ३ सीता", report("P", weeks=3, name="सीता")),  # Devanagari digit and name
    ("P ١٢ فاطمة", report("P", weeks=12, name="فاطمة")),  # Arabic-Indic digits
    ("P ۱۲ Amina", report("P", weeks=12, name="Amina")),  # Extended Arabic-Indic
    ("P \uff13 Jane", report("P", weeks=3, name="Jane")),  # full-width
    # the labelled format, keys in any case and order, aliases
    ("P#W 3#N Jane", report("P", weeks=3, name="Jane")),
    ("p#w 3#n Jane Doe", report("P", weeks=3, name="Jane Doe")),
    ("P#N Jane#W 3", report("P", weeks=3, name="Jane")),
    ("P #W 3 #N Jane", report("P", weeks=3, name="Jane")),
    ("P W 3#N Jane", report("P", weeks=3, name="Jane")),
    ("P#WEEKS 3#JINA Jane", report("P", weeks=3, name="Jane")),
    ("P#W3#N Jane", report("P", weeks=3, name="Jane")),  # key glued to a number
    ('P#W 3#N "Jane #1"', report("P", weeks=3, name="Jane #1")),
    # the other forms
    (f"V {PID} 20", report("V", patient_id=PID, weeks=20)),
    (f"v {PID.lower()} 20", report("V", patient_id=PID, weeks=20)),
    (f"V {PID[:3]}-{PID[3:]} 20", report("V", patient_id=PID, weeks=20)),
    (f"D {PID} LB", report("D", patient_id=PID, outcome="LB")),
    (
        f"D {PID} sb 2024-04-30",
        report("D", patient_id=PID, outcome="SB", date=dt.date(2024, 4, 30)),
    ),
    (
        f"D {PID} LB 30/04/2024",
        report("D", patient_id=PID, outcome="LB", date=dt.date(2024, 4, 30)),
    ),
    (
        f"D#ID {PID}#O LB#DT 1.4.2024",
        report("D", patient_id=PID, outcome="LB", date=dt.date(2024, 4, 1)),
    ),
    (f"R {PID} bl", report("R", patient_id=PID, sign="BL")),
    (f"R:{PID} FV.", report("R", patient_id=PID, sign="FV")),
]


@pytest.mark.parametrize(("text", "expected"), VALID, ids=[t for t, _ in VALID])
def test_valid_messages(text: str, expected: Report) -> None:
    assert parse(text, FORMS, TODAY) == expected


def kinds(result: object) -> list[tuple[ErrorKind, str | None]]:
    assert isinstance(result, ParseFailure), result
    return [(e.kind, e.field) for e in result.errors]


E = ErrorKind
INVALID: list[tuple[str, list[tuple[ErrorKind, str | None]]]] = [
    ("", [(E.EMPTY, None)]),
    ("   ...  ", [(E.EMPTY, None)]),
    ("X 3 Jane", [(E.UNKNOWN_FORM, None)]),
    ("Preg 3 Jane", [(E.UNKNOWN_FORM, None)]),
    ("3 Jane", [(E.UNKNOWN_FORM, None)]),
    ("P", [(E.MISSING_FIELD, "weeks"), (E.MISSING_FIELD, "name")]),
    ("P 3", [(E.MISSING_FIELD, "name")]),
    ("P Jane 3", [(E.NOT_A_NUMBER, "weeks")]),  # fields swapped
    ("P three Jane", [(E.NOT_A_NUMBER, "weeks")]),
    ("P 3w Jane", [(E.NOT_A_NUMBER, "weeks")]),
    ("P 0 Jane", [(E.OUT_OF_RANGE, "weeks")]),
    ("P 43 Jane", [(E.OUT_OF_RANGE, "weeks")]),
    ("P 99999999999999 Jane", [(E.NOT_A_NUMBER, "weeks")]),
    ('P 3 ""', [(E.MISSING_FIELD, "name")]),
    ("P 3 " + "n" * 81, [(E.TOO_LONG, "name")]),
    ("P#W 3", [(E.MISSING_FIELD, "name")]),
    ("P#W 3#W 4#N Jane", [(E.REPEATED_FIELD, "weeks")]),
    ("P#W 3#X Jane", [(E.UNKNOWN_KEY, None), (E.MISSING_FIELD, "name")]),
    ("P#W#N Jane", [(E.MISSING_FIELD, "weeks")]),
    (f"V {PID}", [(E.MISSING_FIELD, "weeks")]),
    (f"V {WRONG_PID} 20", [(E.BAD_CHECK_DIGIT, "patient_id")]),  # one character mistyped
    ("V 1000SX 20", [(E.BAD_PATIENT_ID, "patient_id")]),  # S is not in the alphabet
    (f"V {PID} 20 weeks", [(E.EXTRA_VALUES, None)]),
    (f"V 20 {PID}", [(E.BAD_CHECK_DIGIT, "patient_id"), (E.NOT_A_NUMBER, "weeks")]),
    (f"D {PID} XX", [(E.BAD_CHOICE, "outcome")]),
    (f"D {PID} LB 2024-02-30", [(E.BAD_DATE, "date")]),
    (f"D {PID} LB tomorrow", [(E.BAD_DATE, "date")]),
    (f"D {PID} LB 2024-05-02", [(E.DATE_OUT_OF_RANGE, "date")]),  # in the future
    (f"D {PID} LB 2022-01-01", [(E.DATE_OUT_OF_RANGE, "date")]),  # over a year ago
    (f"R {PID} headache", [(E.BAD_CHOICE, "sign")]),
]


@pytest.mark.parametrize(("text", "expected"), INVALID, ids=[t[:30] for t, _ in INVALID])
def test_invalid_messages(text: str, expected: list[tuple[ErrorKind, str | None]]) -> None:
    assert kinds(parse(text, FORMS, TODAY)) == expected


def test_errors_carry_what_a_reply_needs() -> None:
    [error] = parse("P 50 Jane", FORMS, TODAY).errors  # type: ignore[union-attr]
    assert (error.text, dict(error.params)) == ("50", {"min": "1", "max": "42"})
    failure = parse("X 1", FORMS, TODAY)
    assert isinstance(failure, ParseFailure) and failure.code is None
    assert failure.errors[0].text == "X"
    assert parse("P x Jane", FORMS).code == "P"  # type: ignore[union-attr]


def test_without_a_report_day_dates_are_not_range_checked() -> None:
    result = parse(f"D {PID} LB 2030-01-01", FORMS)
    assert result == report("D", patient_id=PID, outcome="LB", date=dt.date(2030, 1, 1))


def test_normalise() -> None:
    assert normalise("  P 3 Jane .!?  ") == "P 3 Jane"
    assert normalise('P 3 "Jane."') == 'P 3 "Jane."'
    assert normalise("P\u00a03\u2003Jane") == "P\u00a03\u2003Jane"  # kept: they split like spaces


# -- properties ------------------------------------------------------------------------------
@settings(max_examples=400, deadline=None)
@given(st.text(max_size=200))
def test_never_raises_on_any_text(text: str) -> None:
    result = parse(text, FORMS, TODAY)
    assert isinstance(result, Report | ParseFailure)


MESSAGE_ALPHABET = st.sampled_from(list("PVDRpvdr #!-,:\"'.0123456789٣३ JaneWNIDOLBSXY\t"))


@settings(max_examples=400, deadline=None)
@given(st.text(MESSAGE_ALPHABET, max_size=40))
def test_never_raises_on_near_misses(text: str) -> None:
    result = parse(text, FORMS, TODAY)
    if isinstance(result, ParseFailure):
        assert result.errors  # a failure always says why


def _printable(text: str) -> bool:
    return text == unicodedata.normalize("NFC", text) and all(
        unicodedata.category(c)[0] != "C" and c not in "\u201c\u201d\u201e\u201f\u2033\u00ab\u00bb"
        for c in text
    )


def value_strategy(spec: Field) -> st.SearchStrategy[Any]:
    if spec.type is FieldType.INTEGER:
        return st.integers(spec.min, spec.max)
    if spec.type is FieldType.PATIENT_ID:
        payloads = st.text("0123456789ACDEFGHJKLMNPRTUVWXY", min_size=1, max_size=10)
        return payloads.map(append_check_char)
    if spec.type is FieldType.DATE:
        low = TODAY + dt.timedelta(days=-3000 if spec.min_days is None else spec.min_days)
        high = TODAY + dt.timedelta(days=3000 if spec.max_days is None else spec.max_days)
        return st.dates(low, high)
    if spec.type is FieldType.BOOLEAN:
        return st.booleans()
    if spec.choices is not None:
        return st.sampled_from(list(spec.choices))
    return st.text(min_size=spec.min_length or 1, max_size=spec.max_length or 40).filter(_printable)


@st.composite
def reports(draw: st.DrawFn, compact: bool) -> tuple[Report, Form]:
    form = draw(st.sampled_from(list(FORMS)))
    values: dict[str, Value] = {}
    for spec in form.fields:
        present = spec.required or draw(st.booleans())
        if not present:
            if compact:
                break  # the compact format cannot skip a field
            continue
        values[spec.name] = draw(value_strategy(spec))
    return Report(form.code, values), form


@settings(max_examples=500, deadline=None)
@given(reports(compact=True))
def test_compact_format_round_trips(case: tuple[Report, Form]) -> None:
    original, form = case
    assert parse(format_compact(original, form), FORMS, TODAY) == original


@settings(max_examples=500, deadline=None)
@given(reports(compact=False))
def test_labelled_format_round_trips(case: tuple[Report, Form]) -> None:
    original, form = case
    assert parse(format_labelled(original, form), FORMS, TODAY) == original


def test_formats_read_like_a_worker_would_type_them() -> None:
    p = FORMS.get("P")
    assert p is not None
    jane = report("P", weeks=3, name="Jane Doe")
    assert format_compact(jane, p) == "P 3 Jane Doe"
    assert format_labelled(jane, p) == "P#W 3#N Jane Doe"
    assert format_compact(report("P", weeks=3, name="Jane."), p) == 'P 3 "Jane."'
    d = FORMS.get("D")
    assert d is not None
    with pytest.raises(ValueError):
        format_compact(report("D", patient_id=PID, date=TODAY), d)
