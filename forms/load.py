"""Loading form definitions: each file is checked against the meta-schema, then for sense.

The meta-schema (``forms/meta_schema.json``, JSON Schema 2020-12) checks the
shape of one file; :func:`check_form` checks what a schema cannot say
conveniently: unique names and keys, ``min <= max``, required fields before
optional ones (the compact format is positional), every language labelled,
and that each action finds the fields it needs.  A definition that fails
either check stops the server at start-up with every problem listed.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker, ValidationError

from forms.model import Action, Field, FieldType, Form, FormSet

HERE = Path(__file__).resolve().parent
DEFINITIONS = HERE / "definitions"
META_SCHEMA = HERE / "meta_schema.json"
LANGUAGES = ("en", "sw")

# Which fields (name, type) an action needs on its form.
NEEDS: dict[Action, tuple[tuple[str, FieldType], ...]] = {
    Action.CREATE_PERSON: (("name", FieldType.STRING),),
    Action.CREATE_PREGNANCY: (("weeks", FieldType.INTEGER),),
    Action.ATTACH_TO_PATIENT: (("patient_id", FieldType.PATIENT_ID),),
}
# Which other action an action needs beside it.
REQUIRES: dict[Action, tuple[Action, ...]] = {
    Action.CREATE_PREGNANCY: (Action.CREATE_PERSON, Action.ATTACH_TO_PATIENT),
    Action.SCHEDULE_REMINDERS: (Action.CREATE_PREGNANCY,),
    Action.CLOSE_PREGNANCY: (Action.ATTACH_TO_PATIENT,),
}


class FormDefinitionError(ValueError):
    """A definition file is not a valid form; ``problems`` says every way it is not."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


@cache
def meta_validator() -> Draft202012Validator:
    schema = json.loads(META_SCHEMA.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


def load_forms(directory: Path | None = None, languages: Iterable[str] = LANGUAGES) -> FormSet:
    """Every ``*.json`` definition under ``directory`` (default: the shipped ones)."""
    directory = directory or DEFINITIONS
    langs = tuple(languages)
    forms = [parse_form(_read(path), path.name, langs) for path in sorted(directory.glob("*.json"))]
    if not forms:
        raise FormDefinitionError(str(directory), ["no form definitions (*.json) found"])
    _check_codes_unique(forms)
    return FormSet(forms, langs)


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormDefinitionError(path.name, [f"cannot read JSON: {exc}"]) from exc


def parse_form(raw: Any, source: str = "<form>", languages: Iterable[str] = LANGUAGES) -> Form:
    """A definition as a :class:`Form`, or FormDefinitionError naming every problem."""
    errors = sorted(meta_validator().iter_errors(raw), key=lambda e: list(e.absolute_path))
    if errors:
        raise FormDefinitionError(source, [_meta_problem(e) for e in errors])
    form = Form(
        code=raw["code"].upper(),
        title=raw["title"],
        fields=tuple(_field(f) for f in raw["fields"]),
        actions=frozenset(Action(a) for a in raw["actions"]),
        aliases=tuple(a.upper() for a in raw.get("aliases", ())),
    )
    problems = check_form(form, tuple(languages))
    if problems:
        raise FormDefinitionError(source, problems)
    return form


def _meta_problem(error: ValidationError) -> str:
    value = error.validator_value
    if error.validator == "not" and isinstance(value, dict) and "required" in value:
        # a rule of another field type (see the meta-schema's allOf)
        return _where(error.absolute_path) + f"{value['required'][0]} does not apply to this type"
    return _where(error.absolute_path) + error.message


def _where(path: Iterable[object]) -> str:
    parts = ".".join(str(p) for p in path)
    return f"{parts}: " if parts else ""


def _field(raw: Mapping[str, Any]) -> Field:
    return Field(
        name=raw["name"],
        type=FieldType(raw["type"]),
        required=raw["required"],
        key=raw["key"].upper(),
        label=raw["label"],
        aliases=tuple(a.upper() for a in raw.get("aliases", ())),
        min=raw.get("min"),
        max=raw.get("max"),
        min_length=raw.get("min_length"),
        max_length=raw.get("max_length"),
        pattern=raw.get("pattern"),
        choices=raw.get("choices"),
        min_days=raw.get("min_days"),
        max_days=raw.get("max_days"),
    )


def check_form(form: Form, languages: tuple[str, ...] = LANGUAGES) -> list[str]:
    """What the meta-schema cannot say; an empty list when the form makes sense."""
    return [
        *_check_names(form),
        *_check_order(form),
        *_check_ranges(form),
        *_check_languages(form, languages),
        *_check_actions(form),
    ]


def _duplicates(items: Iterable[str]) -> list[str]:
    return sorted(item for item, count in Counter(items).items() if count > 1)


def _check_names(form: Form) -> list[str]:
    problems = [f"field name {n!r} is used twice" for n in _duplicates(f.name for f in form.fields)]
    keys = [k.casefold() for f in form.fields for k in f.keys]
    problems += [f"key {k.upper()!r} names two fields" for k in _duplicates(keys)]
    return problems


def _check_order(form: Form) -> list[str]:
    problems = []
    optional_seen = None
    for spec in form.fields:
        if not spec.required:
            optional_seen = optional_seen or spec.name
        elif optional_seen is not None:
            problems.append(
                f"required field {spec.name!r} comes after optional field {optional_seen!r}: "
                "the compact format is positional"
            )
    return problems


def _check_ranges(form: Form) -> list[str]:
    problems = []
    for spec in form.fields:
        for low, high, what in (
            (spec.min, spec.max, "min > max"),
            (spec.min_length, spec.max_length, "min_length > max_length"),
            (spec.min_days, spec.max_days, "min_days > max_days"),
        ):
            if low is not None and high is not None and low > high:
                problems.append(f"field {spec.name!r}: {what}")
        if spec.pattern is not None:
            try:
                re.compile(spec.pattern)
            except re.error as exc:
                problems.append(f"field {spec.name!r}: pattern does not compile: {exc}")
    return problems


def _check_languages(form: Form, languages: tuple[str, ...]) -> list[str]:
    problems = [f"title has no {lang!r} text" for lang in languages if lang not in form.title]
    for spec in form.fields:
        problems += [
            f"field {spec.name!r} has no {lang!r} label"
            for lang in languages
            if lang not in spec.label
        ]
        for code, texts in (spec.choices or {}).items():
            problems += [
                f"field {spec.name!r}: choice {code!r} has no {lang!r} text"
                for lang in languages
                if lang not in texts
            ]
    return problems


def _check_actions(form: Form) -> list[str]:
    problems = []
    for action in sorted(form.actions, key=lambda a: a.value):
        for name, kind in NEEDS.get(action, ()):
            spec = form.field(name)
            if spec is None or spec.type is not kind:
                problems.append(f"action {action.value} needs a {kind.value} field {name!r}")
        needed = REQUIRES.get(action, ())
        if needed and not any(other in form.actions for other in needed):
            choices = " or ".join(a.value for a in needed)
            problems.append(f"action {action.value} needs {choices} too")
    if {Action.CREATE_PERSON, Action.ATTACH_TO_PATIENT} <= form.actions:
        problems.append("a form either creates a person or attaches to one, not both")
    return problems


def _check_codes_unique(forms: list[Form]) -> None:
    codes = [c.casefold() for f in forms for c in (f.code, *f.aliases)]
    clashes = _duplicates(codes)
    if clashes:
        raise FormDefinitionError(
            "forms", [f"form code {c.upper()!r} is defined twice" for c in clashes]
        )
