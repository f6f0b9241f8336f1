"""A schedule's run times: start_at + k × interval, months as calendar months.

Kept apart from the rules so the calendar arithmetic (a run on the 31st of a month
lands on the 30th or the 28th of shorter ones) is tested on its own.
"""

from __future__ import annotations

import calendar
import dataclasses
from datetime import datetime, timedelta

UNITS = {"minute": "minutes", "minutes": "minutes", "hour": "hours", "hours": "hours", "day": "days",
         "days": "days", "week": "weeks", "weeks": "weeks", "month": "months", "months": "months"}


def add_months(moment: datetime, months: int) -> datetime:
    """The same day and time `months` calendar months later, on the month's last day when
    the month is shorter (Jan 31 + 1 month = Feb 28 or 29)."""
    year, month0 = divmod(moment.month - 1 + months, 12)
    year += moment.year
    day = min(moment.day, calendar.monthrange(year, month0 + 1)[1])
    return moment.replace(year=year, month=month0 + 1, day=day)


@dataclasses.dataclass(frozen=True)
class Interval:
    amount: int
    unit: str   # minutes, hours, days, weeks or months

    @classmethod
    def of(cls, amount: int | None, unit: str | None) -> "Interval | None":
        """The interval a schedule row describes; None when it is missing or unusable."""
        unit = UNITS.get((unit or "").strip().lower())
        if unit is None or not amount or amount < 1:
            return None
        return cls(int(amount), unit)

    def add(self, moment: datetime, times: int = 1) -> datetime:
        if self.unit == "months":
            return add_months(moment, self.amount * times)
        return moment + timedelta(**{self.unit: self.amount * times})

    def length_at(self, moment: datetime) -> timedelta:
        return self.add(moment) - moment

    def slots_before(self, start: datetime, moment: datetime) -> int:
        """The largest k with start + k × interval <= moment (moment >= start)."""
        if self.unit != "months":
            return (moment - start) // timedelta(**{self.unit: self.amount})
        months = (moment.year - start.year) * 12 + moment.month - start.month
        k = max(months // self.amount, 0)
        while k > 0 and self.add(start, k) > moment:
            k -= 1
        while self.add(start, k + 1) <= moment:
            k += 1
        return k

    def first_at_or_after(self, start: datetime, moment: datetime) -> datetime:
        """The first run time on start's grid at or after `moment`."""
        if moment <= start:
            return start
        k = self.slots_before(start, moment)
        slot = self.add(start, k)
        return slot if slot == moment else self.add(start, k + 1)

    def text(self) -> str:
        unit = self.unit[:-1] if self.amount == 1 else self.unit
        return f"every {self.amount} {unit}"
