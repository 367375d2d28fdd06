"""A device's status and the transitions between statuses.

    in_stock ──assign──▶ assigned ──▶ lost ─────found──▶ in_stock
        ▲                 │   ▲  └──▶ stolen ───found──▶ in_stock
        │                 │   └── reassign (another worker)
        └───returned──────┤
                          └──▶ in_repair ──repaired──▶ in_stock, assigned
    any status but retired ──▶ retired (terminal)

Only an ``assigned`` device may sync, and only with a token issued for its
current worker: every transition out of ``assigned`` (and a reassignment)
revokes the device's credential at once.  A phone found again goes back to
stock and must be enrolled anew; the old token was out of the programme's hands.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from sync.errors import BadRequest, Conflict


class DeviceStatus(enum.Enum):
    IN_STOCK = "in_stock"
    ASSIGNED = "assigned"
    LOST = "lost"
    STOLEN = "stolen"
    IN_REPAIR = "in_repair"
    RETIRED = "retired"


S = DeviceStatus
TRANSITIONS: Mapping[DeviceStatus, frozenset[DeviceStatus]] = {
    S.IN_STOCK: frozenset({S.ASSIGNED, S.LOST, S.STOLEN, S.IN_REPAIR, S.RETIRED}),
    S.ASSIGNED: frozenset({S.ASSIGNED, S.IN_STOCK, S.LOST, S.STOLEN, S.IN_REPAIR, S.RETIRED}),
    S.LOST: frozenset({S.IN_STOCK, S.STOLEN, S.RETIRED}),
    S.STOLEN: frozenset({S.IN_STOCK, S.RETIRED}),
    S.IN_REPAIR: frozenset({S.IN_STOCK, S.ASSIGNED, S.LOST, S.STOLEN, S.RETIRED}),
    S.RETIRED: frozenset(),
}

# Statuses in which a device still counts as in use: its SIM number must be unique among them.
ACTIVE = frozenset({S.IN_STOCK, S.ASSIGNED, S.IN_REPAIR})
# Statuses after which the device no longer has a worker.
UNASSIGNING = frozenset({S.IN_STOCK, S.RETIRED})

# Words a supervisor uses, for the action that leads from one status to another.
_LABELS: Mapping[tuple[DeviceStatus | None, DeviceStatus], str] = {
    (S.LOST, S.IN_STOCK): "Found",
    (S.STOLEN, S.IN_STOCK): "Recovered",
    (S.IN_REPAIR, S.IN_STOCK): "Repaired",
    (S.ASSIGNED, S.IN_STOCK): "Returned to stock",
    (None, S.LOST): "Lost",
    (None, S.STOLEN): "Stolen",
    (None, S.IN_REPAIR): "In repair",
    (None, S.RETIRED): "Retired",
    (None, S.IN_STOCK): "In stock",
    (None, S.ASSIGNED): "Assign",
}


# Words for going back to stock, accepted wherever a status is (``mark SERIAL found``).
BACK_TO_STOCK = ("found", "recovered", "repaired", "returned")


def normalise(value: str) -> str:
    """A status name as typed (``In-Repair``), as it is spelt (``in_repair``)."""
    return value.strip().lower().replace("-", "_").replace(" ", "_")


def parse(value: str) -> DeviceStatus:
    """A status from its name; ``found`` (or another ``BACK_TO_STOCK`` word) is ``in_stock``."""
    normalised = normalise(value)
    if normalised in BACK_TO_STOCK:
        return S.IN_STOCK
    try:
        return DeviceStatus(normalised)
    except ValueError as exc:
        choices = ", ".join(s.value for s in DeviceStatus)
        raise BadRequest(
            f"unknown device status {value!r}: use one of {choices} (or found)"
        ) from exc


def check_transition(current: DeviceStatus, target: DeviceStatus) -> None:
    """Refuse a transition the table does not allow, saying which ones it does."""
    if target in TRANSITIONS[current]:
        return
    allowed = ", ".join(sorted(s.value for s in TRANSITIONS[current])) or "none: it is final"
    raise Conflict(
        f"a device cannot go from {current.value} to {target.value} (allowed: {allowed})",
        error="invalid_transition",
    )


def revocation(current: DeviceStatus, target: DeviceStatus, worker_changed: bool) -> str | None:
    """Why the device's credential is revoked by this change, or None when it is kept.

    The reason is a status value or ``reassigned`` (see ``verdict.REVOKED``).
    """
    if target is S.ASSIGNED:
        return "reassigned" if worker_changed or current is not S.ASSIGNED else None
    return str(target.value)


def path(current: DeviceStatus, target: DeviceStatus) -> tuple[DeviceStatus, ...] | None:
    """The fewest transitions from ``current`` to ``target`` (each status reached), or None.

    ``path(LOST, ASSIGNED)`` is ``(IN_STOCK, ASSIGNED)``: found, then assigned.
    """
    routes: dict[DeviceStatus, tuple[DeviceStatus, ...]] = {current: ()}
    frontier = [current]
    while frontier and target not in routes:
        step = frontier.pop(0)
        for following in sorted(TRANSITIONS[step] - routes.keys(), key=list(DeviceStatus).index):
            routes[following] = (*routes[step], following)
            frontier.append(following)
    return routes.get(target)


def label(current: DeviceStatus, target: DeviceStatus) -> str:
    """The button label for moving a ``current`` device to ``target``."""
    return _LABELS.get((current, target)) or _LABELS[(None, target)]


def actions(current: DeviceStatus) -> list[DeviceStatus]:
    """The status changes a supervisor can make (assignment is a separate form)."""
    order = list(DeviceStatus)
    return sorted(TRANSITIONS[current] - {S.ASSIGNED}, key=order.index)
