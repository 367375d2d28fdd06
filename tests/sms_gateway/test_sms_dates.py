"""LMP and EDD, the ANC reminder schedule, and the daytime sending window."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from sms_gateway.pregnancy import dates_for, edd_from_lmp, lmp_from_weeks, weeks_pregnant
from sms_gateway.reminders import ANC_CONTACT_WEEKS, Reminder, SendWindow, anc_schedule

D = dt.date


@pytest.mark.parametrize(
    ("report_day", "weeks", "lmp", "edd"),
    [
        (D(2024, 5, 1), 3, D(2024, 4, 10), D(2025, 1, 15)),
        (D(2024, 5, 1), 1, D(2024, 4, 24), D(2025, 1, 29)),
        (D(2024, 5, 1), 42, D(2023, 7, 12), D(2024, 4, 17)),
        (D(2024, 3, 1), 4, D(2024, 2, 2), D(2024, 11, 8)),  # across 29 February
        (D(2025, 1, 3), 2, D(2024, 12, 20), D(2025, 9, 26)),  # across a new year
    ],
)
def test_lmp_and_edd(report_day: dt.date, weeks: int, lmp: dt.date, edd: dt.date) -> None:
    assert lmp_from_weeks(report_day, weeks) == lmp
    assert edd_from_lmp(lmp) == edd == lmp + dt.timedelta(days=280)
    assert dates_for(report_day, weeks).lmp == lmp
    assert weeks_pregnant(lmp, report_day) == weeks


def test_every_contact_is_ahead_early_in_pregnancy() -> None:
    lmp = D(2024, 4, 10)
    schedule = anc_schedule(lmp, D(2024, 5, 1))
    assert [r.weeks for r in schedule] == list(ANC_CONTACT_WEEKS)
    assert schedule[0] == Reminder(1, 12, D(2024, 7, 3))
    assert schedule[-1] == Reminder(8, 40, lmp + dt.timedelta(weeks=40))


def test_past_contacts_are_not_reminded() -> None:
    lmp = D(2024, 1, 1)
    report_day = lmp + dt.timedelta(weeks=26)  # contact 3 is due today: not ahead
    assert [(r.contact, r.weeks) for r in anc_schedule(lmp, report_day)] == [
        (4, 30),
        (5, 34),
        (6, 36),
        (7, 38),
        (8, 40),
    ]
    assert anc_schedule(lmp, lmp + dt.timedelta(weeks=41)) == []
    assert [r.weeks for r in anc_schedule(lmp, lmp, weeks=(8, 16))] == [8, 16]


NAIROBI = zoneinfo.ZoneInfo("Africa/Nairobi")  # UTC+3
DAY = SendWindow(dt.time(8), dt.time(18), NAIROBI)


def utc(hour: int, minute: int = 0, day: int = 1) -> dt.datetime:
    return dt.datetime(2024, 5, day, hour, minute, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("moment", "inside"),
    [
        (utc(4, 59), False),  # 07:59 in Nairobi
        (utc(5, 0), True),  # 08:00
        (utc(14, 59), True),  # 17:59
        (utc(15, 0), False),  # 18:00
        (utc(23), False),
    ],
)
def test_window_is_local_daytime(moment: dt.datetime, inside: bool) -> None:
    assert DAY.contains(moment) is inside


def test_next_opening() -> None:
    assert DAY.opening(D(2024, 5, 2)) == utc(5, day=2)
    assert DAY.next_open(utc(10)) == utc(10)
    assert DAY.next_open(utc(2)) == utc(5)  # before dawn: this morning
    assert DAY.next_open(utc(20)) == utc(5, day=2)  # evening: tomorrow morning
    assert DAY.local_day(utc(22)) == D(2024, 5, 2)  # 01:00 next day in Nairobi


def test_a_window_across_midnight() -> None:
    night = SendWindow(dt.time(22), dt.time(6), dt.UTC)
    assert night.contains(utc(23)) and night.contains(utc(3))
    assert not night.contains(utc(12))
