"""Carrying out a valid report as its sender: documents written, reply and reminders chosen.

The form's actions decide what happens (see :class:`forms.model.Action`):

    create_person      person-<ID> with the ID allocated to the message beforehand
    create_pregnancy   pregnancy-<ID>-<LMP>: LMP = report day - weeks, EDD = LMP + 280 days
    schedule_reminders ANC contact reminders to the worker, due on their days
    attach_to_patient  the patient must exist in the sender's scope, else the reply says so
    close_pregnancy    the active pregnancy closed; its pending reminders cleared

Documents go through the replication core's writer as the sender, so scope
checks and validators apply exactly as for a device.  A ``conflict`` on a
document created from the message means an earlier, interrupted run already
wrote it: the ids are the message's own.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Any

from forms.model import Action, Form, FormSet
from forms.values import render as render_value
from sms_gateway import records, replies
from sms_gateway.parser import Report
from sms_gateway.pregnancy import dates_for
from sms_gateway.reminders import Reminder, anc_schedule
from sms_gateway.settings import SmsSettings
from sync.errors import Conflict, NotFound
from sync.replication.context import Caller
from sync.replication.reads import ReadOptions
from sync.replication.routes import Replication
from sync.store.base import AllDocsQuery

MAX_UPDATE_TRIES = 3


class Outcome(enum.Enum):
    REGISTERED = "registered"
    RECORDED = "recorded"
    INVALID = "invalid"
    UNKNOWN_SENDER = "unknown_sender"
    LOST_PHONE = "lost_phone"  # from a phone reported lost or stolen: flagged, not recorded
    UNKNOWN_PATIENT = "unknown_patient"
    NO_PLACE = "no_place"
    FAILED = "failed"


class NotWritten(Exception):
    """The core refused a document (scope, validation): the message cannot be recorded."""


@dataclass(frozen=True)
class Context:
    """Who sent a message, where they record, and when it was reported."""

    message_key: str
    phone: str
    caller: Caller
    place: str
    language: str
    reported: dt.datetime
    report_day: dt.date
    patient_id: str | None  # allocated to the message before carrying it out


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    reply: str
    place: str | None = None
    patient_id: str | None = None
    docs: tuple[str, ...] = ()
    reminders: tuple[tuple[Reminder, str], ...] = ()
    clear_reminders_of: str | None = None
    # Documents to create that are not written yet: the service writes the creations of
    # many messages of one sender in one batch (see SmsService._flush).
    creates: tuple[dict[str, Any], ...] = ()


class Registrar:
    def __init__(self, rep: Replication, forms: FormSet, settings: SmsSettings) -> None:
        self.rep = rep
        self.forms = forms
        self.settings = settings
        self.db = rep.config.db_name

    def reads(self, report: Report) -> bool:
        """Whether carrying ``report`` out reads documents (earlier creations must be written)."""
        form = self.forms.get(report.code)
        return form is not None and Action.ATTACH_TO_PATIENT in form.actions

    async def carry_out(self, ctx: Context, report: Report) -> Result:
        """The result of ``report``; documents it only creates are left in ``creates``."""
        form = self.forms.get(report.code)
        assert form is not None  # the parser only reports known forms
        if Action.CREATE_PERSON in form.actions:
            return self._register(ctx, form, report)
        if Action.ATTACH_TO_PATIENT in form.actions:
            return await self._attach(ctx, form, report)
        doc = records.report_doc(
            ctx.message_key, report, ctx.place, None, ctx.phone, ctx.caller.name, ctx.reported
        )
        reply = replies.render("recorded", ctx.language, form=form.code, name="", patient_id="")
        return Result(Outcome.RECORDED, reply, ctx.place, docs=(doc["_id"],), creates=(doc,))

    async def create(self, caller: Caller, docs: list[dict[str, Any]]) -> dict[str, str]:
        """Write new documents; the reason of each one the core refused, by id.

        A ``conflict`` is no refusal: the id is the message's own, so an earlier,
        interrupted run wrote it.
        """
        results = await self.rep.writer.bulk_docs(self.db, caller, docs, True)
        return {
            r.doc_id: r.error.reason
            for r in results
            if r.error is not None and not isinstance(r.error, Conflict)
        }

    # -- a new patient ---------------------------------------------------------------------
    def _register(self, ctx: Context, form: Form, report: Report) -> Result:
        patient_id = ctx.patient_id
        assert patient_id is not None  # allocated before carrying out (service.allocate)
        name = str(report.values["name"])
        docs = [records.person_doc(patient_id, name, ctx.place, ctx.reported, ctx.caller.name)]
        params: dict[str, object] = {"name": name, "patient_id": patient_id, "edd": "-"}
        reminders: list[tuple[Reminder, str]] = []
        if Action.CREATE_PREGNANCY in form.actions:
            weeks = report.values["weeks"]
            assert isinstance(weeks, int)
            dates = dates_for(ctx.report_day, weeks)
            docs.append(records.pregnancy_doc(patient_id, dates, weeks, ctx.place, ctx.reported))
            params["edd"] = dates.edd.isoformat()
            if Action.SCHEDULE_REMINDERS in form.actions:
                schedule = anc_schedule(dates.lmp, ctx.report_day, self.settings.anc_weeks)
                reminders = [(r, self._reminder_text(r, name, patient_id, ctx)) for r in schedule]
        docs.append(
            records.report_doc(
                ctx.message_key,
                report,
                ctx.place,
                patient_id,
                ctx.phone,
                ctx.caller.name,
                ctx.reported,
            )
        )
        reply = replies.render("registered", ctx.language, **params)
        ids = tuple(d["_id"] for d in docs)
        return Result(
            Outcome.REGISTERED,
            reply,
            ctx.place,
            patient_id,
            ids,
            tuple(reminders),
            None,
            tuple(docs),
        )

    def _reminder_text(self, reminder: Reminder, name: str, patient_id: str, ctx: Context) -> str:
        return replies.render(
            "reminder",
            ctx.language,
            name=name,
            patient_id=patient_id,
            contact=reminder.contact,
            weeks=reminder.weeks,
            day=reminder.day.isoformat(),
        )

    # -- an existing patient -----------------------------------------------------------------
    async def _attach(self, ctx: Context, form: Form, report: Report) -> Result:
        patient_id = str(report.values["patient_id"])
        person = await self._find_person(ctx.caller, patient_id)
        if person is None:
            reply = replies.render("unknown_patient", ctx.language, patient_id=patient_id)
            return Result(Outcome.UNKNOWN_PATIENT, reply, ctx.place, patient_id)
        place = person.get("place")
        if not isinstance(place, str) or not ctx.caller.scope.can_write(place):
            place = ctx.place
        doc = records.report_doc(
            ctx.message_key, report, place, patient_id, ctx.phone, ctx.caller.name, ctx.reported
        )
        refused = await self.create(ctx.caller, [doc])
        if refused:
            raise NotWritten("; ".join(f"{i}: {r}" for i, r in refused.items()))
        docs = [doc["_id"]]
        clear = None
        if Action.CLOSE_PREGNANCY in form.actions:
            day = report.values.get("date", ctx.report_day)
            assert isinstance(day, dt.date)
            closed = await self._close_pregnancy(
                ctx.caller, patient_id, day, str(report.values.get("outcome", "")), doc["_id"]
            )
            docs += closed
            clear = patient_id
        reply = self._confirmation(form, report, person, ctx.language)
        return Result(Outcome.RECORDED, reply, place, patient_id, tuple(docs), (), clear)

    async def _find_person(self, caller: Caller, patient_id: str) -> dict[str, Any] | None:
        try:
            return await self.rep.reader.get_doc(
                self.db, caller, records.person_id(patient_id), None, ReadOptions()
            )
        except NotFound:
            return None

    def _confirmation(
        self, form: Form, report: Report, person: dict[str, Any], language: str
    ) -> str:
        params: dict[str, object] = {
            name: replies.choice_text(form, name, value, language)
            if isinstance(value, str)
            else render_value(value)
            for name, value in report.values.items()
        }
        params.update(form=form.code, name=person.get("name", ""))
        key = f"confirm_{form.code}"
        return replies.render(key if replies.has_template(key) else "recorded", language, **params)

    async def _close_pregnancy(
        self, caller: Caller, patient_id: str, day: dt.date, outcome: str, report: str
    ) -> list[str]:
        """Mark the patient's active pregnancy delivered (once, however often this runs)."""
        for _ in range(MAX_UPDATE_TRIES):
            pregnancy = await self._active_pregnancy(caller, patient_id, report)
            if pregnancy is None:
                return []
            if pregnancy.get("delivery_report") == report:
                return [pregnancy["_id"]]
            [result] = await self.rep.writer.bulk_docs(
                self.db, caller, [records.delivered(pregnancy, day, outcome, report)], True
            )
            if result.error is None:
                return [pregnancy["_id"]]
            if not isinstance(result.error, Conflict):
                raise NotWritten(f"{result.doc_id}: {result.error.reason}")
        raise NotWritten(f"pregnancy of {patient_id}: kept changing while being closed")

    async def _active_pregnancy(
        self, caller: Caller, patient_id: str, report: str
    ) -> dict[str, Any] | None:
        prefix = records.pregnancy_prefix(patient_id)
        query = AllDocsQuery(start=prefix, end=prefix + "\ufff0")
        page = await self.rep.reader.all_docs(self.db, caller, query, None, True, ReadOptions())
        docs = [row["doc"] for row in page["rows"] if row.get("doc")]
        ours = [d for d in docs if d.get("delivery_report") == report]
        active = [d for d in docs if d.get("status") == "active"]
        found = ours or active
        return found[-1] if found else None  # ids sort by LMP: the latest pregnancy
