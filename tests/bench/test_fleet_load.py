"""The fleet bench's pure pieces: percentiles, the schedule, the requests of a no-op sync.

Dry: no server, no timing. The load generator's figures are only as good as these.
"""

from __future__ import annotations

from collections import Counter
from urllib.parse import unquote

import pytest

from bench.fleet import place_tree
from bench.fleet_load import Tally, checkpoint_id, noop_plan, percentile, schedule, summary


@pytest.mark.parametrize(
    ("p", "expected"),
    [(1, 1.0), (50, 50.0), (95, 95.0), (99, 99.0), (99.5, 100.0), (100, 100.0)],
)
def test_nearest_rank_percentiles_of_one_to_a_hundred(p: float, expected: float) -> None:
    values = [float(n) for n in range(100, 0, -1)]  # unsorted on purpose
    assert percentile(values, p) == expected


def test_a_few_values_round_the_rank_up() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([3.0, 1.0, 2.0], 99) == 3.0  # the slowest of three is the p99
    assert percentile([7.0], 1) == 7.0


@pytest.mark.parametrize(("values", "p"), [([], 50), ([1.0], 0), ([1.0], 101), ([1.0], -5)])
def test_percentile_refuses_what_has_no_answer(values: list[float], p: float) -> None:
    with pytest.raises(ValueError):
        percentile(values, p)


def test_summary_is_in_milliseconds() -> None:
    seconds = [0.001 * n for n in range(1, 201)]  # 1 ms .. 200 ms
    assert summary(seconds) == {
        "count": 200,
        "p50_ms": 100.0,
        "p95_ms": 190.0,
        "p99_ms": 198.0,
        "max_ms": 200.0,
    }
    assert summary([]) == {"count": 0}


def test_each_phone_syncs_once_a_period_at_its_own_phase() -> None:
    plan = schedule(devices=50, period=60.0, rounds=3, seed=4)
    assert len(plan) == 150
    assert plan == sorted(plan)
    assert Counter(device for _, device in plan) == {d: 3 for d in range(50)}
    for device in range(50):
        starts = [at for at, d in plan if d == device]
        assert 0.0 <= starts[0] < 60.0
        assert starts[1] - starts[0] == pytest.approx(60.0)
        assert starts[2] - starts[1] == pytest.approx(60.0)


def test_start_times_are_spread_over_the_period() -> None:
    first = [at for at, _ in schedule(devices=1000, period=60.0, rounds=1)]
    per_ten_seconds = Counter(int(at // 10) for at in first)
    assert sorted(per_ten_seconds) == [0, 1, 2, 3, 4, 5]
    assert all(100 < n < 240 for n in per_ten_seconds.values())  # about 167 each


def test_the_schedule_is_repeatable_by_seed() -> None:
    assert schedule(20, 10.0, 2, seed=1) == schedule(20, 10.0, 2, seed=1)
    assert schedule(20, 10.0, 2, seed=1) != schedule(20, 10.0, 2, seed=2)


@pytest.mark.parametrize(("devices", "period", "rounds"), [(0, 60, 3), (5, 0, 3), (5, 60, 0)])
def test_an_empty_schedule_is_refused(devices: int, period: float, rounds: int) -> None:
    with pytest.raises(ValueError):
        schedule(devices, period, rounds)


def test_a_noop_sync_sends_what_pouchdb_sends() -> None:
    opening, pull, push = noop_plan("health", "FLEET-00001")
    pull_id = checkpoint_id("FLEET-00001", "pull")
    push_id = checkpoint_id("FLEET-00001", "push")
    assert opening.path == "/health/"
    assert [s.path for s in pull] == [
        "/",
        f"/health/_local/{pull_id}",
        "/health/",
        "/health/_changes?style=all_docs&since={since}&limit=100",
        f"/health/_local/{pull_id}",
    ]
    assert [s.path for s in push] == ["/", f"/health/_local/{push_id}", f"/health/_local/{push_id}"]
    every = [opening, *pull, *push]
    assert not any(w in s.path for s in every for w in ("_revs_diff", "_bulk_docs", "_bulk_get"))


def test_checkpoint_ids_look_like_pouchdbs_and_differ_by_phone_and_direction() -> None:
    ids = {checkpoint_id(f"P{n}", d) for n in range(100) for d in ("pull", "push")}
    assert len(ids) == 200
    one = checkpoint_id("FLEET-00001", "pull")
    assert one.endswith("%3D%3D") and "/" not in unquote(one)  # base64 of an MD5, / made .
    assert len(unquote(one)) == 24


def test_the_tally_counts_errors_and_every_request() -> None:
    tally = Tally()
    tally.syncs += [0.010, 0.020]
    tally.requests["GET /"] += [0.001, 0.002]
    tally.requests["GET _changes"] += [0.004]
    tally.errors.append("SyncFailed: GET _changes as chw0001: 503")
    report = tally.report()
    assert report["errors"] == 1
    assert report["requests"]["count"] == 3
    assert report["by_request"]["GET _changes"]["p99_ms"] == 4.0
    assert report["syncs"]["max_ms"] == 20.0


def test_places_form_a_tree_with_an_area_per_phone() -> None:
    tree, areas = place_tree(1000)
    assert len(areas) == 1000 and len(set(areas)) == 1000
    seen: set[str] = set()
    for place, parent in tree:
        assert parent is None or parent in seen  # parents first
        seen.add(place)
    assert [place for place, parent in tree if parent is None] == ["country"]
    parents = {place: parent for place, parent in tree if parent is not None}
    assert all(parents[a].startswith("facility-") for a in areas)
    assert max(Counter(parents[a] for a in areas).values()) == 10
    facilities = {parents[a] for a in areas}
    assert all(parents[f].startswith("district-") for f in facilities)
    assert len({parents[f] for f in facilities}) == 10
