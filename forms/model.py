"""Form definitions as values: which fields a form code has, in which order.

A definition is one JSON file under ``forms/definitions/`` (checked against
``forms/meta_schema.json`` when loaded, see :mod:`forms.load`)::

    form   = {code, aliases?, title: {lang: text}, fields: [field, ...], actions: [action, ...]}
    field  = {name, type, required, key, aliases?, label: {lang: text},
              min?, max?                                integer
              min_length?, max_length?, pattern?,       string
              choices?: {CODE: {lang: text}}            string with a closed set of codes
              min_days?, max_days?}                     date, in days relative to the report day
    type   = integer | string | date | boolean | phone | patient_id
    action = create_person | create_pregnancy | schedule_reminders
           | attach_to_patient | close_pregnancy

``key`` (and ``aliases``) are what a worker types in the labelled SMS format
(``P#W 3#N Jane``); ``label`` is what replies call the field, per language.
Fields are positional in the compact format (``P 3 Jane``), so required
fields come before optional ones.  The same definitions generate the JSON
Schema of each document type (:mod:`forms.docschema`).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TypeAlias

# What a parsed field holds.
Value: TypeAlias = int | str | bool | dt.date


class FieldType(enum.Enum):
    INTEGER = "integer"
    STRING = "string"
    DATE = "date"
    BOOLEAN = "boolean"
    PHONE = "phone"
    PATIENT_ID = "patient_id"


class Action(enum.Enum):
    """What a valid report triggers (sms_gateway.registration carries them out)."""

    CREATE_PERSON = "create_person"  # a new patient with a new check-digit ID
    CREATE_PREGNANCY = "create_pregnancy"  # LMP = report day - weeks; EDD = LMP + 280 days
    SCHEDULE_REMINDERS = "schedule_reminders"  # ANC contact reminders to the worker
    ATTACH_TO_PATIENT = "attach_to_patient"  # the report names an existing patient
    CLOSE_PREGNANCY = "close_pregnancy"  # delivery: pregnancy closed, reminders cleared


@dataclass(frozen=True)
class Field:
    name: str
    type: FieldType
    required: bool
    key: str
    label: Mapping[str, str]
    aliases: tuple[str, ...] = ()
    min: int | None = None
    max: int | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    choices: Mapping[str, Mapping[str, str]] | None = None
    min_days: int | None = None
    max_days: int | None = None

    @property
    def keys(self) -> tuple[str, ...]:
        """Every label the labelled format accepts for this field, the canonical one first."""
        return (self.key, *self.aliases)

    def label_in(self, language: str) -> str:
        return self.label.get(language) or self.label.get("en") or self.name


@dataclass(frozen=True)
class Form:
    code: str
    title: Mapping[str, str]
    fields: tuple[Field, ...]
    actions: frozenset[Action]
    aliases: tuple[str, ...] = ()

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)

    def field_for_key(self, key: str) -> Field | None:
        """The field a labelled-format key names (case-insensitive)."""
        folded = key.casefold()
        for candidate in self.fields:
            if any(k.casefold() == folded for k in candidate.keys):
                return candidate
        return None

    @property
    def rest_field(self) -> Field | None:
        """The last field, when it is a string: in the compact format it takes the rest."""
        last = self.fields[-1] if self.fields else None
        return last if last is not None and last.type is FieldType.STRING else None

    def title_in(self, language: str) -> str:
        return self.title.get(language) or self.title.get("en") or self.code


class FormSet:
    """The loaded forms, looked up by code or alias, case-insensitively."""

    def __init__(self, forms: list[Form], languages: tuple[str, ...] = ("en", "sw")) -> None:
        self.languages = languages
        self._forms = {f.code: f for f in forms}
        self._by_code: dict[str, Form] = {}
        for form in forms:
            for code in (form.code, *form.aliases):
                self._by_code[code.casefold()] = form

    def __iter__(self) -> Iterator[Form]:
        return iter(self._forms.values())

    def __len__(self) -> int:
        return len(self._forms)

    def get(self, code: str) -> Form | None:
        return self._by_code.get(code.casefold())

    @property
    def codes(self) -> list[str]:
        return sorted(self._forms)
