"""The outgoing-message state machine, as a table."""

from __future__ import annotations

import pytest

from sms_gateway.outgoing import (
    GATEWAY_STATUS,
    TRANSITIONS,
    OutEvent,
    OutState,
    RetryPolicy,
    Step,
    gateway_id,
    split_gateway_id,
    step,
)

S, E = OutState, OutEvent
POLICY = RetryPolicy(max_attempts=3, max_offers=2)

CASES = [
    # state, event, attempt, offers, expected step (None: nothing changes)
    (S.PENDING, E.FORWARD, 1, 0, Step(S.FORWARDED)),
    (S.FORWARDED, E.ACCEPTED, 1, 1, Step(S.FORWARDED)),
    (S.FORWARDED, E.SENT, 1, 1, Step(S.SENT)),
    (S.SENT, E.DELIVERED, 1, 1, Step(S.DELIVERED)),
    (S.FORWARDED, E.DELIVERED, 1, 1, Step(S.DELIVERED)),  # SENT skipped
    # failures: retried with a new attempt until the cap
    (S.FORWARDED, E.FAILED, 1, 1, Step(S.PENDING, new_attempt=True)),
    (S.SENT, E.FAILED, 2, 1, Step(S.PENDING, new_attempt=True)),
    (S.SENT, E.FAILED, 3, 1, Step(S.FAILED, reason="failed after 3 attempts")),
    # silence: offered again, same id, until the cap
    (S.FORWARDED, E.TIMEOUT, 1, 1, Step(S.PENDING)),
    (
        S.FORWARDED,
        E.TIMEOUT,
        1,
        2,
        Step(S.FAILED, reason="no status from the gateway after 2 offers"),
    ),
    # a status that overtakes its own timeout still counts
    (S.PENDING, E.SENT, 1, 1, Step(S.SENT)),
    (S.PENDING, E.DELIVERED, 1, 1, Step(S.DELIVERED)),
    # the network outranks our giving up
    (S.FAILED, E.DELIVERED, 3, 1, Step(S.DELIVERED)),
    # repeats and out-of-order updates change nothing
    (S.SENT, E.SENT, 1, 1, None),
    (S.DELIVERED, E.DELIVERED, 1, 1, None),
    (S.DELIVERED, E.SENT, 1, 1, None),
    (S.DELIVERED, E.FAILED, 1, 1, None),
    (S.SENT, E.ACCEPTED, 1, 1, None),
    (S.FAILED, E.FAILED, 3, 1, None),
    (S.CLEARED, E.FORWARD, 1, 0, None),
    # clearing: only what has not gone out
    (S.PENDING, E.CLEAR, 1, 0, Step(S.CLEARED)),
    (S.FORWARDED, E.CLEAR, 1, 1, None),
    (S.DELIVERED, E.CLEAR, 1, 1, None),
]


@pytest.mark.parametrize(("state", "event", "attempt", "offers", "expected"), CASES)
def test_steps(
    state: OutState, event: OutEvent, attempt: int, offers: int, expected: Step | None
) -> None:
    assert step(state, event, attempt, offers, POLICY) == expected


def test_terminal_states_leave_only_for_the_network() -> None:
    for (state, event), _ in TRANSITIONS.items():
        assert state not in (S.DELIVERED, S.CLEARED)
        if state is S.FAILED:
            assert event in (E.SENT, E.DELIVERED)


def test_gateway_statuses() -> None:
    assert GATEWAY_STATUS["PENDING"] is E.ACCEPTED
    assert set(GATEWAY_STATUS) == {"UNSENT", "PENDING", "SENT", "DELIVERED", "FAILED"}


def test_gateway_ids() -> None:
    assert gateway_id("abc123", 2) == "abc123-2"
    assert split_gateway_id("abc123-2") == ("abc123", 2)
    assert split_gateway_id("a-b-c-10") == ("a-b-c", 10)
    for bad in ("abc", "-2", "abc-", "abc-x", "abc-٣"):
        assert split_gateway_id(bad) is None
