"""The JSON APIs under /api/v1 answer junk bodies with 4xx, never 5xx (issue 9, point 9).

Bodies of every JSON type (and not JSON) for each state-changing route, as an
admin, a supervisor and a CHW.  Names and ids in the path are junk too.
"""

from __future__ import annotations

from urllib.parse import quote

import orjson
from hypothesis import given
from hypothesis import strategies as st
from served import Served, fuzz_settings, served
from sync_fixtures import as_user
from yarl import URL

from sync.app import create_app
from sync.config import Config

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
    st.sampled_from(["area-a1", "alice", "chw", "supervisor", "admin", "lost", "active"]),
)
JUNK = st.recursive(
    SCALARS,
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3)
    ),
    max_leaves=6,
)
FIELDS = ["id", "parent", "name", "role", "password", "places", "read_places", "serial",
          "model", "notes", "status", "user", "code", "count", "size", "device", "ids",
          "reason", "language", "phone", "code"]  # fmt: skip
BODIES = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), JUNK, max_size=5).map(orjson.dumps),
    st.builds(orjson.dumps, JUNK),
    st.binary(max_size=40),
    st.builds(lambda n: b"[" * n + b"]" * n, st.integers(200, 1100)),
)
ROUTES = [
    ("POST", "/api/v1/places"),
    ("POST", "/api/v1/users"),
    ("PUT", "/api/v1/users/{}/places"),
    ("POST", "/api/v1/devices"),
    ("POST", "/api/v1/devices/enroll"),
    ("PATCH", "/api/v1/devices/{}"),
    ("POST", "/api/v1/devices/{}/assign"),
    ("POST", "/api/v1/devices/{}/status"),
    ("POST", "/api/v1/devices/{}/enrolment-code"),
    ("PUT", "/api/v1/sms/workers/{}/language"),
    ("POST", "/api/v1/patient-ids"),
    ("POST", "/api/v1/patient-ids/blocks"),
    ("POST", "/api/v1/patient-ids/sheet"),
    ("POST", "/api/v1/patient-ids/{}/retire"),
]


async def send(app: Served, method: str, path: str, body: bytes, user: str) -> tuple[int, str]:
    headers = {**as_user(user), "Content-Type": "application/json"}
    url = URL(path, encoded=True)
    response = await app.client.request(method, url, data=body, headers=headers)
    return response.status, await response.text()


def test_no_api_call_is_a_server_error(config: Config) -> None:
    with served(create_app(config)) as app:
        _fuzz(app)


def _fuzz(app: Served) -> None:
    @fuzz_settings(200)
    @given(
        st.sampled_from(ROUTES),
        st.one_of(st.sampled_from(["alice", "p1", "S-1"]), st.text(min_size=1, max_size=8)),
        BODIES,
        st.sampled_from(["admin", "sam", "alice"]),
    )
    def call(route: tuple[str, str], name: str, body: bytes, user: str) -> None:
        method, template = route
        path = template.format(quote(name, safe=""))
        status, text = app.run(send(app, method, path, body, user))
        assert status < 500, (status, text, method, path, body)

    call()
