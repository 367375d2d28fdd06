"""Admin changes (users, places), key operations and refusals are in the audit trail."""

from __future__ import annotations

import getpass
import hashlib
import re
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from audit_disk import on_disk
from sync_fixtures import Api, Client, running

from sync import cli
from sync.audit import AUDIT
from sync.config import Config
from sync.replication.context import Caller, Parts
from sync.replication.routes import REPLICATION
from sync.scopes import PlaceTree, Role, Scope, User
from sync.store.schema import db_path


def _entries(data_dir: Path, like: str) -> list[tuple[str, str, str]]:
    """On disk, as another process sees it the moment the answer is in."""
    pattern = re.compile(re.escape(like).replace("%", ".*"))
    return [(r[0], r[2], r[5]) for r in on_disk(data_dir) if pattern.fullmatch(r[2])]


def _verify(config: Config) -> int:
    return cli.main(["audit", "verify", "--data-dir", str(config.data_dir)])


async def test_admin_changes_through_the_api_are_audited(api: Api, config: Config) -> None:
    assert (await api.call("POST", "/api/v1/places", "admin", {"id": "area-c1"}))[0] == 201
    user = {"name": "carol", "role": "chw", "password": "s3cret-pass", "places": ["area-c1"]}
    assert (await api.call("POST", "/api/v1/users", "admin", user))[0] == 201
    scope = {"places": ["area-a1"], "read_places": ["area-b1"]}
    assert (await api.call("PUT", "/api/v1/users/carol/places", "admin", scope))[0] == 200
    assert (await api.call("POST", "/api/v1/places", "sam", {"id": "x"}))[0] == 403
    assert _entries(config.data_dir, "place%") + _entries(config.data_dir, "user%") == [
        ("admin", "place_add", "place area-c1, parent -"),
        ("admin", "user_add", "user carol: role chw, places area-c1, read -"),
        ("admin", "user_places", "user carol: places area-a1, read area-b1"),
    ]
    with closing(sqlite3.connect(db_path(config.data_dir))) as conn:
        assert not conn.execute("SELECT 1 FROM audit WHERE detail LIKE '%s3cret%'").fetchall()


async def test_admin_changes_through_the_cli_are_audited(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(config):
        pass  # the server made the chain key; the CLI appends while one may run
    monkeypatch.setenv("FIELDSYNC_PASSWORD", "s3cret-pass")
    base = ["--data-dir", str(config.data_dir)]
    assert cli.main(["place", "add", "area-c1", "--parent", "country", *base]) == 0
    assert cli.main(["user", "add", "carol", "--role", "chw", "--place", "area-c1", *base]) == 0
    assert cli.main(["user", "set-places", "carol", "--read-place", "area-a1", *base]) == 0
    assert cli.main(["user", "passwd", "carol", *base]) == 0
    who = f"cli:{getpass.getuser()}"
    assert _entries(config.data_dir, "place%") + _entries(config.data_dir, "user%") == [
        (who, "place_add", "place area-c1, parent country"),
        (who, "user_add", "user carol: role chw, places area-c1, read -"),
        (who, "user_places", "user carol: places -, read area-a1"),
        (who, "user_password", "user carol: password set"),
    ]
    assert _verify(config) == 0


async def test_a_cli_change_on_a_new_data_dir_starts_the_chain(tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    assert cli.main(["init", "--data-dir", str(data)]) == 0
    assert cli.main(["place", "add", "area", "--data-dir", str(data)]) == 0
    assert _verify(Config(data_dir=data)) == 0
    async with running(Config(data_dir=data, require_enrolment=False)):
        pass  # the start-up check accepts what the CLI wrote (triggers included)


async def test_key_operations_are_audited(
    config: Config,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running(config) as client:
        await Api(client).bulk([{"_id": "v1", "place": "area-a1"}])
    base = ["--data-dir", str(config.data_dir)]
    assert cli.main(["keys", "rotate", "--place", "area-a1", *base]) == 0
    new_file = tmp_path / "new.key"
    assert cli.main(["keys", "rewrap", "--new-key-file", str(new_file), *base]) == 0
    actions = [(a, b) for a, b, _ in _entries(config.data_dir, "key%")]
    who = f"cli:{getpass.getuser()}"
    assert actions == [(who, "key_rotate"), (who, "key_retire"), (who, "key_rewrap")]
    [(_, _, detail)] = _entries(config.data_dir, "key_rewrap")
    assert detail == "master key rotated: 2 data keys re-wrapped, 0 already under it"
    monkeypatch.setenv("FIELDSYNC_MASTER_KEY_FILE", str(new_file))
    capsys.readouterr()
    assert _verify(config) == 0  # the chain key moved with the data keys: the chain holds
    assert capsys.readouterr().out.startswith("audit chain ok: ")
    async with running(Config(**{**config.__dict__, "master_key_file": new_file})):
        pass


async def test_a_refusal_without_documents_is_recorded_before_the_answer(
    client: Client, config: Config
) -> None:
    parts: Parts = client.app[REPLICATION].parts
    user = User("mallory", Role.CHW, ("area-a1",), (), "")
    caller = Caller(user, Scope(frozenset({"area-a1"}), frozenset({"area-a1"})), PlaceTree([]))
    parts.record(caller, "write_refused", "health", [], detail="place area-b1")
    client.app[AUDIT].record("nobody", "login_failed", None, ())
    assert client.app[AUDIT].pending == 2
    await client.get("/")  # any answer: what was recorded is written before it goes out
    assert _entries(config.data_dir, "%_refused") == [("mallory", "write_refused", "place area-b1")]
    assert _entries(config.data_dir, "login_failed") == [("nobody", "login_failed", None)]


async def test_reading_another_areas_document_is_recorded_as_refused(
    client: Client, api: Api, config: Config
) -> None:
    """The answer is a plain 404 (the document does not exist for alice), but the trail
    shows someone probing another area's ids."""
    await api.bulk([{"_id": "bobs-visit", "place": "area-b1"}])
    probes = [
        ("GET", "/health/bobs-visit", None),
        ("GET", '/health/bobs-visit?open_revs=["1-x"]', None),
        ("POST", "/health/_bulk_get", {"docs": [{"id": "bobs-visit"}]}),
        ("POST", "/health/_all_docs", {"keys": ["bobs-visit"]}),
    ]
    for method, path, body in probes:
        status, _ = await api.call(method, path, "alice", body)
        assert status in (200, 404), path
    rows = [(r[0], r[4]) for r in on_disk(config.data_dir, "read_refused")]
    assert rows == [("alice", '["bobs-visit"]')] * len(probes)
    status, _ = await api.call("GET", "/health/no-such-doc", "alice")
    assert status == 404  # a missing id is no refusal
    assert _entries(config.data_dir, "read_refused")[len(probes) :] == []


async def test_huge_document_ids_cost_the_trail_a_hash_each(api: Api, config: Config) -> None:
    """Reading documents with 10,000-character ids must not write 10,000 characters per
    id per read: the trail names a long id by its SHA-256."""
    long_id = "\U0001f600" * 10_000
    await api.bulk([{"_id": long_id, "place": "area-a1"}], user="alice")
    status, _ = await api.call("POST", "/health/_all_docs?include_docs=true", "alice", {})
    assert status == 200
    rows = on_disk(config.data_dir, "read", "write")
    expected = '["sha256:' + hashlib.sha256(long_id.encode()).hexdigest() + '"]'
    assert [r[4] for r in rows] == [expected, expected]
    assert _verify(config) == 0
