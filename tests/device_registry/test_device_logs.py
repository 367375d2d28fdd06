"""Device events in the log (issue 12, point 4): enrolment, revocation, refusal; never a token."""

from __future__ import annotations

from device_helpers import IMEIS, Client, Devices, as_user
from structlog.testing import capture_logs


async def test_enrolment_revocation_and_refusal_are_logged(
    client: Client, devices: Devices
) -> None:
    with capture_logs() as logs:
        token = await devices.issued("A1", IMEIS[0], "alice")
        status, _ = await devices.mark("A1", "stolen")
        assert status == 200
        response = await client.get("/health/_changes", headers=as_user("alice", token))
        assert response.status == 401
    events = {line["event"]: line for line in logs}
    assert (events["device_enrolled"]["serial"], events["device_enrolled"]["worker"]) == (
        "A1",
        "alice",
    )
    assert events["device_tokens_revoked"]["tokens"] == 1
    refused = events["device_refused"]
    assert (refused["serial"], refused["user"], refused["status"]) == ("A1", "alice", 401)
    assert token not in repr(logs)
