"""FHIR data types built from HSDS rows, shared by the Organization, Location and service maps."""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from typing import Any

from mappers.hsds.tables import Row, Tables

__all__ = [
    "Report",
    "TelecomProblem",
    "code",
    "compact",
    "contact_points",
    "date_or_none",
    "phone_points",
    "phone_telecom",
    "reference",
    "text",
    "uri_or_none",
]

# Reports a problem of the record being mapped: (code, message).
Report = Callable[[str, str], None]

# RFC 6350 phone types (HSDS phone.type) -> ContactPoint.system (HSD IG map).
_PHONE_SYSTEMS = {
    "": "phone",
    "voice": "phone",
    "cell": "phone",
    "fax": "fax",
    "pager": "pager",
    "text": "sms",
    "textphone": "sms",
    "video": "other",
}
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\s]+")
_DATE = re.compile(r"(?!0000)\d{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?)?")


class TelecomProblem(ValueError):
    """A phone row that gives no number."""


def compact(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` without empty members: R4 JSON forbids empty strings, arrays and objects."""
    return {key: item for key, item in value.items() if item not in (None, "", [], {})}


def text(value: str) -> str:
    """Feed text as FHIR text: literal ``\\n`` escapes (Miami's export) become line breaks."""
    return value.replace("\\r\\n", "\n").replace("\\n", "\n").strip()


def code(value: str) -> str:
    """A feed's code as a FHIR ``code``: no leading, trailing or repeated whitespace."""
    return " ".join(value.split())


def uri_or_none(value: str) -> str | None:
    """``value`` if it can be a FHIR ``uri`` (a scheme, no whitespace), else None."""
    return value if _URI.fullmatch(value) else None


def date_or_none(value: str) -> str | None:
    """``value`` if it is a FHIR date (YYYY, YYYY-MM, YYYY-MM-DD), else None."""
    if not _DATE.fullmatch(value):
        return None
    try:
        if len(value) == 10:
            datetime.date.fromisoformat(value)
    except ValueError:
        return None
    return value


def reference(resource_type: str, resource_id: str, display: str = "") -> dict[str, str]:
    return compact({"reference": f"{resource_type}/{resource_id}", "display": display})


def phone_telecom(row: Row) -> dict[str, str]:
    """A ContactPoint for an HSDS phone; the extension goes into the value (" x123")."""
    number = row.get("number", "")
    if not number:
        raise TelecomProblem("phone has no number")
    extension = row.get("extension", "")
    system = _PHONE_SYSTEMS.get(row.get("type", "").lower(), "other")
    value = f"{number} x{extension}" if extension else number
    return {"system": system, "value": value, "use": "work"}


def phone_points(
    tables: Tables, key: str, parent_id: str, report: Report, *, only_own: bool
) -> list[dict[str, Any]]:
    """ContactPoints of the parent's phones; a contact's phones stay with the contact.

    ``only_own`` keeps only phones that name no service or location besides the parent: an
    organization's main lines, not every line of its programmes.
    """
    telecom: list[dict[str, Any]] = []
    for row in tables.children("phone", key, parent_id):
        if row.get("contact_id"):
            continue
        if only_own and (
            row.get("service_id") or row.get("location_id") or row.get("service_at_location_id")
        ):
            continue
        try:
            point = phone_telecom(row)
        except TelecomProblem:
            report("empty-required-field", f"phone {row.get('id', '')} has no number")
            continue
        if point not in telecom:
            telecom.append(point)
    return telecom


def contact_points(*, email: str = "", url: str = "") -> list[dict[str, Any]]:
    points = []
    if email:
        points.append({"system": "email", "value": email, "use": "work"})
    if url:
        points.append({"system": "url", "value": url, "use": "work"})
    return points
