"""JSON Schemas for the documents the forms describe, and the sync core's validator.

One schema per document type, generated from the form definitions:

    ("data_record", CODE)  a report of form CODE: ``fields`` holds the form's fields
    ("person", None)       a patient; ``name`` as the creating form's name field; a
                           ``patient_id`` has a valid check digit and ``_id`` = person-<ID>
    ("pregnancy", None)    ``patient_id``, ``lmp_date``, ``edd``, and the weeks at
                           registration in the registering form's range

:class:`DocumentValidator` is what :mod:`forms.routes` appends to the
replication core's validators: a document of one of these types that fails
its schema is refused per document (``forbidden``) with a reason naming the
failing fields.  Documents of other types, and deletions, pass.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker, ValidationError

from barcode.checkdigit import Scheme, SchemeLike
from barcode.checkdigit import validate as validate_patient_id
from forms.model import Action, Field, FieldType, FormSet

DocKey = tuple[str, str | None]
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
PHONE_PATTERN = r"^\+?[0-9]{7,15}$"
MAX_REASONS = 5


def format_checker(scheme: SchemeLike = Scheme.LUHN30) -> FormatChecker:
    """``date`` (``YYYY-MM-DD``) and ``patient-id`` (a normalised ID, check digit right)."""
    checker = FormatChecker(formats=())

    @checker.checks("date", raises=ValueError)
    def _is_date(value: object) -> bool:
        return not isinstance(value, str) or bool(dt.date.fromisoformat(value))

    @checker.checks("patient-id")
    def _is_patient_id(value: object) -> bool:
        if not isinstance(value, str):
            return True
        result = validate_patient_id(value, scheme)
        return result.valid and result.id == value

    return checker


def field_schema(spec: Field) -> dict[str, Any]:
    """The JSON Schema of one field's stored value."""
    kind = spec.type
    if kind is FieldType.INTEGER:
        schema: dict[str, Any] = {"type": "integer"}
        if spec.min is not None:
            schema["minimum"] = spec.min
        if spec.max is not None:
            schema["maximum"] = spec.max
        return schema
    if kind is FieldType.STRING:
        return _string_schema(spec)
    if kind is FieldType.DATE:
        return {"type": "string", "pattern": DATE_PATTERN, "format": "date"}
    if kind is FieldType.BOOLEAN:
        return {"type": "boolean"}
    if kind is FieldType.PHONE:
        return {"type": "string", "pattern": PHONE_PATTERN}
    return {"type": "string", "format": "patient-id"}


def _string_schema(spec: Field) -> dict[str, Any]:
    if spec.choices is not None:
        return {"enum": list(spec.choices)}
    schema: dict[str, Any] = {"type": "string"}
    if spec.min_length is not None:
        schema["minLength"] = spec.min_length
    if spec.max_length is not None:
        schema["maxLength"] = spec.max_length
    if spec.pattern is not None:
        schema["pattern"] = f"^(?:{spec.pattern})$"
    return schema


def _object(properties: dict[str, Any], required: Iterable[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": sorted(required)}


def document_schemas(forms: FormSet) -> dict[DocKey, dict[str, Any]]:
    """Every document type's schema, keyed by (type, form code or None)."""
    schemas: dict[DocKey, dict[str, Any]] = {}
    for form in forms:
        fields = _object(
            {f.name: field_schema(f) for f in form.fields},
            (f.name for f in form.fields if f.required),
        )
        schemas[("data_record", form.code)] = _object(
            {"form": {"const": form.code}, "fields": fields}, ("form", "fields")
        )
        if Action.CREATE_PERSON in form.actions:
            name = form.field("name")
            assert name is not None  # forms.load checked the action's fields
            schemas[("person", None)] = _object(
                {
                    "_id": {"type": "string", "pattern": "^person-"},
                    "name": field_schema(name),
                    "patient_id": field_schema(_PATIENT_ID),
                },
                ("name",),  # patient_id may come later (a card printed afterwards)
            )
        if Action.CREATE_PREGNANCY in form.actions:
            weeks = form.field("weeks")
            assert weeks is not None
            schemas[("pregnancy", None)] = _object(
                {
                    "patient_id": field_schema(_PATIENT_ID),
                    "lmp_date": field_schema(_DATE),
                    "edd": field_schema(_DATE),
                    "weeks_at_registration": field_schema(weeks),
                    "delivery_date": field_schema(_DATE),
                },
                ("patient_id", "lmp_date", "edd"),
            )
    return schemas


_PATIENT_ID = Field("patient_id", FieldType.PATIENT_ID, True, "ID", {"en": "Patient ID"})
_DATE = Field("date", FieldType.DATE, True, "DT", {"en": "Date"})


class DocumentValidator:
    """``(db, doc) -> reason | None`` for the replication core (see ``Parts.validators``)."""

    refusal_code = "form_schema"  # how the refused-records list names its refusals

    def __init__(self, forms: FormSet, scheme: SchemeLike = Scheme.LUHN30) -> None:
        self.schemas = document_schemas(forms)
        checker = format_checker(scheme)
        self._validators = {
            key: Draft202012Validator(schema, format_checker=checker)
            for key, schema in self.schemas.items()
        }

    def __call__(self, db: str, doc: dict[str, Any]) -> str | None:
        if doc.get("_deleted") is True:
            return None
        key = self.key_of(doc)
        validator = self._validators.get(key) if key is not None else None
        if validator is None or key is None:
            return None
        errors = sorted(validator.iter_errors(doc), key=lambda e: _path(e))
        if not errors:
            return self._id_rule(doc)
        shown = "; ".join(describe(e) for e in errors[:MAX_REASONS])
        more = f" (and {len(errors) - MAX_REASONS} more)" if len(errors) > MAX_REASONS else ""
        return f"invalid {_name(key)}: {shown}{more}"

    def explain(self, db: str, doc: dict[str, Any]) -> str:
        """Why ``doc`` was refused, for a supervisor: ``field 'weeks': must be at most 42``."""
        key = self.key_of(doc)
        validator = self._validators.get(key) if key is not None else None
        if validator is None or key is None:
            return ""
        errors = sorted(validator.iter_errors(doc), key=lambda e: _path(e))
        if not errors:
            return self._id_rule(doc) or ""
        shown = "; ".join(explain(e) for e in errors[:MAX_REASONS])
        more = f" (and {len(errors) - MAX_REASONS} more)" if len(errors) > MAX_REASONS else ""
        return f"{_name(key)}: {shown}{more}"

    @staticmethod
    def key_of(doc: dict[str, Any]) -> DocKey | None:
        kind = doc.get("type")
        if kind == "data_record":
            form = doc.get("form")
            return (kind, form) if isinstance(form, str) else None
        return (kind, None) if isinstance(kind, str) else None

    @staticmethod
    def _id_rule(doc: dict[str, Any]) -> str | None:
        """A person's ``_id`` is ``person-<patient_id>`` (the barcode lookup relies on it)."""
        patient_id = doc.get("patient_id")
        if doc.get("type") == "person" and patient_id and doc.get("_id") != f"person-{patient_id}":
            return "invalid person: _id must be person-<patient_id>"
        return None


def _name(key: DocKey) -> str:
    return f"{key[1]} report" if key[0] == "data_record" else key[0]


def _path(error: ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    required = error.validator_value
    if (
        error.validator == "required"
        and isinstance(error.instance, dict)
        and isinstance(required, list)
    ):
        missing = next((m for m in required if m not in error.instance), None)
        parts.append(str(missing))
    return ".".join(parts)


def describe(error: ValidationError) -> str:
    """One failing field in plain words: ``fields.weeks must be at most 42``."""
    return f"{_path(error) or 'document'} {_rule(error)}"


def explain(error: ValidationError) -> str:
    """One failing field for a supervisor: ``field 'weeks': must be at most 42``."""
    path = _path(error).removeprefix("fields.")
    return f"field '{path}': {_rule(error)}" if path else f"the document: {_rule(error)}"


def _rule(error: ValidationError) -> str:
    value = error.validator_value
    listed = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    words = {
        "required": "is required",
        "minimum": f"must be at least {value}",
        "maximum": f"must be at most {value}",
        "minLength": f"must have at least {value} characters",
        "maxLength": f"must have at most {value} characters",
        "enum": f"must be one of {listed}",
        "const": f"must be {value}",
        "type": f"must be of type {value}",
        "pattern": "is not in the right form",
        "format": f"is not a valid {value}",
    }
    return words.get(str(error.validator), error.message)
