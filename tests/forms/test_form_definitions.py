"""Form definitions: the shipped ones load, and broken ones are refused with every reason."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from forms.load import DEFINITIONS, FormDefinitionError, load_forms, parse_form
from forms.model import Action, FieldType


def shipped(code: str) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((DEFINITIONS / f"{code}.json").read_text())
    return raw


def test_the_shipped_forms_load() -> None:
    forms = load_forms()
    assert forms.codes == ["D", "P", "R", "V"]
    p = forms.get("p")
    assert p is not None
    assert [(f.name, f.type, f.required) for f in p.fields] == [
        ("weeks", FieldType.INTEGER, True),
        ("name", FieldType.STRING, True),
    ]
    assert (p.fields[0].min, p.fields[0].max) == (1, 42)
    assert p.actions == {Action.CREATE_PERSON, Action.CREATE_PREGNANCY, Action.SCHEDULE_REMINDERS}
    for form in forms:
        assert set(form.title) >= {"en", "sw"}
        assert all(set(f.label) >= {"en", "sw"} for f in form.fields)
    assert forms.get("V").actions == {Action.ATTACH_TO_PATIENT}  # type: ignore[union-attr]
    assert Action.CLOSE_PREGNANCY in forms.get("D").actions  # type: ignore[union-attr]


def broken(code: str, change: Any) -> dict[str, Any]:
    raw = copy.deepcopy(shipped(code))
    change(raw)
    return raw


def _set(path: list[Any], value: Any) -> Any:
    def change(raw: dict[str, Any]) -> None:
        target = raw
        for step in path[:-1]:
            target = target[step]
        if value is DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value

    return change


DELETE = object()
NOT_A_NAME = {"name": "name", "type": "phone", "required": True, "key": "N", "label": {"en": "x"}}
BROKEN = [
    # the meta-schema
    ("P", _set(["code"], "P 1"), "code"),
    ("P", _set(["code"], DELETE), "'code' is a required property"),
    ("P", _set(["fields"], []), "fields"),
    ("P", _set(["fields", 0, "type"], "decimal"), "fields.0.type"),
    ("P", _set(["fields", 0, "required"], "yes"), "fields.0.required"),
    ("P", _set(["fields", 0, "max_length"], 3), "fields.0: max_length does not apply to this type"),
    ("P", _set(["fields", 1, "pattern"], "(unclosed"), "fields.1.pattern"),
    ("P", _set(["fields", 1, "colour"], "red"), "fields.1"),
    ("P", _set(["actions"], ["teleport"]), "actions.0"),
    ("P", _set(["title"], {"sw": "Usajili"}), "title"),
    # what the meta-schema cannot say
    ("P", _set(["fields", 1, "name"], "weeks"), "field name 'weeks' is used twice"),
    ("P", _set(["fields", 1, "key"], "W"), "key 'W' names two fields"),
    ("P", _set(["fields", 0, "min"], 50), "field 'weeks': min > max"),
    ("P", _set(["fields", 0, "required"], False), "required field 'name' comes after optional"),
    ("P", _set(["fields", 1, "label"], {"en": "Name"}), "field 'name' has no 'sw' label"),
    ("P", _set(["fields", 1], NOT_A_NAME), "create_person needs a string field 'name'"),
    ("P", _set(["actions"], ["create_pregnancy"]), "create_pregnancy needs create_person or"),
    ("V", _set(["actions"], ["close_pregnancy"]), "close_pregnancy needs attach_to_patient"),
    ("V", _set(["actions"], ["create_person"]), "needs a string field 'name'"),
    ("D", _set(["fields", 1, "choices", "LB"], {"en": "live"}), "choice 'LB' has no 'sw' text"),
]


@pytest.mark.parametrize(("code", "change", "problem"), BROKEN)
def test_broken_definitions_are_refused(code: str, change: Any, problem: str) -> None:
    with pytest.raises(FormDefinitionError) as caught:
        parse_form(broken(code, change), f"{code}.json")
    assert any(problem in p for p in caught.value.problems), caught.value.problems


def test_a_directory_of_definitions(tmp_path: Path) -> None:
    (tmp_path / "P.json").write_text(json.dumps(shipped("P")))
    other = shipped("P") | {"code": "p"}
    (tmp_path / "P2.json").write_text(json.dumps(other))
    with pytest.raises(FormDefinitionError, match="form code 'P' is defined twice"):
        load_forms(tmp_path)
    (tmp_path / "P2.json").write_text("{not json")
    with pytest.raises(FormDefinitionError, match="cannot read JSON"):
        load_forms(tmp_path)
    (tmp_path / "P2.json").unlink()
    assert load_forms(tmp_path).codes == ["P"]
    with pytest.raises(FormDefinitionError, match="no form definitions"):
        load_forms(tmp_path / "nothing-here")


def test_a_form_with_its_own_code_and_aliases(tmp_path: Path) -> None:
    anc = shipped("V") | {"code": "ANC", "aliases": ["KL"]}
    (tmp_path / "ANC.json").write_text(json.dumps(anc))
    forms = load_forms(tmp_path)
    assert forms.get("anc") is forms.get("kl") is not None
