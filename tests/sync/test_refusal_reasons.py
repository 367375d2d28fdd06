"""Which errors are refusals, and how each is said to a supervisor (pure: no server)."""

from __future__ import annotations

from typing import Any

import pytest

from forms.docschema import DocumentValidator
from forms.load import load_forms
from sync.errors import BadRequest, Conflict, FieldsyncError, Forbidden, NotFound, TooLarge
from sync.refusals.reasons import REASONS, reason_of, words
from sync.replication.context import WriteRefused
from sync.replication.documents import DocValidationError, IllegalDocId, RefusedDocument
from sync.replication.writes import MissingStub, validator_refusal
from sync.store.rules import DocumentElsewhere


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (WriteRefused("place 'x' is outside your scope", code="outside_scope"), "outside_scope"),
        (WriteRefused("unknown place 'zz'", code="unknown_place"), "unknown_place"),
        (DocumentElsewhere(), "outside_scope"),
        (TooLarge("Document exceeds the limit of 10 bytes."), "too_large"),
        (MissingStub("Invalid attachment stub"), "missing_attachment"),
        (RefusedDocument("Document must be a JSON object"), "malformed"),
        (DocValidationError("Bad special document member: _x"), "malformed"),
        (IllegalDocId("Document id must not be empty"), "malformed"),
        (BadRequest("Invalid rev format"), "malformed"),
        (Forbidden("some other check"), "validator"),
    ],
)  # fmt: skip
def test_refusals_get_their_code(error: FieldsyncError, code: str) -> None:
    found = reason_of(error)
    assert found is not None and found[0] == code
    assert found[1]  # never an empty detail


@pytest.mark.parametrize("error", [Conflict(), NotFound("missing")])
def test_conflicts_and_missing_are_not_refusals(error: FieldsyncError) -> None:
    assert reason_of(error) is None


def test_every_code_has_plain_words_and_advice() -> None:
    for code, said in REASONS.items():
        assert said.title and said.advice.endswith("."), code
        assert "_" not in said.title, code  # words, not a code
    assert words("something new").advice  # an unknown code still says what to do


def record(**fields: Any) -> dict[str, Any]:
    return {"_id": "r1", "type": "data_record", "form": "P", "place": "a", "fields": fields}


@pytest.mark.parametrize(
    ("doc", "detail"),
    [
        (record(weeks=50, name="Jane"), "P report: field 'weeks': must be at most 42"),
        (record(weeks=3), "P report: field 'name': is required"),
        (record(weeks="three", name="Jane"), "P report: field 'weeks': must be of type integer"),
        (
            {"_id": "r1", "type": "data_record", "form": "P"},
            "P report: field 'fields': is required",
        ),
    ],
)
def test_a_form_schema_refusal_names_the_field_and_the_rule(
    doc: dict[str, Any], detail: str
) -> None:
    validate = DocumentValidator(load_forms(None))
    reason = validate("health", doc)
    assert reason is not None
    refused = validator_refusal(validate, "health", doc, reason)
    assert refused.reason == reason  # the phone's answer does not change
    assert reason_of(refused) == ("form_schema", detail)


def test_a_validator_without_words_gives_its_reason() -> None:
    def plain(db: str, doc: dict[str, Any]) -> str | None:
        return "no goats allowed"

    refused = validator_refusal(plain, "health", {}, "no goats allowed")
    assert reason_of(refused) == ("validator", "no goats allowed")
