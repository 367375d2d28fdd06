"""The documents a valid report becomes: the records the offline app would have made.

    person-<PATIENT_ID>              type person: name, patient_id, place
    pregnancy-<PATIENT_ID>-<LMP>     type pregnancy: patient_id, lmp_date, edd, status
    report-<message key>             type data_record, form <CODE>: the report's fields

Every id is derived from the message (its key, or the patient ID allocated to
it before anything is written), so processing a message again after a crash
names the same documents and finds them already written.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from forms.values import to_json
from sms_gateway.parser import Report
from sms_gateway.pregnancy import PregnancyDates

SOURCE = "sms"


def person_id(patient_id: str) -> str:
    return f"person-{patient_id}"


def pregnancy_id(patient_id: str, lmp: dt.date) -> str:
    return f"pregnancy-{patient_id}-{lmp:%Y%m%d}"


def pregnancy_prefix(patient_id: str) -> str:
    return f"pregnancy-{patient_id}-"


def report_id(message_key: str) -> str:
    return f"report-{message_key}"


def person_doc(
    patient_id: str, name: str, place: str, reported: dt.datetime, worker: str
) -> dict[str, Any]:
    return {
        "_id": person_id(patient_id),
        "type": "person",
        "name": name,
        "patient_id": patient_id,
        "place": place,
        "reported_date": reported.isoformat(),
        "created_by": worker,
        "source": SOURCE,
    }


def pregnancy_doc(
    patient_id: str, dates: PregnancyDates, weeks: int, place: str, reported: dt.datetime
) -> dict[str, Any]:
    return {
        "_id": pregnancy_id(patient_id, dates.lmp),
        "type": "pregnancy",
        "patient_id": patient_id,
        "place": place,
        "lmp_date": dates.lmp.isoformat(),
        "edd": dates.edd.isoformat(),
        "weeks_at_registration": weeks,
        "status": "active",
        "reported_date": reported.isoformat(),
        "source": SOURCE,
    }


def report_doc(
    message_key: str,
    report: Report,
    place: str,
    patient_id: str | None,
    phone: str,
    worker: str,
    reported: dt.datetime,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "_id": report_id(message_key),
        "type": "data_record",
        "form": report.code,
        "fields": {name: to_json(value) for name, value in report.values.items()},
        "place": place,
        "from": phone,
        "contact": worker,
        "reported_date": reported.isoformat(),
        "source": SOURCE,
    }
    if patient_id is not None:
        doc["patient_id"] = patient_id
    return doc


def delivered(pregnancy: dict[str, Any], day: dt.date, outcome: str, report: str) -> dict[str, Any]:
    """The pregnancy closed by a delivery report (an update: keeps ``_id`` and ``_rev``)."""
    return {
        **pregnancy,
        "status": "delivered",
        "delivery_date": day.isoformat(),
        "outcome": outcome,
        "delivery_report": report,
    }
