"""The nesting-depth question answered two ways (orjson's limit, a walk) must agree exactly."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.replication import depth


def reference(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((reference(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((reference(v) for v in value), default=0)
    return 0


def chain(levels: int, leaf: Any = 1) -> Any:
    value = leaf
    for level in range(levels):
        value = {"k": value} if level % 2 else [value]
    return value


@pytest.mark.parametrize("levels", [0, 1, 2, 63, 64, 65, 200, 253, 254, 255, 256, 2000])
@pytest.mark.parametrize("limit", [1, 64, 253, 254, 255])
def test_chains_at_and_around_each_limit(levels: int, limit: int) -> None:
    value = {"wide": [1, 2, {"a": None}], "deep": chain(levels)}
    expected = reference(value) <= limit if levels < 900 else False
    assert depth.fits(value, limit) is expected
    assert depth.walk_fits(value, limit) is expected


def test_orjson_still_refuses_past_its_documented_limit() -> None:
    """The fast path is sound only while this holds; otherwise it is skipped."""
    assert depth._refuses(depth.ORJSON_LEVELS + 1)
    assert not depth._refuses(depth.ORJSON_LEVELS)


TREES = st.recursive(
    st.one_of(st.none(), st.integers(), st.text(max_size=3)),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=3), kids, max_size=3)
    ),
    max_leaves=20,
)


@settings(max_examples=200)
@given(TREES, st.integers(0, 70), st.integers(1, 80))
def test_random_trees_agree(tree: Any, wraps: int, limit: int) -> None:
    value = chain(wraps, tree)
    expected = reference(value) <= limit
    assert depth.fits(value, limit) is expected
    assert depth.walk_fits(value, limit) is expected
