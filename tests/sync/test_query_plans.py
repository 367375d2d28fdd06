"""A worker's requests never scan the whole document table (issue 2, point 3).

Every SQL statement the store runs while a CHW syncs is captured and checked
with ``EXPLAIN QUERY PLAN``: reads of ``docs`` must go through an index
(by place and sequence, place and id, or the primary key), never a full scan.
"""

from __future__ import annotations

import sqlite3

from sync_fixtures import Api, Client

from sync.appkeys import STORE


def _full_scans(path: str, statements: list[str]) -> list[tuple[str, str]]:
    found = []
    with sqlite3.connect(path) as conn:
        for sql in statements:
            if not sql.lstrip().upper().startswith("SELECT") or " docs" not in sql:
                continue
            for row in conn.execute("EXPLAIN QUERY PLAN " + sql):
                detail = str(row[3])
                if detail.startswith("SCAN docs") or detail == "SCAN d":
                    found.append((sql, detail))
    return found


async def test_worker_sync_uses_indexes_only(client: Client, api: Api) -> None:
    docs = [{"_id": f"b{i}", "place": "area-b1"} for i in range(50)]
    docs += [{"_id": f"a{i}", "place": "area-a1"} for i in range(5)]
    await api.bulk(docs)
    store = client.app[STORE]
    statements: list[str] = []
    store.set_trace(statements.append)
    status, changes = await api.call("GET", "/health/_changes", "alice", style="all_docs")
    assert status == 200 and len(changes["results"]) == 5
    since = changes["last_seq"]
    await api.call("GET", "/health/_changes", "alice", since=since, limit=2)
    await api.call("GET", "/health/", "alice")
    await api.call("GET", "/health/_all_docs", "alice", include_docs="true")
    await api.call("POST", "/health/_revs_diff", "alice", {"a1": ["1-x"], "b1": ["1-y"]})
    await api.call("POST", "/health/_bulk_get", "alice", {"docs": [{"id": "a1"}, {"id": "b2"}]})
    await api.call("GET", "/health/a1", "alice")
    await api.bulk([{"_id": "a-new", "place": "area-a1"}], user="alice")
    store.set_trace(None)
    assert any("FROM docs" in s for s in statements), "the trace saw no document reads"
    assert _full_scans(str(store.path), statements) == []


async def test_the_check_catches_a_full_scan(client: Client) -> None:
    """The detector itself: an unindexed query over docs is reported."""
    store = client.app[STORE]
    scans = _full_scans(str(store.path), ["SELECT id FROM docs WHERE winner LIKE '1-%'"])
    assert scans and scans[0][1].startswith("SCAN docs")


async def test_a_workers_changes_are_read_from_the_index_alone(client: Client, api: Api) -> None:
    """The (place, seq) index carries every column of a change: no lookup per row.

    With the document set spread over a large table, each row fetched from the
    table would be one more random page read; the feed reads index pages only.
    """
    await api.bulk([{"_id": f"c{i}", "place": "area-a1"} for i in range(3)])
    store = client.app[STORE]
    statements: list[str] = []
    store.set_trace(statements.append)
    status, changes = await api.call("GET", "/health/_changes", "alice", style="all_docs")
    store.set_trace(None)
    assert status == 200 and len(changes["results"]) == 3
    feed = [s for s in statements if "FROM docs" in s and "place=" in s and "seq>" in s]
    assert feed, "the trace saw no read of the changes index"
    with sqlite3.connect(str(store.path)) as conn:
        for sql in feed:
            plan = [str(row[3]) for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
            assert any("USING COVERING INDEX docs_changes_by_place" in p for p in plan), plan
