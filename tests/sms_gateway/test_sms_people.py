"""A disabled or removed worker's basic phone files no report in their name."""

from __future__ import annotations

import pytest
from sms_fixtures import ALICE_PHONE, Client, Gateway, as_user

NOT_REGISTERED = "This phone is not registered. Ask your supervisor to register it."


@pytest.mark.parametrize(("method", "path"), [("POST", "/disable"), ("DELETE", "")])
async def test_a_worker_who_left_files_no_reports(
    client: Client, gateway: Gateway, method: str, path: str
) -> None:
    response = await client.request(method, f"/api/v1/users/alice{path}", headers=as_user("admin"))
    assert response.status == 200
    replies = await gateway.send("P 3 Jane", phone=ALICE_PHONE)
    assert [(r["to"], r["content"]) for r in replies] == [(ALICE_PHONE, NOT_REGISTERED)]
    assert (await gateway.doc("person-10000X"))[0] == 404
