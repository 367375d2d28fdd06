"""Reads audited ahead (``sync.replication.ahead``): one entry for what a pull reads next.

With a remote audit trail (CouchDB), a read that records an entry also names, in a
``read_ahead`` entry, what the caller's changes pages announced and no entry names
yet; the caller's later reads of those record nothing, and their answers wait until
that entry is stored.  Another user, device or database, an id never announced, or
a read after the window, records its own entry.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from gated_audit import flush, gated_audit, request_context, run_in, settle
from kept_for_a_moment import Clock

from sync.audit import AuditLog
from sync.errors import StoreUnavailable
from sync.replication import ahead as ahead_module
from sync.replication.ahead import AHEAD_KEPT, WINDOW, Ahead, CallerKey
from sync.replication.context import Caller, Parts
from sync.scopes import PlaceTree, Role, Scope, User

DB = "health"
ALICE: CallerKey = ("alice", "PHONE-alice", DB)


def page(number: int, size: int = 100) -> list[str]:
    """The ids of the n-th changes page of a pull."""
    return [f"p{number}-{n:03d}" for n in range(size)]


def test_a_read_names_what_was_announced_and_later_reads_of_it_need_no_entry() -> None:
    ahead = Ahead()
    for number in (1, 2, 3):
        ahead.announce(ALICE, page(number))
    assert ahead.reading(ALICE, page(1)) == (page(1), 0)
    named_ahead = ahead.ahead_of(ALICE, page(1))
    assert named_ahead == page(2) + page(3)
    ahead.named(ALICE, page(1) + named_ahead, 7)
    assert ahead.reading(ALICE, page(2)) == ([], 7)
    assert ahead.reading(ALICE, page(3)[:10]) == ([], 7)
    assert ahead.ahead_of(ALICE, page(3)) == []  # taken: no later entry names them again


@pytest.mark.parametrize(
    "other",
    [
        ("alice", "PHONE-other", DB),  # another device of the same user
        ("alice", None, DB),  # the same user without a device
        ("bob", "PHONE-alice", DB),  # another user (the device id is no proof)
        ("alice", "PHONE-alice", "other-db"),
    ],
)
def test_an_entry_covers_only_the_caller_it_names(other: CallerKey) -> None:
    ahead = Ahead()
    ahead.announce(ALICE, page(1) + page(2))
    ahead.named(ALICE, page(1) + ahead.ahead_of(ALICE, page(1)), 3)
    assert ahead.reading(other, page(2)) == (page(2), 0)
    assert ahead.ahead_of(other, page(2)) == []  # nothing was announced to them


def test_an_entry_covers_reads_for_the_window_only() -> None:
    clock = Clock()
    ahead = Ahead(clock)
    ahead.announce(ALICE, page(1) + page(2))
    ahead.named(ALICE, page(1) + ahead.ahead_of(ALICE, page(1)), 3)
    clock.now += WINDOW
    assert ahead.reading(ALICE, page(2)) == ([], 3)
    clock.now += 1
    assert ahead.reading(ALICE, page(2)) == (page(2), 0)  # read later: an entry of its own


def test_ids_read_but_never_announced_are_named_by_the_read_alone() -> None:
    ahead = Ahead()
    ahead.announce(ALICE, page(2))
    unnamed, _ = ahead.reading(ALICE, ["stray-1", *page(2)[:5]])
    assert unnamed == ["stray-1", *page(2)[:5]]
    assert ahead.ahead_of(ALICE, unnamed) == page(2)[5:]


def test_what_is_announced_again_after_an_entry_named_it_is_not_named_twice() -> None:
    ahead = Ahead()
    ahead.announce(ALICE, page(1))
    ahead.named(ALICE, page(1), 4)
    ahead.announce(ALICE, page(1) + page(2))  # a pull started over, through the same pages
    assert ahead.ahead_of(ALICE, []) == page(2)


def test_a_caller_is_announced_at_most_ten_pages_ahead_the_newest_kept() -> None:
    ahead = Ahead()
    pages = [page(n) for n in range(12)]
    for ids in pages:
        ahead.announce(ALICE, ids)
    kept = ahead.ahead_of(ALICE, [])
    assert len(kept) == AHEAD_KEPT
    assert kept == [i for ids in pages[-10:] for i in ids]


def test_ids_pushed_out_of_memory_need_an_entry_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ahead_module, "NAMED_KEPT", 150)
    ahead = Ahead()
    ahead.named(ALICE, page(1), 1)
    ahead.named(ALICE, page(2), 2)
    assert ahead.reading(ALICE, page(1))[0] == page(1)[:50]  # the oldest fifty went
    assert ahead.reading(ALICE, page(2)) == ([], 2)


def test_announcements_past_the_bound_go_least_recent_caller_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ahead_module, "ANNOUNCED_KEPT", 250)
    ahead = Ahead()
    for user in ("u1", "u2", "u3"):
        ahead.announce((user, None, DB), page(1))
    assert ahead.ahead_of(("u1", None, DB), []) == []  # 300 ids: the least recent went
    ahead.announce(("u2", None, DB), page(2)[:10])  # u2 now more recent than u3
    ahead.announce(("u4", None, DB), page(1))
    assert ahead.ahead_of(("u3", None, DB), []) == []
    assert ahead.ahead_of(("u2", None, DB), []) == page(1) + page(2)[:10]
    assert ahead.ahead_of(("u4", None, DB), []) == page(1)


# -- through the replication parts, with an audit trail stored only when let -----------------
def _parts(audit: AuditLog) -> Parts:
    nothing = cast(Any, None)  # the store, vault and notifier are not used by the audit steps
    return Parts(nothing, nothing, nothing, audit=audit, ahead=Ahead())


def _caller(device: str | None = "PHONE-alice") -> Caller:
    user = User("alice", Role.CHW, ("area-a1",), (), "")
    scope = Scope(frozenset({"area-a1"}), frozenset({"area-a1"}))
    return Caller(user, scope, PlaceTree([]), device)


async def test_a_read_named_ahead_waits_until_the_entry_naming_it_is_stored() -> None:
    audit, remote = gated_audit()
    parts, alice = _parts(audit), _caller()
    parts.announced(DB, alice, page(1) + page(2))
    first, second = request_context(), request_context()
    first.run(parts.record_read, alice, DB, page(1))
    answer_1 = run_in(first, lambda: flush(audit))
    second.run(parts.record_read, alice, DB, page(2))  # recorded nothing: named already
    answer_2 = run_in(second, lambda: flush(audit))
    await settle()
    assert remote.batches == [["read", "read_ahead"]]
    assert not answer_1.done() and not answer_2.done()  # neither goes before the entry
    remote.gate.set()
    await asyncio.gather(answer_1, answer_2)
    read, read_ahead = remote.entries
    assert (read.actor, read.device, read.db, read.doc_ids) == (
        "alice",
        "PHONE-alice",
        DB,
        tuple(page(1)),
    )
    assert read_ahead.doc_ids == tuple(page(2))
    assert read_ahead.device == "PHONE-alice" and read_ahead.detail
    assert remote.batches == [["read", "read_ahead"]]  # the second read stored nothing more


async def test_when_the_entry_naming_a_read_fails_that_answer_fails_too() -> None:
    audit, remote = gated_audit()
    parts, alice = _parts(audit), _caller()
    parts.announced(DB, alice, page(1) + page(2))
    remote.fail = 1
    remote.gate.set()
    first, second = request_context(), request_context()
    first.run(parts.record_read, alice, DB, page(1))
    with pytest.raises(StoreUnavailable):
        await run_in(first, lambda: flush(audit))
    second.run(parts.record_read, alice, DB, page(2))
    await run_in(second, lambda: flush(audit))  # sends the kept entry first, then answers
    assert remote.stored == ["read", "read_ahead"]


async def test_another_device_reading_what_was_named_for_alices_phone_records_its_own() -> None:
    audit, remote = gated_audit()
    remote.gate.set()
    parts = _parts(audit)
    parts.announced(DB, _caller(), page(1) + page(2))
    for device in ("PHONE-alice", "PHONE-stolen"):
        request = request_context()
        request.run(parts.record_read, _caller(device), DB, page(2))
        await run_in(request, lambda: flush(audit))
    assert [(e.action, e.device, e.doc_ids) for e in remote.entries] == [
        ("read", "PHONE-alice", tuple(page(2))),
        ("read_ahead", "PHONE-alice", tuple(page(1))),
        ("read", "PHONE-stolen", tuple(page(2))),
    ]


async def test_without_ahead_every_read_records_its_own_entry() -> None:
    """The embedded store's way (its entries go to a local journal, at no cost)."""
    audit, remote = gated_audit()
    remote.gate.set()
    nothing = cast(Any, None)
    parts, alice = Parts(nothing, nothing, nothing, audit=audit), _caller()
    parts.announced(DB, alice, page(1) + page(2))
    for number in (1, 2):
        request = request_context()
        request.run(parts.record_read, alice, DB, page(number))
        await run_in(request, lambda: flush(audit))
    assert [(e.action, e.doc_ids) for e in remote.entries] == [
        ("read", tuple(page(1))),
        ("read", tuple(page(2))),
    ]
