"""The JSON Schemas the forms generate, and the validator the sync core consults."""

from __future__ import annotations

from typing import Any

import pytest

from barcode.checkdigit import append_check_char
from forms.docschema import DocumentValidator, document_schemas
from forms.load import load_forms

FORMS = load_forms()
PID = append_check_char("10000")
VALIDATE = DocumentValidator(FORMS)


def test_one_schema_per_document_type() -> None:
    schemas = document_schemas(FORMS)
    assert set(schemas) == {
        ("data_record", "P"),
        ("data_record", "V"),
        ("data_record", "D"),
        ("data_record", "R"),
        ("person", None),
        ("pregnancy", None),
    }
    weeks = schemas[("data_record", "P")]["properties"]["fields"]["properties"]["weeks"]
    assert weeks == {"type": "integer", "minimum": 1, "maximum": 42}
    outcome = schemas[("data_record", "D")]["properties"]["fields"]["properties"]["outcome"]
    assert outcome == {"enum": ["LB", "SB", "MC"]}


def record(form: str, **fields: Any) -> dict[str, Any]:
    return {"_id": "r1", "type": "data_record", "form": form, "place": "a", "fields": fields}


def person(**changes: Any) -> dict[str, Any]:
    doc = {"_id": f"person-{PID}", "type": "person", "name": "Jane", "patient_id": PID}
    return {**doc, **changes}


def pregnancy(**changes: Any) -> dict[str, Any]:
    doc = {"type": "pregnancy", "patient_id": PID, "lmp_date": "2024-01-01", "edd": "2024-10-07"}
    return {**doc, **changes}


ACCEPTED = [
    record("P", weeks=3, name="Jane"),
    record("V", patient_id=PID, weeks=20),
    record("D", patient_id=PID, outcome="LB"),
    record("D", patient_id=PID, outcome="LB", date="2024-04-30"),
    record("R", patient_id=PID, sign="BL"),
    record("X", anything="goes"),  # no schema for an unknown form
    person(),
    {"_id": f"person-{PID}", "type": "person", "name": "Jane"},  # the ID only in _id
    pregnancy(weeks_at_registration=12, status="active"),
    {"_id": "visit-1", "type": "patient", "n": 1},  # other types pass
    {"_id": "no-type"},
    {**record("P", weeks=99), "_deleted": True},  # deletions pass
]


@pytest.mark.parametrize("doc", ACCEPTED)
def test_documents_that_pass(doc: dict[str, Any]) -> None:
    assert VALIDATE("health", doc) is None


REFUSED = [
    (record("P", weeks=50, name="Jane"), "invalid P report: fields.weeks must be at most 42"),
    (record("P", weeks="3", name="Jane"), "fields.weeks must be of type integer"),
    (record("P", weeks=3), "fields.name is required"),
    ({**record("P"), "fields": None}, "fields must be of type object"),
    ({"type": "data_record", "form": "P"}, "fields is required"),
    (record("V", patient_id=PID[:-1] + "Y", weeks=20), "fields.patient_id is not a valid"),
    (record("V", patient_id=PID.lower(), weeks=20), "fields.patient_id is not a valid"),
    (record("D", patient_id=PID, outcome="XX"), "fields.outcome must be one of LB, SB, MC"),
    (record("D", patient_id=PID, outcome="LB", date="2024-02-30"), "fields.date is not a valid"),
    (record("D", patient_id=PID, outcome="LB", date="30/04/2024"), "fields.date is not in the"),
    (person(name=""), "invalid person: name must have at least 1 characters"),
    (person(patient_id="12345"), "patient_id is not a valid patient-id"),
    (person(_id="patient-jane"), "_id is not in the right form"),
    (person(_id="person-10001V", patient_id=PID), "_id must be person-<patient_id>"),
    (pregnancy(edd="next year"), "invalid pregnancy: edd"),
    (pregnancy(weeks_at_registration=60), "weeks_at_registration must be at most 42"),
]


@pytest.mark.parametrize(("doc", "reason"), REFUSED, ids=[r for _, r in REFUSED])
def test_documents_that_are_refused_name_the_fields(doc: dict[str, Any], reason: str) -> None:
    found = VALIDATE("health", doc)
    assert found is not None and reason in found, found


def test_many_failures_are_counted_not_all_listed() -> None:
    doc = record("R")
    doc["fields"] = {"patient_id": 1, "sign": 2, "x": 3}
    doc["form"] = "R"
    many = {**pregnancy(), "patient_id": 1, "lmp_date": 2, "edd": 3, "delivery_date": 4}
    many |= {"weeks_at_registration": "x"}
    many.pop("type")
    many["type"] = "pregnancy"
    reason = VALIDATE("health", {**many, "patient_id": None})
    assert reason is not None and reason.count(";") <= 4
    assert VALIDATE("health", doc) is not None
