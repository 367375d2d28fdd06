"""The reminder schedule of a registered pregnancy, and the hours messages may go out.

ANC contacts follow the WHO 2016 eight-contact model (weeks 12, 20, 26, 30,
34, 36, 38, 40 of gestation; https://www.who.int/publications/i/item/9789241549912).
A reminder is due on the day its contact week starts and is sent inside the
daytime window of the deployment's time zone, never at night.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

ANC_CONTACT_WEEKS: tuple[int, ...] = (12, 20, 26, 30, 34, 36, 38, 40)


@dataclass(frozen=True)
class Reminder:
    contact: int  # 1-based number of the ANC contact
    weeks: int  # week of gestation the contact is due at
    day: dt.date


def anc_schedule(
    lmp: dt.date, report_day: dt.date, weeks: Sequence[int] = ANC_CONTACT_WEEKS
) -> list[Reminder]:
    """The contacts still ahead on ``report_day`` (past ones are not reminded)."""
    return [
        Reminder(number, week, lmp + dt.timedelta(weeks=week))
        for number, week in enumerate(weeks, start=1)
        if lmp + dt.timedelta(weeks=week) > report_day
    ]


@dataclass(frozen=True)
class SendWindow:
    """Daytime hours ``[start, end)`` in ``zone`` when scheduled messages may be sent."""

    start: dt.time
    end: dt.time
    zone: dt.tzinfo

    def contains(self, moment: dt.datetime) -> bool:
        local = moment.astimezone(self.zone).time()
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end  # a window across midnight

    def opening(self, day: dt.date) -> dt.datetime:
        """The moment the window opens on ``day`` (aware, in UTC)."""
        return dt.datetime.combine(day, self.start, self.zone).astimezone(dt.UTC)

    def next_open(self, moment: dt.datetime) -> dt.datetime:
        """``moment`` when inside the window, else the next opening after it."""
        if self.contains(moment):
            return moment
        day = moment.astimezone(self.zone).date()
        opening = self.opening(day)
        return opening if opening > moment else self.opening(day + dt.timedelta(days=1))

    def local_day(self, moment: dt.datetime) -> dt.date:
        return moment.astimezone(self.zone).date()
