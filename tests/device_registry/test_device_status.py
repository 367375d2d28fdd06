"""The device status machine, checked pair by pair against a table written out in full."""

from __future__ import annotations

import itertools

import pytest

from device_registry.status import (
    TRANSITIONS,
    DeviceStatus,
    actions,
    check_transition,
    label,
    parse,
    path,
    revocation,
)
from sync.errors import BadRequest, Conflict

S = DeviceStatus
IN_STOCK, ASSIGNED, LOST, STOLEN, IN_REPAIR, RETIRED = list(DeviceStatus)
# Rows: from; columns: to.  "y" allowed, "." refused.
TABLE = """
              in_stock  assigned  lost  stolen  in_repair  retired
    in_stock      .         y       y      y        y         y
    assigned      y         y       y      y        y         y
    lost          y         .       .      y        .         y
    stolen        y         .       .      .        .         y
    in_repair     y         y       y      y        .         y
    retired       .         .       .      .        .         .
"""
HEADER, *ROWS = (line.split() for line in TABLE.strip().splitlines())
ORDER = [DeviceStatus(name) for name in HEADER]
EXPECTED = {
    (DeviceStatus(start), end): mark == "y"
    for start, *marks in ROWS
    for end, mark in zip(ORDER, marks, strict=True)
}


@pytest.mark.parametrize(
    ("start", "end"), list(itertools.product(ORDER, ORDER)), ids=lambda s: s.value
)
def test_every_transition_is_as_the_table_says(start: S, end: S) -> None:
    assert (end in TRANSITIONS[start]) is EXPECTED[(start, end)]
    if EXPECTED[(start, end)]:
        check_transition(start, end)
    else:
        with pytest.raises(Conflict, match=f"from {start.value} to {end.value}") as refused:
            check_transition(start, end)
        assert refused.value.error_token == "invalid_transition"


def test_a_refusal_lists_what_is_allowed() -> None:
    with pytest.raises(Conflict, match=r"allowed: in_stock, retired, stolen"):
        check_transition(LOST, ASSIGNED)
    with pytest.raises(Conflict, match="none: it is final"):
        check_transition(RETIRED, ASSIGNED)


@pytest.mark.parametrize(
    ("start", "end", "worker_changed", "revoked"),
    [
        (ASSIGNED, LOST, False, "lost"),
        (ASSIGNED, STOLEN, False, "stolen"),
        (ASSIGNED, RETIRED, False, "retired"),
        (ASSIGNED, IN_REPAIR, False, "in_repair"),
        (ASSIGNED, IN_STOCK, False, "in_stock"),
        (ASSIGNED, ASSIGNED, True, "reassigned"),
        (ASSIGNED, ASSIGNED, False, None),
        (IN_STOCK, ASSIGNED, True, "reassigned"),  # nothing live to revoke; harmless
        (IN_REPAIR, ASSIGNED, False, "reassigned"),
    ],
)
def test_what_revokes_a_device(start: S, end: S, worker_changed: bool, revoked: str | None) -> None:
    assert revocation(start, end, worker_changed) == revoked


@pytest.mark.parametrize(
    ("typed", "status"),
    [
        ("lost", LOST),
        ("LOST", LOST),
        ("in-repair", IN_REPAIR),
        ("in repair", IN_REPAIR),
        ("found", IN_STOCK),
        ("recovered", IN_STOCK),
        ("retired", RETIRED),
    ],
)
def test_parse(typed: str, status: S) -> None:
    assert parse(typed) is status


def test_parse_refuses_unknown_statuses() -> None:
    with pytest.raises(BadRequest, match="unknown device status 'misplaced'"):
        parse("misplaced")


@pytest.mark.parametrize(
    ("start", "end", "text"),
    [
        (LOST, IN_STOCK, "Found"),
        (STOLEN, IN_STOCK, "Recovered"),
        (IN_REPAIR, IN_STOCK, "Repaired"),
        (ASSIGNED, IN_STOCK, "Returned to stock"),
        (ASSIGNED, LOST, "Lost"),
        (IN_STOCK, RETIRED, "Retired"),
    ],
)
def test_button_labels(start: S, end: S, text: str) -> None:
    assert label(start, end) == text


def test_actions_offer_every_allowed_change_but_assignment() -> None:
    assert actions(ASSIGNED) == [IN_STOCK, LOST, STOLEN, IN_REPAIR, RETIRED]
    assert actions(LOST) == [IN_STOCK, STOLEN, RETIRED]
    assert actions(RETIRED) == []


@pytest.mark.parametrize(
    ("start", "end", "steps"),
    [
        (LOST, ASSIGNED, (IN_STOCK, ASSIGNED)),
        (STOLEN, ASSIGNED, (IN_STOCK, ASSIGNED)),
        (IN_STOCK, ASSIGNED, (ASSIGNED,)),
        (IN_REPAIR, ASSIGNED, (ASSIGNED,)),
        (ASSIGNED, ASSIGNED, ()),
        (RETIRED, ASSIGNED, None),
        (LOST, IN_REPAIR, (IN_STOCK, IN_REPAIR)),
    ],
)
def test_the_fewest_steps_between_statuses(start: S, end: S, steps: tuple[S, ...] | None) -> None:
    assert path(start, end) == steps
