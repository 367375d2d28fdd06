"""A rejected SMS is logged (issue 12, point 4): why, never the phone number or the text."""

from __future__ import annotations

from sms_fixtures import ALICE_PHONE, STRANGER_PHONE, Gateway
from structlog.testing import capture_logs


async def test_a_rejected_sms_is_logged_without_phone_or_text(gateway: Gateway) -> None:
    with capture_logs() as logs:
        await gateway.send("Zq7 nonsense-marker", phone=STRANGER_PHONE)
        await gateway.send("Zq8 gibberish-marker", phone=ALICE_PHONE)
    rejected = [line for line in logs if line["event"] == "sms_rejected"]
    assert [line["reason"] for line in rejected] == ["unknown_sender", "invalid"]
    assert all(isinstance(line["message_id"], int) for line in rejected)
    said = repr(logs)
    for secret in (STRANGER_PHONE, ALICE_PHONE, "Zq7", "nonsense-marker", "gibberish-marker"):
        assert secret not in said
