"""HSDS schedules to FHIR opening hours.

HSDS 3.x schedules are iCalendar-style rules (``freq``, ``byday``, ``opens_at`` with a UTC
offset, https://docs.openreferral.org/en/latest/hsds/schema_reference.html#schedule); 1.x rows
give a ``weekday`` and times such as ``8:00am``. FHIR R4 ``availableTime`` and
``hoursOfOperation`` hold days of the week and a local ``time`` with no offset and no monthly
rules, so an offset is stripped and said in words, and a rule FHIR cannot express (``2MO``,
MONTHLY) is kept only as text for ``availabilityExceptions``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mappers.hsds.tables import Row

__all__ = ["Hours", "merge_days", "parse_hours", "parse_time"]

_DAYS = {"MO": "mon", "TU": "tue", "WE": "wed", "TH": "thu", "FR": "fri", "SA": "sat", "SU": "sun"}
_WEEKDAYS = {
    "monday": "mon",
    "tuesday": "tue",
    "wednesday": "wed",
    "thursday": "thu",
    "friday": "fri",
    "saturday": "sat",
    "sunday": "sun",
}
# HSDS 1.x numbered weekdays from 1 = Monday, as in its sample package.
_NUMBERED = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEK = list(_DAYS.values())
_TIME = re.compile(
    r"^(\d{1,2})(?::(\d{2}))?(?::(\d{2}))?\s*([ap]\.?m\.?)?\s*(Z|[+-]\d{2}:?\d{2})?$", re.I
)


@dataclass(frozen=True, slots=True)
class Hours:
    """One schedule row in FHIR terms: days and times, or the words it could only be."""

    days: tuple[str, ...]
    opens: str | None
    closes: str | None
    offset: str | None
    text: str | None
    unparsed: bool = False  # a time was given that is not a time

    def available_time(self) -> dict[str, object] | None:
        """A HealthcareService.availableTime, or None when the row names no day."""
        if not self.days:
            return None
        available: dict[str, object] = {"daysOfWeek": list(self.days)}
        if self.opens and self.closes and self.opens < self.closes:
            available["availableStartTime"] = self.opens
            available["availableEndTime"] = self.closes
        elif self.opens == "00:00:00" and self.closes in ("00:00:00", "23:59:00", "23:59:59"):
            available["allDay"] = True
        return available

    def hours_of_operation(self) -> dict[str, object] | None:
        """A Location.hoursOfOperation, or None when the row names no day."""
        available = self.available_time()
        if available is None:
            return None
        hours: dict[str, object] = {"daysOfWeek": available["daysOfWeek"]}
        if "allDay" in available:
            hours["allDay"] = True
        if "availableStartTime" in available:
            hours["openingTime"] = available["availableStartTime"]
            hours["closingTime"] = available["availableEndTime"]
        return hours


def merge_days(entries: list[dict[str, object]]) -> list[dict[str, object]]:
    """Entries with the same times as one entry listing all their days, Monday first.

    1.x feeds give one row per weekday: Monday to Friday 9 to 5 becomes one entry.
    """
    merged: dict[tuple[tuple[str, object], ...], list[str]] = {}
    for entry in entries:
        key = tuple(sorted((k, v) for k, v in entry.items() if k != "daysOfWeek"))
        days = merged.setdefault(key, [])
        listed = entry.get("daysOfWeek")
        if isinstance(listed, list):
            days += [day for day in listed if day not in days]
    return [
        {"daysOfWeek": sorted(days, key=_WEEK.index), **dict(key)} for key, days in merged.items()
    ]


def parse_time(text: str) -> tuple[str, str | None] | None:
    """``("HH:MM:SS", offset or None)`` from ``09:00``, ``09:00:00-05:00`` or ``8:00am``."""
    match = _TIME.match(text.strip())
    if match is None:
        return None
    hour, minute, second = int(match[1]), int(match[2] or 0), int(match[3] or 0)
    meridiem = (match[4] or "").lower().replace(".", "")
    if meridiem:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if meridiem == "pm" else 0)
    if hour > 23 or minute > 59 or second > 59:
        return None
    offset = match[5]
    if offset and offset.upper() != "Z" and ":" not in offset:
        offset = f"{offset[:3]}:{offset[3:]}"
    return f"{hour:02d}:{minute:02d}:{second:02d}", offset.upper() if offset else None


def parse_hours(row: Row) -> Hours:
    """The Hours of one 3.x (or renamed 1.x) schedule row; never raises."""
    opens = parse_time(row.get("opens_at", "")) if row.get("opens_at") else None
    closes = parse_time(row.get("closes_at", "")) if row.get("closes_at") else None
    days = _days(row)
    text = row.get("description") or None
    if days is None:
        days = ()
        text = text or _rule_text(row)
    offset = (opens and opens[1]) or (closes and closes[1]) or None
    unparsed = bool(row.get("opens_at")) and opens is None
    unparsed = unparsed or (bool(row.get("closes_at")) and closes is None)
    return Hours(
        days=days,
        opens=opens[0] if opens else None,
        closes=closes[0] if closes else None,
        offset=offset,
        text=text,
        unparsed=unparsed,
    )


def _days(row: Row) -> tuple[str, ...] | None:
    """The weekdays of a weekly rule; None for a rule FHIR's daysOfWeek cannot hold."""
    weekday = row.get("weekday", "").strip().lower()
    if weekday:
        if weekday in _WEEKDAYS:
            return (_WEEKDAYS[weekday],)
        if weekday.isdigit() and 1 <= int(weekday) <= 7:
            return (_NUMBERED[int(weekday) - 1],)
        return None
    freq = row.get("freq", "").upper()
    if freq not in ("", "WEEKLY") or row.get("interval", "") not in ("", "1"):
        return None
    byday = row.get("byday", "").upper()
    if not byday:
        return None
    days = set()
    for part in byday.replace(" ", "").split(","):
        if part not in _DAYS:
            return None  # "2MO", "-1FR": a monthly position
        days.add(_DAYS[part])
    return tuple(day for day in _WEEK if day in days)


def _rule_text(row: Row) -> str | None:
    parts = [row.get(key, "") for key in ("freq", "byday", "opens_at", "closes_at")]
    words = " ".join(part for part in parts if part)
    return words or None
