"""Logs an operator can use (issue 12, point 4): one line per request, a request id in
every answer and on every line, never a body, a document id or a password."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog
from sync_fixtures import PASSWORD, Api, Client, as_user, running

from sync import cli
from sync.app import create_app
from sync.cli import configure_logging
from sync.config import Config, ConfigError, from_env

DB = "clinicq7"
DOC_ID = "visit-zx81-7731"
MARKER = "marker-Qv93kd"
PHONE = "+254711000999"

Logs = Callable[..., list[dict[str, Any]]]


@pytest.fixture
def sink() -> Iterator[io.StringIO]:
    """The server's real logging set-up, writing to a buffer; put back afterwards."""
    root, access = logging.getLogger(), logging.getLogger("aiohttp.access")
    handlers, level = root.handlers[:], root.level
    access.disabled = True  # the test server's access log; fieldsync serves without one
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    yield stream
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    root.handlers[:], root.level = handlers, level
    access.disabled = False


def lines(sink: io.StringIO, event: str | None = None) -> list[dict[str, Any]]:
    found = [json.loads(line) for line in sink.getvalue().splitlines() if line.strip()]
    return [line for line in found if event is None or line["event"] == event]


@pytest.fixture
async def served(
    aiohttp_client: Callable[..., Awaitable[Client]], config: Config, sink: io.StringIO
) -> Client:
    return await aiohttp_client(create_app(replace(config, db_name=DB)))


async def test_every_answer_carries_a_request_id(served: Client) -> None:
    for path, headers, status in (
        ("/", {}, 200),
        (f"/{DB}", {}, 401),
        ("/api/v1/no-such-thing", as_user("admin"), 404),
    ):
        response = await served.get(path, headers=headers)
        assert response.status == status, path
        assert len(response.headers["X-Request-Id"]) == 32, path


async def test_a_crash_is_logged_and_answered_with_the_id(
    served: Client, sink: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*_: Any, **__: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("sync.replication.routes.json_response", crash)
    response = await served.get("/", headers={"X-Request-Id": "crash-1"})
    assert response.status == 500
    assert response.headers["X-Request-Id"] == "crash-1"
    [line] = lines(sink, "request")
    assert (line["request_id"], line["status"], line["route"]) == ("crash-1", 500, "/")


@pytest.mark.parametrize(
    ("offered", "echoed"),
    [
        ("abc-123.DEF_9", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("has space", False),
        ("<script>", False),
        ("a\u00e9b", False),
    ],
)
async def test_a_sane_incoming_id_is_echoed_an_insane_one_replaced(
    served: Client, sink: io.StringIO, offered: str, echoed: bool
) -> None:
    response = await served.get("/", headers={"X-Request-Id": offered})
    answered = response.headers["X-Request-Id"]
    assert (answered == offered) is echoed
    [line] = lines(sink, "request")
    assert line["request_id"] == answered
    assert offered in sink.getvalue() if echoed else offered not in sink.getvalue()


async def test_one_line_per_request_with_route_pattern_and_caller(
    served: Client, sink: io.StringIO
) -> None:
    doc = {"_id": DOC_ID, "type": "visit", "place": "area-a1", "note": MARKER, "phone": PHONE}
    response = await served.post(
        f"/{DB}/_bulk_docs?new_edits=true", json={"docs": [doc]}, headers=as_user("alice")
    )
    assert response.status == 201, await response.text()
    pushed = response.headers["X-Request-Id"]
    response = await served.get(f"/{DB}/{DOC_ID}", headers=as_user("alice"))
    assert response.status == 200
    assert MARKER in await response.text()
    fetched = response.headers["X-Request-Id"]

    requests = lines(sink, "request")
    assert [line["request_id"] for line in requests] == [pushed, fetched]
    push, fetch = requests
    assert push["route"] == "/{db}/_bulk_docs"
    assert fetch["route"] == "/{db}/{docid}"
    for line, method in ((push, "POST"), (fetch, "GET")):
        assert line["method"] == method
        assert line["user"] == "alice"
        assert line["role"] == "chw"
        assert line["status"] in (200, 201)
        assert isinstance(line["duration_ms"], float)
        assert line["level"] == "info"
    text = sink.getvalue()
    for secret in (DB, DOC_ID, MARKER, PHONE, "new_edits"):
        assert secret not in text


async def test_a_failed_login_is_logged_without_the_password(
    served: Client, sink: io.StringIO
) -> None:
    wrong = "hunter2-wrong-Zq1"
    response = await served.post("/_session", json={"name": "alice", "password": wrong})
    assert response.status == 401
    [failed] = lines(sink, "login_failed")
    assert failed["user"] == "alice"
    assert failed["reason"] == "wrong_password"
    assert failed["request_id"] == response.headers["X-Request-Id"]
    assert wrong not in sink.getvalue()
    response = await served.post("/_session", json={"name": "nobody", "password": PASSWORD})
    assert lines(sink, "login_failed")[-1]["reason"] == "unknown_user"
    assert PASSWORD not in sink.getvalue()
    [line, _] = lines(sink, "request")
    assert line["status"] == 401 and "user" not in line


async def test_warning_level_drops_info_lines(served: Client, sink: io.StringIO) -> None:
    configure_logging("warning", "json", sink)
    sink.seek(0)
    sink.truncate()  # the start-up lines, logged at info
    await served.get("/")
    await served.post("/_session", json={"name": "alice", "password": "wrong-password-1"})
    assert [line["event"] for line in lines(sink)] == ["login_failed"]


async def test_console_format_is_not_json(served: Client, sink: io.StringIO) -> None:
    configure_logging("info", "console", sink)
    sink.seek(0)
    sink.truncate()
    response = await served.get("/")
    [line] = sink.getvalue().splitlines()
    assert "request" in line and response.headers["X-Request-Id"] in line
    assert not line.startswith("{")


def test_log_settings_come_from_the_environment() -> None:
    config = from_env(env={"FIELDSYNC_LOG_LEVEL": "Warning", "FIELDSYNC_LOG_FORMAT": "console"})
    assert (config.log_level, config.log_format) == ("warning", "console")
    assert (Config().log_level, Config().log_format) == ("info", "json")


@pytest.mark.parametrize(
    ("name", "value"), [("FIELDSYNC_LOG_LEVEL", "loud"), ("FIELDSYNC_LOG_FORMAT", "xml")]
)
def test_a_bad_log_setting_is_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        from_env(env={name: value})


async def test_a_scope_change_is_logged_with_its_places(served: Client, sink: io.StringIO) -> None:
    body = {"places": ["area-a2"], "read_places": ["district-b"]}
    response = await served.put("/api/v1/users/alice/places", json=body, headers=as_user("admin"))
    assert response.status == 200, await response.text()
    [changed] = lines(sink, "scope_changed")
    assert changed["user"] == "alice"
    assert (changed["places"], changed["read_places"]) == (["area-a2"], ["district-b"])
    assert changed["request_id"] == response.headers["X-Request-Id"]
    [line] = lines(sink, "request")
    assert line["route"] == "/api/v1/users/{name}/places" and line["user"] == "admin"


async def test_a_refused_device_is_logged(
    aiohttp_client: Callable[..., Awaitable[Client]], config: Config, sink: io.StringIO
) -> None:
    served = await aiohttp_client(create_app(replace(config, require_enrolment=True)))
    response = await served.get("/health/_changes", headers=as_user("alice"))
    assert response.status == 401
    [refused] = lines(sink, "device_refused")
    assert refused["user"] == "alice" and refused["status"] == 401
    assert refused["kind"] and refused["reason"]
    assert refused["request_id"] == response.headers["X-Request-Id"]


async def test_a_key_operation_is_logged_by_the_command(
    config: Config, sink: io.StringIO, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running(config) as client:
        await Api(client).bulk([{"_id": DOC_ID, "place": "area-a1", "note": MARKER}])
    new_file = tmp_path / "new-master.key"
    argv = ["keys", "rewrap", "--new-key-file", str(new_file), "--data-dir", str(config.data_dir)]
    assert cli.main(argv) == 0
    said = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    [rewrapped] = [line for line in said if line["event"] == "master_key_rewrapped"]
    assert rewrapped["rewrapped"] == 2 and rewrapped["level"] == "info"
