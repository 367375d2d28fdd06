"""schemathesis against a live ``fieldsync serve`` (issue 12, point 5).

One server process on a free loopback port, seeded with the shared organisation,
a gateway account, an enrolled phone for alice and one coded SMS; the OpenAPI
document is read from the server itself.  Every operation then gets a bounded,
derandomised run of generated requests as each role (an admin, a supervisor, a
CHW with her device token, the SMS gateway), and every answer must be:

- no server error (5xx), and
- one the document allows: a listed status code, a listed content type, and a
  body that matches the schema for that status.

Bounded: a few examples per operation and role, no shrinking, no example
database (nothing is written into the repository).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from shared_org import PASSWORD, USERS, seed

from sync.openapi import PATH
from sync.scopes import Role

FIELDSYNC = str(Path(sys.executable).parent / "fieldsync")
READY_SECONDS = 30.0
WEBHOOK_SECRET = "openapi-webhook-secret"
GATEWAY = "gw"
ALICE_PHONE = "+254700000001"
IMEI = "490154203237518"  # a valid check digit
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Examples per operation: the admin may call everything, so gets the most.
EXAMPLES = {"admin": 12, "sam": 6, "alice": 6, GATEWAY: 4}

# Operations whose generated requests must get some 2xx as the admin.
ADMIN_REACHES = {
    "GET /api/v1/places",
    "POST /api/v1/places",
    "GET /api/v1/users",
    "GET /api/v1/devices",
    "GET /api/v1/devices/_refusals",
    "GET /api/v1/sms/messages",
    "POST /api/v1/patient-ids",
    "GET /api/v1/openapi.json",
    "GET /api/sms",
}


@dataclass
class Live:
    url: str
    headers: dict[str, dict[str, str]]  # role name -> the headers it authenticates with


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def basic(name: str) -> tuple[str, str]:
    return (name, PASSWORD)


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"fieldsync serve exited early:\n{log.read_text()[-4000:]}")
        try:
            if requests.get(url + "/_up", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"fieldsync serve not ready:\n{log.read_text()[-4000:]}")


def enrol_alice(url: str) -> str:
    """An assigned, enrolled phone for alice (the CHW role needs its token)."""
    admin = basic("admin")
    device = {"serial": "PH-OPENAPI", "imei": IMEI, "phone": ALICE_PHONE, "worker": "alice"}
    created = requests.post(f"{url}/api/v1/devices", json=device, auth=admin, timeout=10)
    assert created.status_code == 201, created.text
    code = requests.post(
        f"{url}/api/v1/devices/PH-OPENAPI/enrolment-code", auth=admin, timeout=10
    ).json()["code"]
    body = {"code": code, "serial": "PH-OPENAPI"}
    enrolled = requests.post(
        f"{url}/api/v1/devices/enroll", json=body, auth=basic("alice"), timeout=10
    )
    assert enrolled.status_code == 201, enrolled.text
    return str(enrolled.json()["device_token"])


def text_from_alice(url: str) -> None:
    """One registration by SMS: the message lists have rows whose shape is checked."""
    poll = {"messages": [{"id": "m-1", "from": ALICE_PHONE, "content": "P 3 Jane"}]}
    answer = requests.post(f"{url}/api/sms", json=poll, auth=basic(GATEWAY), timeout=10)
    assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("openapi-live")
    data_dir, log = root / "data", root / "serve.log"
    seed(data_dir, users=[*USERS, (GATEWAY, Role.GATEWAY, [], [])])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "FIELDSYNC_SMS_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "FIELDSYNC_LOG_LEVEL": "warning",
    }
    command = [FIELDSYNC, "serve", "--data-dir", str(data_dir), "--host", "127.0.0.1"]
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*command, "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_ready(url, process, log)
        token = enrol_alice(url)
        text_from_alice(url)
        headers = {name: {"Authorization": _basic_header(name)} for name in EXAMPLES}
        headers["alice"]["X-Device-Token"] = token
        for role in headers.values():
            role["X-Webhook-Secret"] = WEBHOOK_SECRET
        yield Live(url, headers)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _basic_header(name: str) -> str:
    return requests.auth._basic_auth_str(name, PASSWORD)


def run_operation(
    operation: Any, url: str, headers: dict[str, str], examples: int
) -> Counter[int]:
    """Generated requests for one operation, each answer checked against the document;
    how many answers of each status it got."""
    session, statuses = requests.Session(), Counter[int]()

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def check(case: Any) -> None:
        response = case.call(base_url=url, session=session, headers=headers)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=CHECKS, headers=headers)

    try:
        check()
    finally:
        session.close()
    return statuses


def test_the_live_server_keeps_to_its_openapi_document(live: Live) -> None:
    schema = schemathesis.openapi.from_url(live.url + PATH)
    failures: list[str] = []
    succeeded: dict[str, set[str]] = {name: set() for name in EXAMPLES}
    for result in schema.get_all_operations():
        operation = result.ok()
        for name, examples in EXAMPLES.items():
            try:
                statuses = run_operation(operation, live.url, live.headers[name], examples)
            except (Exception, FailureGroup) as exc:  # every operation and role: all reported
                failures.append(f"{operation.label} as {name}:\n{exc}")
                continue
            if any(200 <= status < 300 for status in statuses):
                succeeded[name].add(operation.label)
    assert not failures, "\n\n".join(failures)
    print({name: len(labels) for name, labels in succeeded.items()})
    # The credentials work: each role reached what it may do, not only 401s and 403s.
    assert succeeded["admin"] >= ADMIN_REACHES, ADMIN_REACHES - succeeded["admin"]
    assert succeeded["sam"] >= {"GET /api/v1/devices", "GET /api/v1/sms/messages"}
    assert succeeded["alice"] >= {"POST /api/v1/patient-ids", "POST /api/v1/barcode/scan"}
    assert succeeded[GATEWAY] >= {"POST /api/sms"}
