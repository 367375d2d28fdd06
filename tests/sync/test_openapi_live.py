"""schemathesis against a live ``fieldsync serve`` (issue 12, point 5).

One server process on a free loopback port, seeded with the shared organisation,
a gateway account, an enrolled phone for alice, a second phone in stock, a
patient ID and one coded SMS; the OpenAPI document is read from the server
itself.  Every operation then gets a bounded, derandomised run of generated
requests as each role -- an admin (HTTP Basic), a supervisor (the session
cookie), a CHW (Basic and her device token), the SMS gateway -- once with
generated path parameters and once with ones that exist (a user, a device, a
patient ID), valid and invalid requests, plus a few known-good requests whose
answers are the successful ones (a scan of a real card, a sheet, a card).
Every answer must be:

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
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from shared_org import PASSWORD, USERS, basic_auth, seed

from sync.openapi import PATH
from sync.scopes import Role

FIELDSYNC = str(Path(sys.executable).parent / "fieldsync")
READY_SECONDS = 30.0
WEBHOOK_SECRET = "openapi-webhook-secret"
GATEWAY = "gw"
ALICE_PHONE = "+254700000001"
ALICE_SERIAL, STOCK_SERIAL = "PH-ALICE", "PH-STOCK"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Examples per operation and pass: the admin may call everything, so gets the most.
EXAMPLES = {"admin": 10, "sam": 5, "alice": 5, GATEWAY: 3}
# Operations whose requests must get some 2xx as the admin (the credentials work).
ADMIN_REACHES = {
    "GET /api/v1/places",
    "POST /api/v1/places",
    "GET /api/v1/users",
    "GET /api/v1/users/{name}",
    "GET /api/v1/devices",
    "GET /api/v1/devices/{serial}",
    "GET /api/v1/devices/_refusals",
    "GET /api/v1/sms/messages",
    "POST /api/v1/patient-ids",
    "POST /api/v1/patient-ids/sheet",
    "POST /api/v1/barcode/scan",
    "GET /api/v1/patient-ids/{id}/card",
    "GET /api/sms",
}


@dataclass
class Live:
    url: str
    headers: dict[str, dict[str, str]]  # role name -> the headers it authenticates with
    patient_id: str
    card_png: bytes
    log: Path  # the server's output: a 500's traceback is there

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def path_parameters(self) -> dict[str, str]:
        """Path parameters that exist.  The device is the one in stock, not alice's:
        a generated status change must not revoke the token her requests carry."""
        return {
            "name": "bob",
            "serial": STOCK_SERIAL,
            "id": self.patient_id,
            "provider": "africastalking",
        }


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


def post(url: str, path: str, user: str, body: Any = None, status: int = 201) -> Any:
    response = requests.post(url + path, json=body, auth=basic(user), timeout=10)
    assert response.status_code == status, (path, response.text)
    return response.json()


def seed_over_http(url: str) -> tuple[str, str]:
    """Alice's enrolled phone, a phone in stock, a patient ID and one coded SMS;
    returns alice's device token and the patient ID."""
    alice = {"serial": ALICE_SERIAL, "imei": "490154203237518", "phone": ALICE_PHONE}
    post(url, "/api/v1/devices", "admin", {**alice, "worker": "alice"})
    stock = {"serial": STOCK_SERIAL, "imei": "356938035643809", "place": "area-a2"}
    post(url, "/api/v1/devices", "admin", stock)
    code = post(url, f"/api/v1/devices/{ALICE_SERIAL}/enrolment-code", "admin")["code"]
    enrolled = post(url, "/api/v1/devices/enroll", "alice", {"code": code, "serial": ALICE_SERIAL})
    [patient_id] = post(url, "/api/v1/patient-ids", "admin", {"count": 1})["ids"]
    poll = {"messages": [{"id": "m-1", "from": ALICE_PHONE, "content": "P 3 Jane"}]}
    post(url, "/api/sms", GATEWAY, poll, status=200)
    return str(enrolled["device_token"]), str(patient_id)


def session_cookie(url: str, name: str) -> str:
    """Log in as the supervisor pages and a browser app do (``POST /_session``)."""
    login = {"name": name, "password": PASSWORD}
    response = requests.post(f"{url}/_session", json=login, timeout=10)
    assert response.status_code == 200, response.text
    return str(response.cookies["AuthSession"])


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
        token, patient_id = seed_over_http(url)
        card = requests.get(
            f"{url}/api/v1/patient-ids/{patient_id}/card", auth=basic("admin"), timeout=10
        )
        assert card.status_code == 200, card.text
        headers = {name: basic_auth(name) for name in EXAMPLES}
        headers["sam"] = {"Cookie": f"AuthSession={session_cookie(url, 'sam')}"}
        headers["alice"]["X-Device-Token"] = token
        for role in headers.values():
            role["X-Webhook-Secret"] = WEBHOOK_SECRET
        yield Live(url, headers, patient_id, card.content, log)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


BOUNDED = settings(
    derandomize=True,  # the same requests on every run
    database=None,  # no example database: nothing replayed from or saved to the repository
    deadline=None,  # one shared server on a busy machine
    phases=[Phase.explicit, Phase.generate],  # no shrinking: failures are reported as found
    suppress_health_check=list(HealthCheck),
)


# They disable or remove the user the others name (bob): run them after the others.
LAST = {"POST /api/v1/users/{name}/disable", "DELETE /api/v1/users/{name}"}


def run_operation(
    operation: Any,
    url: str,
    headers: dict[str, str],
    examples: int,
    fixed: dict[str, Any],
    mode: GenerationMode = GenerationMode.POSITIVE,
) -> Counter[int]:
    """Generated requests for one operation, each answer checked against the document;
    how many answers of each status it got."""
    session, statuses = requests.Session(), Counter[int]()
    names = {p.name for p in operation.path_parameters}
    fixed = {k: fixed[k] for k in names & set(fixed)}
    strategy = operation.as_strategy(mode, path_parameters=fixed)

    @settings(BOUNDED, max_examples=examples)
    @given(case=strategy)
    def check(case: Any) -> None:
        response = case.call(base_url=url, session=session, headers=headers)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=CHECKS, headers=headers)

    try:
        check()
    finally:
        session.close()
    return statuses


def known_good(schema: Any, live: Live) -> list[tuple[str, Any]]:
    """Requests that succeed, for the answers generated data rarely reaches."""
    scan = schema["/api/v1/barcode/scan"]["POST"]
    sheet = schema["/api/v1/patient-ids/sheet"]["POST"]
    card = schema["/api/v1/patient-ids/{id}/card"]["GET"]
    user = schema["/api/v1/users/{name}"]["GET"]
    return [
        ("alice", scan.Case(body=live.card_png, media_type="image/png")),
        ("admin", scan.Case(body=live.card_png, media_type="image/png")),
        ("admin", sheet.Case(body={"ids": [live.patient_id]}, media_type="application/json")),
        ("sam", card.Case(path_parameters={"id": live.patient_id}, query={"format": "svg"})),
        ("admin", user.Case(path_parameters={"name": "alice"})),
    ]


def runs(
    operation: Any, live: Live
) -> Iterator[tuple[str, tuple[GenerationMode, dict[str, str], int]]]:
    """(role, (mode, fixed path parameters, examples)) for each run of ``operation``:
    valid and invalid requests (bodies, queries, headers that break the schema),
    with generated path parameters and, where it has some, with ones that exist."""
    has_input = bool(
        operation.path_parameters or operation.query or operation.body or operation.headers
    )
    for name, examples in EXAMPLES.items():
        for fixed in ({}, live.path_parameters()) if operation.path_parameters else ({},):
            yield name, (GenerationMode.POSITIVE, fixed, examples)
            if has_input:  # nothing to break in a request without any
                yield name, (GenerationMode.NEGATIVE, fixed, max(2, examples // 2))


def checked(case: Any, live: Live, name: str) -> Any:
    """A known-good request as ``name``: a 2xx that keeps to the document; its body."""
    response = case.call(base_url=live.url, headers=live.headers[name])
    assert 200 <= response.status_code < 300, (case.operation.label, response.text)
    case.validate_response(response, checks=CHECKS, headers=live.headers[name])
    return response.json()


def enrol_again(schema: Any, live: Live) -> Any:
    """A new code for alice's phone and its enrolment (last: it replaces her token)."""
    issue = schema["/api/v1/devices/{serial}/enrolment-code"]["POST"]
    enroll = schema["/api/v1/devices/enroll"]["POST"]
    code = checked(issue.Case(path_parameters={"serial": ALICE_SERIAL}), live, "admin")["code"]
    body = {"code": code, "serial": ALICE_SERIAL}
    return checked(enroll.Case(body=body, media_type="application/json"), live, "alice")


def test_the_live_server_keeps_to_its_openapi_document(live: Live) -> None:
    schema = schemathesis.openapi.from_url(live.url + PATH)
    failures: list[str] = []
    succeeded: dict[str, set[str]] = {name: set() for name in EXAMPLES}
    for name, case in known_good(schema, live):
        response = case.call(base_url=live.url, headers=live.headers[name])
        assert 200 <= response.status_code < 300, (case.operation.label, response.text)
        case.validate_response(response, checks=CHECKS, headers=live.headers[name])
        succeeded[name].add(case.operation.label)
    operations = [result.ok() for result in schema.get_all_operations()]
    operations.sort(key=lambda operation: operation.label in LAST)  # stable: the rest as listed
    for operation in operations:
        for name, (mode, fixed, examples) in runs(operation, live):
            try:
                statuses = run_operation(
                    operation, live.url, live.headers[name], examples, fixed, mode
                )
            except (Exception, FailureGroup) as exc:  # every operation and role: all reported
                failures.append(f"{operation.label} as {name}, {mode.value}, {fixed}:\n{exc}")
                continue
            if any(200 <= status < 300 for status in statuses):
                succeeded[name].add(operation.label)
    assert not failures, "\n\n".join([*failures, f"server log:\n{live.log_tail()}"])
    enrolled = enrol_again(schema, live)
    assert set(enrolled) == {"serial", "worker", "device_token", "header"}
    # The credentials work: each role reached what it may do, not only 401s and 403s.
    assert succeeded["admin"] >= ADMIN_REACHES, ADMIN_REACHES - succeeded["admin"]
    assert succeeded["sam"] >= {"GET /api/v1/devices", "GET /api/v1/sms/messages"}
    assert succeeded["alice"] >= {"POST /api/v1/patient-ids", "POST /api/v1/barcode/scan"}
    assert succeeded[GATEWAY] >= {"POST /api/sms"}
