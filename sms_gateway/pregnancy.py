"""Pregnancy dates from a registration: LMP and EDD (Naegele's rule).

    LMP = report day - weeks since the last menstrual period
    EDD = LMP + 280 days

https://en.wikipedia.org/wiki/Naegele%27s_rule
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

GESTATION_DAYS = 280


@dataclass(frozen=True)
class PregnancyDates:
    lmp: dt.date
    edd: dt.date


def lmp_from_weeks(report_day: dt.date, weeks: int) -> dt.date:
    return report_day - dt.timedelta(weeks=weeks)


def edd_from_lmp(lmp: dt.date) -> dt.date:
    return lmp + dt.timedelta(days=GESTATION_DAYS)


def dates_for(report_day: dt.date, weeks: int) -> PregnancyDates:
    lmp = lmp_from_weeks(report_day, weeks)
    return PregnancyDates(lmp, edd_from_lmp(lmp))


def weeks_pregnant(lmp: dt.date, day: dt.date) -> int:
    """Completed weeks of gestation on ``day``."""
    return (day - lmp).days // 7
