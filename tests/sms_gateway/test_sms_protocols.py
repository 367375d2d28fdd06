"""Reading what gateways send: medic-gateway polls and provider callbacks."""

from __future__ import annotations

import datetime as dt

from sms_gateway import medic, provider
from sms_gateway.outbox import OutgoingSms, StatusUpdate
from sms_gateway.outgoing import OutEvent

NOW = dt.datetime(2024, 5, 1, 9, tzinfo=dt.UTC)
MS = 1714554000000  # 2024-05-01T09:00:00Z


def test_a_full_poll() -> None:
    poll = medic.read_poll(
        {
            "messages": [
                {
                    "id": "m1",
                    "from": "+254700000001",
                    "content": "P 3 Jane",
                    "sms_sent": MS - 5000,
                    "sms_received": MS,
                },
            ],
            "updates": [{"id": "abc-1", "status": "FAILED", "reason": "no credit"}],
        }
    )
    [message] = poll.messages
    assert (message.channel, message.external_id, message.phone) == (
        "gateway",
        "m1",
        "+254700000001",
    )
    assert (message.content, message.received_at) == ("P 3 Jane", NOW)
    assert poll.updates == [StatusUpdate("abc-1", "FAILED", "no credit")]
    assert poll.skipped == 0


def test_lists_may_be_missing_or_null() -> None:
    for body in ({}, {"messages": None, "updates": None}, {"messages": [], "updates": []}):
        poll = medic.read_poll(body)
        assert (poll.messages, poll.updates, poll.skipped) == ([], [], 0)


def test_odd_entries_are_kept_or_counted_never_fatal() -> None:
    poll = medic.read_poll(
        {
            "messages": [
                {"from": "+254700000001", "content": "P 3 Jane"},  # no id
                {"id": 7, "from": None, "content": 12, "sms_received": "yesterday"},
                "not a message",
            ],
            "updates": [{"status": "SENT"}, 5, {"id": "x-1", "status": None}],
        }
    )
    first, second = poll.messages
    assert first.external_id.startswith("derived-") and first.received_at is None
    again = medic.read_poll({"messages": [{"from": "+254700000001", "content": "P 3 Jane"}]})
    assert again.messages[0].external_id == first.external_id  # a repeat is still a repeat
    assert (second.external_id, second.phone, second.content) == ("7", "", "12")
    assert poll.updates == [StatusUpdate("x-1", "", None)]
    assert poll.skipped == 3


def test_answers() -> None:
    assert medic.answer([OutgoingSms("a-1", "+2547", "hi")]) == {
        "messages": [{"id": "a-1", "to": "+2547", "content": "hi"}]
    }
    assert medic.error("nope") == {"error": True, "message": "nope"}


def test_provider_callbacks() -> None:
    form = {
        "from": "+254700000001",
        "to": "12345",
        "text": "P 3 Jane",
        "id": "ATXid_1",
        "date": "2024-05-01 09:00:00",
    }
    received = provider.incoming(form, NOW - dt.timedelta(hours=1))
    assert received is not None
    assert (received.channel, received.external_id, received.received_at) == (
        "africastalking",
        "ATXid_1",
        NOW,
    )
    assert provider.incoming({"id": "x", "status": "Success"}, NOW) is None
    report = provider.delivery_report({"id": "ATXid_9", "status": "Success"})
    assert report == provider.DeliveryReport("ATXid_9", OutEvent.DELIVERED, None)
    failed = provider.delivery_report(
        {"id": "ATXid_9", "status": "Failed", "failureReason": "InsufficientCredit"}
    )
    assert failed == provider.DeliveryReport("ATXid_9", OutEvent.FAILED, "InsufficientCredit")
    assert provider.delivery_report({"id": "x", "status": "Mystery"}) is None


def test_webhook_secret() -> None:
    assert provider.secret_matches("s3cret", "s3cret")
    assert not provider.secret_matches("s3cret", "s3cre")
    assert not provider.secret_matches("s3cret", None)
    assert not provider.secret_matches(None, "")
