"""Reply templates: every language complete, errors in plain words, echoes kept short."""

from __future__ import annotations

import datetime as dt

import pytest

from forms.load import load_forms
from sms_gateway.parser import ParseFailure, parse
from sms_gateway.replies import LANGUAGES, TEMPLATES, check_templates, failure_reply, render, usage

FORMS = load_forms()
TODAY = dt.date(2024, 5, 1)


def reply_to(text: str, language: str) -> str:
    result = parse(text, FORMS, TODAY)
    assert isinstance(result, ParseFailure)
    return failure_reply(result, FORMS, language)


def test_every_language_has_every_template() -> None:
    assert check_templates() == []
    assert set(LANGUAGES) >= {"en", "sw"}
    assert set(TEMPLATES["sw"]) == set(TEMPLATES["en"])


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        (
            "P 50 Jane",
            "en",
            "P not saved: Weeks since last period must be 1 to 42 (you sent 50). "
            "Send: P <weeks since last period> <name>",
        ),
        (
            "P 50 Jane",
            "sw",
            "P haikuhifadhiwa: Wiki tangu hedhi ya mwisho lazima iwe kati ya 1 "
            "na 42 (ulituma 50). Tuma: P <wiki tangu hedhi ya mwisho> <jina>",
        ),
        (
            "P x",
            "en",
            "P not saved: Weeks since last period: 'x' is not a number; "
            "Name is missing. Send: P <weeks since last period> <name>",
        ),
        ("X 1", "en", "Unknown form code 'X'. Use one of: D, P, R, V."),
        ("X 1", "sw", "Herufi ya fomu 'X' haijulikani. Tumia mojawapo ya: D, P, R, V."),
        ("", "en", "Empty message. Start with a form code: D, P, R, V."),
        (
            "V 10000Y 20",
            "en",
            "V not saved: patient ID '10000Y' is wrong (check digit); check "
            "the card. Send: V <patient id> <weeks of pregnancy>",
        ),
        (
            "D 10000X ZZ",
            "en",
            "D not saved: Outcome: 'ZZ' is not one of LB, SB, MC. "
            "Send: D <patient id> <outcome> [date of delivery]",
        ),
    ],
)
def test_failures_in_plain_words(text: str, language: str, expected: str) -> None:
    assert reply_to(text, language) == expected


def test_echoed_text_is_cut_and_errors_are_capped() -> None:
    long_reply = reply_to("X" + "y" * 500, "en")
    assert "Xyyyyyyyyyyyyyyyyyy…" in long_reply and len(long_reply) < 120
    many = reply_to("D#W 1#X 2#Y 3#Z 4", "en")
    assert many.count(";") == 3 and "; …. Send: D" in many  # three shown, then …


def test_confirmations() -> None:
    text = render("registered", "en", name="Jane", patient_id="10000X", edd="2025-01-15")
    assert text == "Jane registered, ID 10000X. EDD 2025-01-15. ANC reminders will follow."
    swahili = render("registered", "sw", name="Jane", patient_id="10000X", edd="2025-01-15")
    assert swahili.startswith("Jane amesajiliwa, namba 10000X.")
    assert render("registered", "fr", name="J", patient_id="1", edd="2").startswith("J registered")


def test_usage() -> None:
    p = FORMS.get("P")
    assert p is not None
    assert usage(p, "sw") == "P <wiki tangu hedhi ya mwisho> <jina>"
