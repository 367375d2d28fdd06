"""The SMS service: store every message first, then process it exactly once.

    receive ──▶ sms_incoming (state stored)          one committed transaction, then 200
                    │  the processor, in the background, a batch at a time:
                    ├─ open + parse + who sent it (device registry) + their account
                    ├─ allocate patient IDs (barcode's port) → recorded on the messages
                    ├─ carry out (sms_gateway.actions): documents through the core's writer
                    └─ outcome + reply + reminders in one transaction (state processed)

Several instances may share one store (sms_gateway.ports): each round
*claims* its batch under a lease, so no two instances process a message at
once; a message claimed by an instance that died is claimed again once its
lease runs out.  A crash anywhere leaves the message ``stored``; at start-up
(and every tick) the processor takes it up again.  Carrying it out again is harmless: the
documents it creates have ids derived from the message and from the patient
ID already recorded on it, and the outcome, the reply and the reminders are
written in the same transaction that marks it processed.  An unexpected
error postpones the message (backing off) and, after a few tries, records it
as ``failed`` with a reply that says so: nothing is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from barcode.ids import IdFormat
from barcode.ports import PatientIdStore
from forms.model import Action, FormSet
from sms_gateway import ports, replies
from sms_gateway.actions import Context, NotWritten, Outcome, Registrar, Result
from sms_gateway.parser import ParseFailure, ParseResult, Report, parse
from sms_gateway.ports import SmsStore
from sms_gateway.sealing import Sealer
from sms_gateway.senders import Sender, SenderLookup
from sms_gateway.settings import SmsSettings
from sync.auth import Authenticator
from sync.errors import StoreUnavailable, Unauthorized
from sync.replication.context import Caller
from sync.replication.routes import Replication

log = structlog.get_logger("fieldsync.sms")
ACCEPTED = frozenset({Outcome.REGISTERED, Outcome.RECORDED})
# Answered with a notice at most once a day per number (a stranger, a lost or stolen phone).
NOTICES = frozenset({Outcome.UNKNOWN_SENDER, Outcome.LOST_PHONE})
Clock = Callable[[], dt.datetime]
# A gateway's clock is the phone's: trust its receive time only within these bounds.
CLOCK_SLACK = dt.timedelta(days=1)
OLDEST_PLAUSIBLE = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
# Unknown numbers (and lost or stolen phones) get one notice a day, however often they write.
NOTICE_EVERY = dt.timedelta(days=1)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Received:
    """One message as a gateway or provider hands it over."""

    channel: str
    external_id: str
    phone: str
    content: str
    sent_at: dt.datetime | None = None
    received_at: dt.datetime | None = None


@dataclass
class _Item:
    """One message on its way through a processing round."""

    message: ports.StoredIncoming
    content: str
    parsed: ParseResult
    sender: Sender | None = None
    caller: Caller | None = None
    place: str | None = None
    language: str = replies.DEFAULT_LANGUAGE
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def report(self) -> Report | None:
        return self.parsed if isinstance(self.parsed, Report) else None


class SmsService:
    def __init__(
        self,
        sms_store: SmsStore,
        rep: Replication,
        auth: Authenticator,
        forms: FormSet,
        settings: SmsSettings,
        lookup: SenderLookup,
        id_format: IdFormat,
        patient_ids: PatientIdStore,
        clock: Clock = utcnow,
    ) -> None:
        self.store = sms_store
        # This process, as the holder of its claims (the pid tells an operator which one).
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.auth = auth
        self.forms = forms
        self.settings = settings
        self.lookup = lookup
        self.id_format = id_format
        self.patient_ids = patient_ids
        self.clock = clock
        self.sealer = Sealer(rep.parts.vault)
        self.registrar = Registrar(rep, forms, settings)
        self.wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._opening: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Open the queues; with CouchDB away, the server starts anyway (SMS routes answer
        503 meanwhile) and the queues are opened once it answers (:meth:`_open_later`)."""
        try:
            await self.store.open()
        except StoreUnavailable as exc:
            log.warning("sms_store_not_open", reason=exc.reason)
            self._opening = asyncio.create_task(self._open_later())
        with contextlib.suppress(StoreUnavailable):  # keys in a CouchDB away: warmed on use
            await self.sealer.warm()

    async def _open_later(self, every: float = 2.0) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.store.open()
            except StoreUnavailable:
                continue
            log.info("sms_store_open")
            return

    async def close(self) -> None:
        """Stop opening the queues later, if that is still under way."""
        if self._opening is not None:
            self._opening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._opening

    # -- in --------------------------------------------------------------------------------------
    async def receive(self, messages: Sequence[Received]) -> int:
        """Store messages durably (repeats by id are ignored); how many were new."""
        now = self.clock()
        await self.sealer.warm()  # sealed below, on the event loop (nothing to do once warm)
        rows = [self._sealed(m, now) for m in messages]
        new = await self.store.receive(rows, now)
        if new:
            self.wake.set()
        return new

    def _sealed(self, message: Received, now: dt.datetime) -> ports.NewIncoming:
        key = uuid.uuid4().hex
        key_ref, sealed = self.sealer.seal(f"in:{key}", {"content": message.content})
        received = message.received_at
        if received is None or not OLDEST_PLAUSIBLE <= received <= now + CLOCK_SLACK:
            received = now
        return ports.NewIncoming(
            key,
            message.channel,
            message.external_id,
            message.phone,
            key_ref,
            sealed,
            message.sent_at,
            received,
        )

    # -- processing --------------------------------------------------------------------------------
    async def process_pending(self) -> int:
        """Process every stored message that is due and not claimed by another instance;
        how many were taken up."""
        done = 0
        async with self._lock:
            while True:
                batch = await self.store.claim_incoming(
                    self.owner, self.clock(), self.settings.process_batch, self.settings.lease
                )
                if not batch:
                    return done
                await self._round(batch)
                done += len(batch)

    async def _round(self, batch: list[ports.StoredIncoming]) -> None:
        finished: list[tuple[_Item, Result]] = []
        items = []
        for message in batch:
            try:
                items.append(self._read(message))
            except Exception as exc:  # a blob that does not open: postpone, never drop
                await self._postpone(_Item(message, "", _UNREAD), exc, finished)
        await self._identify(items)
        for item in [i for i in items if "lookup_error" in i.extra]:
            items.remove(item)
            await self._postpone(item, item.extra["lookup_error"], finished)
        await self._allocate(items)
        unwritten: list[tuple[_Item, Result]] = []
        for item in items:
            if item.report is not None and self.registrar.reads(item.report):
                await self._flush(unwritten, finished)  # it may read what they create
            try:
                result = await self._carry_out(item)
            except Exception as exc:  # unexpected: postpone, never drop
                await self._postpone(item, exc, finished)
                continue
            (unwritten if result.creates else finished).append((item, result))
        await self._flush(unwritten, finished)
        await self._finish(finished)

    async def _flush(
        self, unwritten: list[tuple[_Item, Result]], finished: list[tuple[_Item, Result]]
    ) -> None:
        """Write the documents the round has created so far: one batch per sender."""
        by_worker: dict[str, list[tuple[_Item, Result]]] = {}
        for item, result in unwritten:
            assert item.caller is not None
            by_worker.setdefault(item.caller.name, []).append((item, result))
        unwritten.clear()
        for group in by_worker.values():
            caller = group[0][0].caller
            assert caller is not None
            docs = [doc for _, result in group for doc in result.creates]
            try:
                refused = await self.registrar.create(caller, docs)
            except Exception as exc:
                for item, _ in group:
                    await self._postpone(item, exc, finished)
                continue
            for item, result in group:
                reasons = [refused[d["_id"]] for d in result.creates if d["_id"] in refused]
                if reasons:
                    item.extra.update(problems=["not_written"], detail="; ".join(reasons))
                    reply = replies.render("not_saved", item.language)
                    result = Result(Outcome.FAILED, reply, item.place)
                finished.append((item, result))

    def _read(self, message: ports.StoredIncoming) -> _Item:
        content = self.sealer.open(f"in:{message.key}", message.key_ref, message.content)
        text = str(content.get("content", ""))
        day = self.settings.window.local_day(message.received_at)
        return _Item(message, text, parse(text, self.forms, day, self.id_format.scheme))

    async def _identify(self, items: list[_Item]) -> None:
        senders: dict[str, Sender | None] = {}
        callers: dict[str, Caller | None] = {}
        for item in items:
            phone = item.message.phone
            try:
                if phone not in senders:
                    senders[phone] = await self.lookup(phone) if phone else None
            except Exception as exc:  # this message only: it is postponed, not the round
                item.extra["lookup_error"] = exc
                continue
            item.sender = senders[phone]
            if item.sender is None:
                continue
            if item.sender.gone is not None:  # no caller: nothing is written in their name
                item.place = item.sender.places[0] if item.sender.places else None
                continue
            worker = item.sender.worker
            if worker not in callers:
                callers[worker] = await self._caller(item.sender)
            item.caller = callers[worker]
            item.place = _place(item.sender, item.caller)
        workers = {i.sender.worker for i in items if i.sender is not None}
        chosen = await self.store.languages(workers)
        for item in items:
            worker = item.sender.worker if item.sender else ""
            item.language = chosen.get(worker, self.settings.language)

    async def _caller(self, sender: Sender) -> Caller | None:
        try:
            return await self.auth.caller_for(sender.worker, sender.device)
        except Unauthorized:
            return None

    async def _allocate(self, items: list[_Item]) -> None:
        """New patients get their IDs recorded on their messages before anything is written."""
        needing = [
            i
            for i in items
            if i.report is not None
            and i.caller is not None
            and i.place is not None
            and i.message.patient_id is None
            and Action.CREATE_PERSON in self._actions(i.report)
        ]
        if not needing:
            return
        # Allocated (and committed) first, then recorded on the messages: a crash in
        # between leaves those IDs unused, and the messages get new ones when taken up
        # again. A gap in the numbers, never an ID on two patients.
        ids = await self.patient_ids.allocate(self.id_format, len(needing), "sms")
        assigned = {i.message.id: pid for i, pid in zip(needing, ids, strict=True)}
        # Another instance that took a message over (its lease ran out) may have recorded
        # an ID first: the recorded one is the message's, ours is a gap.
        carried = await self.store.assign_patient_ids(assigned)
        for item in needing:
            item.extra["patient_id"] = carried.get(item.message.id, assigned[item.message.id])

    def _actions(self, report: Report) -> frozenset[Action]:
        form = self.forms.get(report.code)
        return form.actions if form is not None else frozenset()

    async def _carry_out(self, item: _Item) -> Result:
        language = item.language
        if item.sender is not None and item.sender.gone is not None:
            item.extra["problems"] = [item.sender.gone]
            reply = replies.render("lost_phone", language)
            return Result(Outcome.LOST_PHONE, reply, item.place)
        if item.sender is None or item.caller is None:
            lang = self.settings.language
            return Result(Outcome.UNKNOWN_SENDER, replies.render("unknown_sender", lang))
        if isinstance(item.parsed, ParseFailure):
            reply = replies.failure_reply(item.parsed, self.forms, language)
            return Result(Outcome.INVALID, reply, item.place)
        if item.place is None:
            return Result(Outcome.NO_PLACE, replies.render("no_place", language))
        assert item.report is not None
        reported = item.message.received_at
        ctx = Context(
            message_key=item.message.key,
            phone=item.message.phone,
            caller=item.caller,
            place=item.place,
            language=language,
            reported=reported,
            report_day=self.settings.window.local_day(reported),
            patient_id=item.extra.get("patient_id") or item.message.patient_id,
        )
        try:
            return await self.registrar.carry_out(ctx, item.report)
        except NotWritten as exc:
            item.extra["problems"] = ["not_written"]
            item.extra["detail"] = str(exc)
            return Result(Outcome.FAILED, replies.render("not_saved", language), item.place)

    async def _postpone(
        self, item: _Item, exc: Exception, finished: list[tuple[_Item, Result]]
    ) -> None:
        message = item.message
        retry_at = self.clock() + dt.timedelta(seconds=min(300, 2 ** (message.attempts + 1)))
        attempts = await self.store.postpone(message.id, retry_at)
        with contextlib.suppress(Exception):
            log.error(
                "sms_processing_failed", message=message.id, attempts=attempts, error=repr(exc)
            )
        if attempts >= self.settings.max_processing_attempts:
            item.extra["problems"] = ["error"]
            item.extra["detail"] = repr(exc)
            reply = replies.render("not_saved", item.language)
            finished.append((item, Result(Outcome.FAILED, reply, item.place)))

    async def _finish(self, finished: list[tuple[_Item, Result]]) -> None:
        now = self.clock()
        await self.sealer.warm()  # sealed below, on the event loop (nothing to do once warm)
        done = [self._finished(item, result) for item, result in finished]
        strangers = {i.message.phone for i, r in finished if r.outcome in NOTICES}
        since = now - NOTICE_EVERY
        noticed = await self.store.noticed(strangers, since)
        outgoing = []
        for item, result in finished:
            if not item.message.phone:
                continue  # nobody to answer (a gateway entry without "from"): stored, shown
            if result.outcome in NOTICES:
                if item.message.phone in noticed:
                    continue  # one notice a day: never an SMS loop with an automated sender
                noticed.add(item.message.phone)
            outgoing += self._outgoing(item, result)
        clears = [r.clear_reminders_of for _, r in finished if r.clear_reminders_of]
        await self.store.finish(done, outgoing, clears, now)
        outcomes = Counter(result.outcome.value for _, result in finished)
        with contextlib.suppress(Exception):  # processed and committed: a log cannot undo that
            for item, result in finished:
                if result.outcome not in ACCEPTED:  # never the phone number or the text
                    log.warning(
                        "sms_rejected",
                        message_id=item.message.id,
                        channel=item.message.channel,
                        reason=result.outcome.value,
                        place=result.place,
                    )
            log.info("sms_processed", messages=len(finished), **outcomes)

    def _finished(self, item: _Item, result: Result) -> ports.Finished:
        problems = item.extra.get("problems") or _problems(item.parsed)
        details_ref, details = self.sealer.seal(
            f"details:{item.message.key}",
            {"reply": result.reply, "detail": item.extra.get("detail")},
        )
        report_form = item.parsed.code if item.parsed.code else None
        return ports.Finished(
            incoming_id=item.message.id,
            outcome=result.outcome.value,
            form=report_form,
            worker=item.sender.worker if item.sender else None,
            device=item.sender.device if item.sender else None,
            place=result.place or item.place,
            patient_id=result.patient_id,
            problems=tuple(problems),
            details_ref=details_ref,
            details=details,
            docs=result.docs,
        )

    def _outgoing(self, item: _Item, result: Result) -> list[ports.NewOutgoing]:
        message = item.message
        worker = item.sender.worker if item.sender else None
        place = result.place or item.place
        kind = "notice" if result.outcome in NOTICES else "reply"
        texts = [(f"{message.key}-reply", kind, result.reply, message.received_at)]
        window = self.settings.window
        texts += [
            (f"{message.key}-r{r.contact}", "reminder", text, window.opening(r.day))
            for r, text in result.reminders
        ]
        out = []
        for out_id, kind, text, due in texts:
            key_ref, sealed = self.sealer.seal(f"out:{out_id}", {"content": text})
            out.append(
                ports.NewOutgoing(
                    out_id,
                    message.channel,
                    message.phone,
                    kind,
                    key_ref,
                    sealed,
                    due,
                    message.id,
                    worker,
                    place,
                    result.patient_id,
                )
            )
        return out

    # -- background -----------------------------------------------------------------------------
    async def run_processor(self) -> None:
        """Process stored messages whenever woken, and at least every tick (retries)."""
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that
            # comes as the wake-up does, and the processor would then never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.tick_seconds):
                    await self.wake.wait()
            self.wake.clear()
            try:
                await self.process_pending()
            except Exception:
                with contextlib.suppress(Exception):  # a broken log must not stop the processor
                    log.exception("sms_processor_round_failed")


def _place(sender: Sender, caller: Caller | None) -> str | None:
    """Where the sender's reports belong: their device's place they may write, else their own."""
    if caller is None:
        return None
    for place in (*sender.places, *caller.user.places):
        if caller.place_exists(place) and caller.scope.can_write(place) and place:
            return place
    return None


_UNREAD = ParseFailure(None, ())


def _problems(parsed: ParseResult) -> list[str]:
    if isinstance(parsed, Report):
        return []
    return [f"{e.kind.value}:{e.field}" if e.field else e.kind.value for e in parsed.errors]
