"""Audit entries stored in CouchDB (a remote): sent early, and each answer waits for its own.

A ``_bulk_get`` records its read before it opens the bodies; the append starts then, so
CouchDB's round trip runs while the answer is made, and the answer still waits for it.
Each request waits for the entries it recorded, wherever they went (another request's
append may have taken them), and a request that recorded nothing waits for nobody.
"""

from __future__ import annotations

import asyncio

import pytest
from gated_audit import flush as _flush
from gated_audit import gated_audit as _audit
from gated_audit import request_context as _request
from gated_audit import run_in as _run
from gated_audit import settle as _settle

from sync.errors import StoreUnavailable


async def test_a_read_is_sent_before_the_answer_is_made_and_the_answer_waits_for_it() -> None:
    audit, remote = _audit()
    a = _request()
    a.run(audit.record, "alice", "read", "health", ["d1"])
    a.run(audit.send_early)
    await _settle()
    assert remote.batches == [["read"]]  # under way before the middleware's flush
    answer = _run(a, lambda: _flush(audit))
    await _settle()
    assert not answer.done()  # not stored yet: the answer waits
    remote.gate.set()
    await answer
    assert remote.stored == ["read"]


async def test_entries_taken_into_another_requests_append_are_waited_for() -> None:
    """B's entry went with A's append: B's answer waits for that append, not for nothing."""
    audit, remote = _audit()
    a, b = _request(), _request()
    a.run(audit.record, "alice", "read", "health", ["d1"])
    b.run(audit.record, "bob", "read_refused", "health", ["d2"])
    a.run(audit.send_early)  # takes both
    answer_b = _run(b, lambda: _flush(audit))
    await _settle()
    assert remote.batches == [["read", "read_refused"]]
    assert not answer_b.done()
    remote.gate.set()
    await answer_b
    assert remote.stored == ["read", "read_refused"]


async def test_a_request_that_recorded_nothing_waits_for_nobody() -> None:
    audit, remote = _audit()
    a, c = _request(), _request()
    a.run(audit.record, "alice", "read", "health", ["d1"])
    a.run(audit.send_early)
    await asyncio.wait_for(_run(c, lambda: _flush(audit)), 1.0)  # the gate is still shut
    assert remote.stored == []
    remote.gate.set()
    await _run(a, lambda: _flush(audit))


async def test_a_failed_append_fails_its_answers_and_the_next_flush_sends_again() -> None:
    audit, remote = _audit()
    remote.fail = 1
    remote.gate.set()
    a = _request()
    a.run(audit.record, "alice", "read", "health", ["d1"])
    with pytest.raises(StoreUnavailable):
        await _run(a, lambda: _flush(audit))
    assert remote.stored == []
    await _run(a, lambda: _flush(audit))  # nothing new: an empty append sends what was kept
    assert remote.batches == [["read"], []]
    assert remote.stored == ["read"]


async def test_outside_a_request_a_flush_stores_everything_recorded() -> None:
    audit, remote = _audit()
    audit.record("sms", "sms_received", None, [])
    flushed = asyncio.ensure_future(audit.flush())
    await _settle()
    assert not flushed.done()
    remote.gate.set()
    await flushed
    assert remote.stored == ["sms_received"]
