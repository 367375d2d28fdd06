"""Mango selector matching (sync.replication.selector), checked against CouchDB semantics."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.errors import BadRequest
from sync.replication.selector import Selector

MATCH_CASES: list[tuple[Any, dict[str, Any], bool]] = [
    # implicit equality, subfields, paths
    ({"type": "person"}, {"type": "person"}, True),
    ({"type": "person"}, {"type": "place"}, False),
    ({"type": "person"}, {}, False),
    ({"a": 1, "b": 2}, {"a": 1, "b": 3}, False),
    ({"a": 1, "b": 2}, {"a": 1, "b": 2, "c": 3}, True),
    ({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}}, True),
    ({"a": {"b": 1}}, {"a": {"b": 2}}, False),
    ({"a.b.c": 1}, {"a": {"b": {"c": 1}}}, True),
    ({"a": {"b.c": {"$gt": 0}}}, {"a": {"b": {"c": 1}}}, True),
    ({"a.b": 1}, {"a": 5}, False),
    ({"a\\.b": 1}, {"a.b": 1}, True),
    ({"a\\.b": 1}, {"a": {"b": 1}}, False),
    ({"\\$ref": 1}, {"$ref": 1}, True),
    ({"a.1": "y"}, {"a": ["x", "y"]}, True),
    ({"a.1.n": 2}, {"a": [{"n": 1}, {"n": 2}]}, True),
    ({"a": {}}, {"a": {}}, True),
    ({"a": {}}, {"a": {"b": 1}}, False),
    ({"a": [1, 2]}, {"a": [1, 2]}, True),
    ({"a": [1, 2]}, {"a": [2, 1]}, False),
    ({}, {"anything": 1}, True),
    ({"$gt": 5}, {}, True),  # a root condition applies to the whole document
    # $eq / $ne: collation equality, missing fields never match
    ({"n": {"$eq": 1}}, {"n": 1.0}, True),
    ({"n": {"$eq": 1}}, {"n": "1"}, False),
    ({"n": {"$eq": 1}}, {"n": True}, False),
    ({"n": None}, {"n": None}, True),
    ({"n": None}, {}, False),
    ({"n": {"$ne": 1}}, {"n": 2}, True),
    ({"n": {"$ne": 1}}, {"n": 1}, False),
    ({"n": {"$ne": 1}}, {}, False),
    # ordering within and across types
    ({"n": {"$lt": 5}}, {"n": 4}, True),
    ({"n": {"$lt": 5}}, {"n": 5}, False),
    ({"n": {"$lte": 5}}, {"n": 5}, True),
    ({"n": {"$gte": 5}}, {"n": 5.0}, True),
    ({"n": {"$gt": 5}}, {"n": 5}, False),
    ({"n": {"$lt": 5}}, {"n": None}, True),
    ({"n": {"$lt": 5}}, {"n": True}, True),
    ({"n": {"$lt": 5}}, {"n": "4"}, False),
    ({"n": {"$gt": 5}}, {"n": "a"}, True),
    ({"n": {"$gt": False}}, {"n": True}, True),
    ({"n": {"$gt": None}}, {"n": False}, True),
    ({"n": {"$lt": "a"}}, {"n": 10**20}, True),
    ({"n": {"$gt": "zzz"}}, {"n": [0]}, True),
    ({"n": {"$gt": [9, 9]}}, {"n": {}}, True),
    ({"n": {"$lt": [1, 2]}}, {"n": [1]}, True),
    ({"n": {"$lt": [1, 2]}}, {"n": [0, 9, 9]}, True),
    ({"n": {"$lt": {"b": 2}}}, {"n": {"b": 1}}, True),
    ({"n": {"$gt": {"b": 1}}}, {"n": {"b": 1, "c": 0}}, True),
    ({"n": {"$lt": {"b": 1}}}, {"n": {"a": 9}}, True),
    ({"s": {"$lt": "b"}}, {"s": "abc"}, True),
    ({"s": {"$lt": "a"}}, {"s": "B"}, True),  # code points; ICU would say "a" < "B"
    ({"s": {"$gt": "é"}}, {"s": "z"}, False),  # code points again; ICU: "z" > "é"
    ({"n": {"$gt": 1, "$lt": 5}}, {"n": 3}, True),
    ({"n": {"$gt": 1, "$lt": 5}}, {"n": 5}, False),
    ({"n": {"$gt": 1}}, {}, False),
    # $exists
    ({"a": {"$exists": True}}, {"a": None}, True),
    ({"a": {"$exists": True}}, {}, False),
    ({"a": {"$exists": False}}, {}, True),
    ({"a": {"$exists": False}}, {"a": None}, False),
    ({"a.b": {"$exists": False}}, {"a": {}}, True),
    ({"a.b": {"$exists": False}}, {"a": 1}, False),  # a bad path matches nothing
    ({"a.3": {"$exists": False}}, {"a": [1]}, False),
    # $type
    ({"a": {"$type": "null"}}, {"a": None}, True),
    ({"a": {"$type": "boolean"}}, {"a": False}, True),
    ({"a": {"$type": "number"}}, {"a": 1.5}, True),
    ({"a": {"$type": "number"}}, {"a": "1"}, False),
    ({"a": {"$type": "number"}}, {"a": True}, False),
    ({"a": {"$type": "string"}}, {"a": ""}, True),
    ({"a": {"$type": "array"}}, {"a": []}, True),
    ({"a": {"$type": "object"}}, {"a": {}}, True),
    ({"a": {"$type": "null"}}, {}, False),
    # $in / $nin
    ({"a": {"$in": [1, 2]}}, {"a": 2}, True),
    ({"a": {"$in": [1, 2]}}, {"a": 3}, False),
    ({"a": {"$in": [1, 2]}}, {"a": [3, 2]}, True),
    ({"a": {"$in": [[1, 2]]}}, {"a": [1, 2]}, False),  # array fields test their elements
    ({"a": {"$in": []}}, {"a": 1}, False),
    ({"a": {"$in": [1]}}, {}, False),
    ({"a": {"$nin": [1, 2]}}, {"a": 3}, True),
    ({"a": {"$nin": [1, 2]}}, {"a": 1}, False),
    ({"a": {"$nin": [1, 2]}}, {"a": [3, 1]}, False),
    ({"a": {"$nin": [1, 2]}}, {"a": []}, True),
    ({"a": {"$nin": []}}, {"a": 1}, True),
    ({"a": {"$nin": [1]}}, {}, False),
    # $size / $mod / $regex / $beginsWith
    ({"t": {"$size": 2}}, {"t": [1, 2]}, True),
    ({"t": {"$size": 2}}, {"t": [1]}, False),
    ({"t": {"$size": 2}}, {"t": "ab"}, False),
    ({"t": {"$size": 0}}, {"t": []}, True),
    ({"n": {"$mod": [3, 1]}}, {"n": 7}, True),
    ({"n": {"$mod": [3, 1]}}, {"n": 8}, False),
    ({"n": {"$mod": [3, 1]}}, {"n": 7.0}, False),
    ({"n": {"$mod": [3, -1]}}, {"n": -7}, True),
    ({"n": {"$mod": [3, 2]}}, {"n": -7}, False),
    ({"n": {"$mod": [-3, 1]}}, {"n": 7}, True),
    ({"n": {"$mod": [1, 0]}}, {"n": True}, False),
    ({"s": {"$regex": "^ab"}}, {"s": "abc"}, True),
    ({"s": {"$regex": "^ab"}}, {"s": "cab"}, False),
    ({"s": {"$regex": "b"}}, {"s": "abc"}, True),
    ({"s": {"$regex": "(?i)^AB"}}, {"s": "abc"}, True),
    ({"s": {"$regex": "1"}}, {"s": 1}, False),
    ({"s": {"$beginsWith": "ab"}}, {"s": "abc"}, True),
    ({"s": {"$beginsWith": "ab"}}, {"s": "xabc"}, False),
    ({"s": {"$beginsWith": "1"}}, {"s": 12}, False),
    ({"s": {"$beginsWith": ""}}, {"s": ""}, True),
    # $and / $or / $nor
    ({"$and": [{"a": 1}, {"b": 2}]}, {"a": 1, "b": 2}, True),
    ({"$and": [{"a": 1}, {"b": 2}]}, {"a": 1}, False),
    ({"$and": []}, {}, True),
    ({"$or": [{"a": 1}, {"b": 2}]}, {"b": 2}, True),
    ({"$or": [{"a": 1}, {"b": 2}]}, {"a": 2}, False),
    ({"$or": []}, {}, True),
    ({"$nor": [{"a": 1}, {"a": 2}]}, {"a": 3}, True),
    ({"$nor": [{"a": 1}, {"a": 2}]}, {"a": 2}, False),
    ({"$nor": [{"a": 1}]}, {}, False),  # negation pushed down: a must exist
    ({"$nor": []}, {}, True),
    ({"a": {"$or": [{"$lt": 0}, {"$gt": 10}]}}, {"a": 11}, True),
    ({"a": {"$or": [{"$lt": 0}, {"$gt": 10}]}}, {"a": 5}, False),
    ({"a": {"$and": [{"b": 1}, {"c": 2}]}}, {"a": {"b": 1, "c": 2}}, True),
    ({"a": {"$or": [1, 2]}}, {"a": 2}, True),
    (
        {"year": 1977, "$or": [{"d": "Lucas"}, {"d": "Spielberg"}]},
        {"year": 1977, "d": "Lucas"},
        True,
    ),
    # $not: CouchDB pushes it down to the field conditions
    ({"$not": {"a": 1}}, {"a": 2}, True),
    ({"$not": {"a": 1}}, {"a": 1}, False),
    ({"$not": {"a": 1}}, {}, False),
    ({"$not": {"a": {"$exists": True}}}, {}, True),
    ({"$not": {"a": {"$exists": False}}}, {}, False),
    ({"$not": {"$not": {"a": 1}}}, {"a": 1}, True),
    ({"$not": {"$and": [{"a": 1}, {"b": 1}]}}, {"a": 1, "b": 2}, True),
    ({"$not": {"$and": [{"a": 1}, {"b": 1}]}}, {}, False),
    ({"$not": {"$or": []}}, {}, True),
    ({"$not": {"a": {"$size": 1}}}, {"a": [1, 2]}, True),
    ({"$not": {"a": {"$size": 1}}}, {}, False),
    ({"a": {"$not": {"$gt": 5}}}, {"a": 3}, True),
    ({"a": {"$not": {"$gt": 5}}}, {"a": 6}, False),
    ({"a": {"$not": {"$gt": 5}}}, {}, False),
    ({"a": {"$not": {"b": 1}}}, {"a": {"b": 2}}, True),
    # $all
    ({"t": {"$all": ["a", "b"]}}, {"t": ["b", "c", "a"]}, True),
    ({"t": {"$all": ["a", "b"]}}, {"t": ["a"]}, False),
    ({"t": {"$all": ["a"]}}, {"t": "a"}, False),
    ({"t": {"$all": []}}, {"t": []}, False),
    ({"t": {"$all": [["a", "b"]]}}, {"t": ["a", "b"]}, True),
    ({"t": {"$all": [["a", "b"]]}}, {"t": [["a", "b"], "c"]}, True),
    # $elemMatch / $allMatch / $keyMapMatch
    ({"t": {"$elemMatch": {"$gt": 5}}}, {"t": [1, 7]}, True),
    ({"t": {"$elemMatch": {"$gt": 5}}}, {"t": [1, 2]}, False),
    ({"t": {"$elemMatch": {"$gt": 5}}}, {"t": 7}, False),
    ({"t": {"$elemMatch": {"$gt": 5}}}, {"t": []}, False),
    (
        {"kids": {"$elemMatch": {"age": {"$lt": 5}, "name": "x"}}},
        {"kids": [{"age": 3, "name": "y"}, {"age": 9, "name": "x"}]},
        False,
    ),
    (
        {"kids": {"$elemMatch": {"age": {"$lt": 5}, "name": "x"}}},
        {"kids": [{"age": 9, "name": "x"}, {"age": 3, "name": "x"}]},
        True,
    ),
    ({"t": {"$elemMatch": {"$not": {"n": 1}}}}, {"t": [{}]}, True),  # literal $not inside
    ({"t": {"$elemMatch": {"$nor": [{"$eq": 1}]}}}, {"t": [1, 2]}, True),
    ({"t": {"$allMatch": {"$gt": 0}}}, {"t": [1, 2]}, True),
    ({"t": {"$allMatch": {"$gt": 0}}}, {"t": [1, -1]}, False),
    ({"t": {"$allMatch": {"$gt": 0}}}, {"t": []}, False),
    ({"t": {"$allMatch": {"k": "v"}}}, {"t": [{"k": "v"}, {"k": "v", "z": 1}]}, True),
    ({"m": {"$keyMapMatch": {"$beginsWith": "x"}}}, {"m": {"a": 1, "xa": 1}}, True),
    ({"m": {"$keyMapMatch": {"$beginsWith": "x"}}}, {"m": {"a": 1}}, False),
    ({"m": {"$keyMapMatch": {"$eq": "x"}}}, {"m": ["x"]}, False),
]


@pytest.mark.parametrize(("selector", "doc", "expected"), MATCH_CASES)
def test_matches(selector: Any, doc: dict[str, Any], expected: bool) -> None:
    assert Selector.parse(selector).matches(doc) is expected


def _nested(depth: int) -> dict[str, Any]:
    selector: dict[str, Any] = {"a": 1}
    for _ in range(depth):
        selector = {"a": selector}
    return selector


INVALID_CASES: list[tuple[Any, str]] = [
    ([], "selector must be a JSON object"),
    ("type", "selector must be a JSON object"),
    (None, "selector must be a JSON object"),
    ({"$foo": 1}, "unknown operator '$foo' in selector"),
    ({"a": {"$foo": 1}}, "unknown operator '$foo' in selector"),
    ({"$and": [{"a": {"$bad": 1}}]}, "unknown operator '$bad' in selector"),
    ({"a": {"$elemMatch": {"$bad": 1}}}, "unknown operator '$bad' in selector"),
    ({"$default": 1}, "unknown operator '$default' in selector"),
    ({"$text": "x"}, "operator '$text' is not supported in selectors"),
    ({"$where": "1"}, "operator '$where' is not supported in selectors"),
    ({"a": {"$near": [0, 0]}}, "operator '$near' is not supported in selectors"),
    ({"a": {"$in": 1}}, "$in needs an array"),
    ({"a": {"$nin": "ab"}}, "$nin needs an array"),
    ({"a": {"$all": {}}}, "$all needs an array"),
    ({"$and": {"a": 1}}, "$and needs an array"),
    ({"$or": 1}, "$or needs an array"),
    ({"$nor": None}, "$nor needs an array"),
    ({"$not": [{"a": 1}]}, "$not needs a selector object"),
    ({"a": {"$not": 1}}, "$not needs a selector object"),
    ({"a": {"$elemMatch": 1}}, "$elemMatch needs a selector object"),
    ({"a": {"$allMatch": []}}, "$allMatch needs a selector object"),
    ({"a": {"$keyMapMatch": "k"}}, "$keyMapMatch needs a selector object"),
    ({"a": {"$exists": 1}}, "$exists needs a boolean"),
    ({"a": {"$exists": "true"}}, "$exists needs a boolean"),
    ({"a": {"$type": "int"}}, "$type needs one of null, boolean, number, string, array, object"),
    ({"a": {"$type": 1}}, "$type needs one of null, boolean, number, string, array, object"),
    ({"a": {"$size": -1}}, "$size needs a non-negative integer"),
    ({"a": {"$size": 1.0}}, "$size needs a non-negative integer"),
    ({"a": {"$size": True}}, "$size needs a non-negative integer"),
    ({"a": {"$mod": [0, 1]}}, "$mod divisor must not be zero"),
    ({"a": {"$mod": [2]}}, "$mod needs an array of two integers, [divisor, remainder]"),
    ({"a": {"$mod": [2, 0.5]}}, "$mod needs an array of two integers, [divisor, remainder]"),
    ({"a": {"$mod": [True, 0]}}, "$mod needs an array of two integers, [divisor, remainder]"),
    ({"a": {"$mod": 2}}, "$mod needs an array of two integers, [divisor, remainder]"),
    ({"a": {"$regex": 1}}, "$regex needs a string"),
    ({"a": {"$beginsWith": 1}}, "$beginsWith needs a string"),
    ({"a..b": 1}, "invalid field name 'a..b' in selector"),
    ({"": 1}, "invalid field name '' in selector"),
    ({"a.": 1}, "invalid field name 'a.' in selector"),
    ({"a": {"b\\.": {"..": 1}}}, "invalid field name '..' in selector"),
    ({"a": float("nan")}, "selector numbers must be finite"),
    ({"a": {"$in": [float("inf")]}}, "selector numbers must be finite"),
    ({"a": {"$eq": {1: 2}}}, "selector keys must be strings"),
    ({"a": {"$eq": {1, 2}}}, "selector holds a non-JSON value of type set"),
    (_nested(70), "selector is nested deeper than 64 levels"),
]


@pytest.mark.parametrize(("selector", "reason"), INVALID_CASES)
def test_invalid_selectors(selector: Any, reason: str) -> None:
    with pytest.raises(BadRequest) as caught:
        Selector.parse(selector)
    assert caught.value.reason == reason
    assert caught.value.status == 400


@pytest.mark.parametrize("pattern", ["(", "[a-", "a{2,1}", "(?P<x>a)(?P<x>b)"])
def test_invalid_regex_is_bad_request(pattern: str) -> None:
    with pytest.raises(BadRequest) as caught:
        Selector.parse({"a": {"$regex": pattern}})
    assert caught.value.reason.startswith("invalid regular expression in $regex: ")


def test_nesting_up_to_the_limit_is_accepted() -> None:
    selector = _nested(60)
    doc = _nested(60)
    assert Selector.parse(selector).matches(doc)


def test_selector_is_an_immutable_value() -> None:
    raw: dict[str, Any] = {"tags": {"$in": ["a", "b"]}, "n": {"$eq": {"x": [1]}}}
    selector = Selector.parse(raw)
    raw["tags"]["$in"].append("c")
    raw["n"]["$eq"]["x"].append(2)
    assert not selector.matches({"tags": ["c"], "n": {"x": [1]}})
    assert selector.matches({"tags": ["a"], "n": {"x": [1]}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        selector.source = "{}"  # type: ignore[misc]
    again = Selector.parse({"tags": {"$in": ["a", "b"]}, "n": {"$eq": {"x": [1]}}})
    assert again == selector
    assert hash(again) == hash(selector)
    assert Selector.parse({"a": 1}) != Selector.parse({"a": 2})
    assert selector.source == '{"tags":{"$in":["a","b"]},"n":{"$eq":{"x":[1]}}}'


# --- properties -----------------------------------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(-5, 5, allow_nan=False)
    | st.text("abAB", max_size=3)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text("ab", max_size=2), inner),
    max_leaves=6,
)
TYPE_NAMES = ["null", "boolean", "number", "string", "array", "object"]

CONDITIONS = st.one_of(
    st.builds(
        lambda op, v: {op: v}, st.sampled_from(["$lt", "$lte", "$eq", "$ne", "$gte", "$gt"]), JSON
    ),
    st.builds(
        lambda op, v: {op: v}, st.sampled_from(["$in", "$nin", "$all"]), st.lists(JSON, max_size=3)
    ),
    st.builds(lambda v: {"$exists": v}, st.booleans()),
    st.builds(lambda v: {"$type": v}, st.sampled_from(TYPE_NAMES)),
    st.builds(lambda v: {"$size": v}, st.integers(0, 3)),
    st.builds(lambda d, r: {"$mod": [d, r]}, st.integers(-4, 4).filter(bool), st.integers(-3, 3)),
    st.builds(lambda v: {"$regex": v}, st.sampled_from(["^a", "b$", "a.", "[AB]", ""])),
    st.builds(lambda v: {"$beginsWith": v}, st.text("abAB", max_size=2)),
    st.builds(lambda v: {"$elemMatch": {"$gte": v}}, SCALARS),
    st.builds(lambda v: {"$allMatch": {"$ne": v}}, SCALARS),
)


def _matches(selector: dict[str, Any], doc: dict[str, Any]) -> bool:
    return Selector.parse(selector).matches(doc)


@settings(database=None, max_examples=300)
@given(value=JSON, cond=CONDITIONS)
def test_not_is_the_complement_when_the_field_exists(value: Any, cond: dict[str, Any]) -> None:
    doc = {"x": value}
    plain = _matches({"x": cond}, doc)
    assert _matches({"$not": {"x": cond}}, doc) is not plain
    assert _matches({"x": {"$not": cond}}, doc) is not plain
    assert _matches({"$nor": [{"x": cond}]}, doc) is not plain
    assert _matches({"$not": {"$not": {"x": cond}}}, doc) is plain


@settings(database=None, max_examples=200)
@given(cond=CONDITIONS)
def test_missing_fields_match_only_exists_false(cond: dict[str, Any]) -> None:
    expected = cond == {"$exists": False}
    assert _matches({"x": cond}, {"y": 1}) is expected
    assert _matches({"$not": {"x": cond}}, {"y": 1}) is (cond == {"$exists": True})


@settings(database=None, max_examples=300)
@given(x=JSON, y=JSON, cond_a=CONDITIONS, cond_b=CONDITIONS)
def test_combinators_agree_with_boolean_logic(
    x: Any, y: Any, cond_a: dict[str, Any], cond_b: dict[str, Any]
) -> None:
    doc = {"x": x, "y": y}
    a, b = {"x": cond_a}, {"y": cond_b}
    hit_a, hit_b = _matches(a, doc), _matches(b, doc)
    assert _matches({"$and": [a, b]}, doc) is (hit_a and hit_b)
    assert _matches({**a, **b}, doc) is (hit_a and hit_b)
    assert _matches({"$or": [a, b]}, doc) is (hit_a or hit_b)
    assert _matches({"$nor": [a, b]}, doc) is not (hit_a or hit_b)
    assert _matches({"$not": {"$and": [a, b]}}, doc) is not (hit_a and hit_b)


@settings(database=None, max_examples=300)
@given(left=JSON, right=JSON)
def test_collation_is_a_total_order(left: Any, right: Any) -> None:
    def holds(op: str) -> bool:
        return _matches({"v": {op: right}}, {"v": left})

    assert [holds("$lt"), holds("$eq"), holds("$gt")].count(True) == 1
    assert holds("$lte") is (holds("$lt") or holds("$eq"))
    assert holds("$gte") is (holds("$gt") or holds("$eq"))
    assert holds("$ne") is not holds("$eq")
    assert holds("$lt") is _matches({"v": {"$gt": left}}, {"v": right})


@settings(database=None, max_examples=200)
@given(value=SCALARS, args=st.lists(SCALARS, max_size=4))
def test_in_is_an_or_of_equalities_for_scalars(value: Any, args: list[Any]) -> None:
    doc = {"x": value}
    any_equal = any(_matches({"x": {"$eq": arg}}, doc) for arg in args)
    assert _matches({"x": {"$in": args}}, doc) is any_equal
    assert _matches({"x": {"$nin": args}}, doc) is not any_equal
