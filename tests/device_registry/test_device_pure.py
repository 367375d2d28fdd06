"""Enrolment codes, the verdict on a token, failure windows and device lists: plain tables."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from device_registry import codes, listing
from device_registry.model import Device
from device_registry.status import DeviceStatus
from device_registry.verdict import Kind, Refusal, TokenBinding, judge
from sync.errors import BadRequest
from sync.ratelimit import FailureWindow, Limit

S = DeviceStatus


# -- codes -------------------------------------------------------------------------
def test_codes_are_two_groups_of_five_unambiguous_characters() -> None:
    made = {codes.new_code() for _ in range(200)}
    assert len(made) == 200
    assert all(re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5}", c) for c in made)


@pytest.mark.parametrize(
    ("typed", "normalised"),
    [
        ("K7Q2M-9XW4C", "K7Q2M9XW4C"),
        ("k7q2m 9xw4c", "K7Q2M9XW4C"),
        (" k7q2m-9xw4c\n", "K7Q2M9XW4C"),
        ("O0IL1-ABCDE", "00111ABCDE"),  # Crockford's look-alikes
        ("K7Q2M-9XW4", None),  # too short
        ("K7Q2M-9XW4CC", None),  # too long
        ("K7Q2M-9XW4U", None),  # U is not in the alphabet
        ("", None),
    ],
)
def test_typed_codes_are_forgiven_their_case_spaces_and_look_alikes(
    typed: str, normalised: str | None
) -> None:
    assert codes.normalise_code(typed) == normalised


def test_hashes_are_stable_and_separate_codes_from_tokens() -> None:
    assert codes.code_hash("K7Q2M9XW4C") == codes.code_hash("K7Q2M9XW4C")
    assert codes.code_hash("K7Q2M9XW4C") != codes.token_hash("K7Q2M9XW4C")
    token = codes.new_token()
    assert len(token) >= 43 and token != codes.new_token()
    assert token not in codes.token_hash(token)


def test_the_qr_payload_tells_the_app_its_serial_and_server() -> None:
    payload = json.loads(codes.qr_payload("K7Q2M-9XW4C", "SN1", "https://sync.example.org"))
    assert payload == {
        "fieldsync": "enrol",
        "code": "K7Q2M-9XW4C",
        "serial": "SN1",
        "server": "https://sync.example.org",
    }


# -- verdict -------------------------------------------------------------------------
def bound(
    token_worker: str = "alice",
    revoked: str | None = None,
    status: S = S.ASSIGNED,
    device_worker: str | None = "alice",
) -> TokenBinding:
    return TokenBinding("SN1", token_worker, revoked, status, device_worker)


@pytest.mark.parametrize(
    ("binding", "kind", "reason"),
    [
        (None, Kind.UNKNOWN_TOKEN, "not enrolled on this server"),
        (bound(token_worker="bob"), Kind.OTHER_WORKER, "issued to another worker"),
        (
            bound(revoked="lost", status=S.LOST),
            Kind.REVOKED,
            "SN1 is revoked: it was reported lost",
        ),
        (bound(revoked="stolen", status=S.STOLEN), Kind.REVOKED, "reported stolen"),
        (bound(revoked="retired", status=S.RETIRED), Kind.REVOKED, "it was retired"),
        (bound(revoked="reassigned", device_worker="bob"), Kind.REVOKED, "to another worker"),
        (bound(revoked="re_enrolled"), Kind.REVOKED, "a newer token replaced this one"),
        (bound(revoked="in_stock", status=S.IN_STOCK), Kind.REVOKED, "returned to stock"),
        # a live token the status no longer backs is refused all the same
        (bound(status=S.STOLEN), Kind.REVOKED, "reported stolen"),
        (bound(device_worker="bob"), Kind.REVOKED, "reassigned"),
    ],
)
def test_refusals_say_precisely_why(binding: TokenBinding | None, kind: Kind, reason: str) -> None:
    verdict = judge(binding, "alice")
    assert isinstance(verdict, Refusal)
    assert verdict.kind is kind
    assert reason in verdict.reason


def test_a_live_token_of_the_workers_assigned_device_passes() -> None:
    assert judge(bound(), "alice") == "SN1"


# -- failure windows -------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_is_limited_after_its_failures_and_freed_as_they_slide_out() -> None:
    clock = Clock()
    window = FailureWindow({"ip": Limit(3, 60.0), "device": Limit(2, 60.0)}, clock)
    for _ in range(3):
        assert window.retry_after("ip:1") is None
        window.fail("ip:1")
        clock.now += 10
    assert window.retry_after("ip:1") == 30  # the first failure leaves the window at +60
    assert window.retry_after("ip:2") is None  # other addresses are not touched
    clock.now += 30
    assert window.retry_after("ip:1") is None


def test_failing_while_limited_keeps_the_key_limited() -> None:
    clock = Clock()
    window = FailureWindow({"device": Limit(2, 60.0)}, clock)
    for _ in range(10):
        window.fail("device:x")
        clock.now += 20
    assert window.retry_after("device:x") is not None


def test_the_longest_wait_of_several_keys_counts() -> None:
    clock = Clock()
    window = FailureWindow({"ip": Limit(1, 60.0), "device": Limit(1, 600.0)}, clock)
    window.fail("ip:1", "device:x")
    assert window.retry_after("ip:1", "device:x") == 600


def test_memory_is_bounded() -> None:
    window = FailureWindow({"ip": Limit(1, 60.0)}, Clock(), max_keys=3)
    for n in range(10):
        window.fail(f"ip:{n}")
    assert [window.retry_after(f"ip:{n}") is not None for n in (0, 9)] == [False, True]


# -- lists ---------------------------------------------------------------------------------
NOW = dt.datetime(2024, 6, 10, 12, 0, tzinfo=dt.UTC)
FLEET = [
    Device(
        "A1",
        "1",
        S.ASSIGNED,
        worker="alice",
        worker_places=("area-a1",),
        last_sync="2024-06-10T08:00:00+00:00",
        model="Tecno",
    ),
    Device(
        "A2",
        "2",
        S.ASSIGNED,
        worker="alice",
        worker_places=("area-a1",),
        last_sync="2024-05-01T08:00:00+00:00",
        model="itel",
    ),
    Device("B1", "3", S.LOST, worker="bob", worker_places=("area-b1",), model="Samsung"),
    Device("S1", "4", S.IN_STOCK, place="district-a", model="Nokia"),
    Device("S2", "5", S.RETIRED, place="district-b"),
]


@pytest.mark.parametrize(
    ("params", "statuses", "subtree", "serials"),
    [
        ({}, [], None, ["A1", "A2", "B1", "S1", "S2"]),
        ({}, ["assigned"], None, ["A1", "A2"]),
        ({}, ["lost", "stolen"], None, ["B1"]),
        ({"worker": "alice"}, [], None, ["A1", "A2"]),
        ({"place": "district-a"}, [], {"district-a", "area-a1"}, ["A1", "A2", "S1"]),
        ({"quiet_days": "7"}, ["assigned"], None, ["A2"]),
        ({"quiet_days": "7"}, [], None, ["A2", "B1", "S1", "S2"]),  # never synced is quiet
        ({"sort": "last_sync"}, ["assigned"], None, ["A2", "A1"]),
        ({"sort": "model", "order": "desc"}, [], None, ["A1", "B1", "S1", "A2", "S2"]),
    ],
)
def test_filters_and_sorting(
    params: dict[str, str], statuses: list[str], subtree: set[str] | None, serials: list[str]
) -> None:
    query = listing.parse_query(params, statuses)
    places = None if subtree is None else frozenset(subtree)
    chosen, _ = listing.select(FLEET, query, places, NOW)
    assert [d.serial for d in chosen] == serials


def test_counts_per_status_ignore_the_status_filter_only() -> None:
    query = listing.parse_query({"worker": "alice"}, ["lost"])
    chosen, counts = listing.select(FLEET, query, None, NOW)
    assert chosen == []
    assert counts == {
        "in_stock": 0,
        "assigned": 2,
        "lost": 0,
        "stolen": 0,
        "in_repair": 0,
        "retired": 0,
    }


@pytest.mark.parametrize(
    ("params", "complaint"),
    [
        ({"sort": "imei"}, "sort must be one of"),
        ({"order": "up"}, "order must be asc or desc"),
        ({"quiet_days": "-1"}, "quiet_days"),
        ({"quiet_days": "seven"}, "quiet_days"),
    ],
)
def test_bad_queries_are_refused(params: dict[str, str], complaint: str) -> None:
    with pytest.raises(BadRequest, match=complaint):
        listing.parse_query(params)


def test_sorting_by_the_same_column_again_flips_the_order() -> None:
    query = listing.parse_query({"sort": "worker"})
    assert listing.with_sort(query, "worker").descending is True
    assert listing.with_sort(query, "model").descending is False
    flipped = listing.with_sort(query, "worker")
    assert listing.to_params(flipped) == [("sort", "worker"), ("order", "desc")]


def test_csv_cells_cannot_smuggle_formulas() -> None:
    device = Device(
        "X1", "1", S.IN_STOCK, model='=HYPERLINK("http://x")', phone="+254712345678", notes="-2+3"
    )
    row = dict(
        zip(("serial", "status", "worker", "places", "model"), device.csv_row(), strict=False)
    )
    assert row["model"].startswith("'=")
    assert device.csv_row()[7] == "+254712345678"  # a phone number stays as it is
    assert device.csv_row()[-1] == "'-2+3"
