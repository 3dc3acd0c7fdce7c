"""HSDS service to FHIR R4 HealthcareService.

Element choices follow the HSD IG map as updated to HSDS 3.x in research/feeds.md section 2.2
(http://hl7.org/fhir/us/hsds/STU1/StructureDefinition-hsds-HealthcareService.html). Choices
the IG leaves open, made here:

* ``active`` is true only for status ``active``; ``temporarily closed`` is inactive with a
  ``notAvailable`` saying so (a resident should not be sent there); an empty status (HSDS
  1.x, where it was optional) counts as active and is reported.
* One HealthcareService per service, not per service_at_location: the sites are its
  ``location`` list, and a site's own schedules join the service's.
* Opening times lose their UTC offset (FHIR ``time`` has none); the offset is said in
  ``availabilityExceptions``.
* The SDOHCC HealthcareService profile is not claimed: it requires a telecom flagged as the
  appointment contact, which HSDS cannot tell.
"""

from __future__ import annotations

from typing import Any

from mappers.hsds.elements import (
    Report,
    code,
    compact,
    contact_points,
    date_or_none,
    phone_points,
    reference,
    text,
)
from mappers.hsds.feed import Feed
from mappers.hsds.schedule import Hours, merge_days, parse_hours
from mappers.hsds.tables import Row, Tables
from mappers.hsds.taxonomy import code_service

__all__ = ["map_service"]

_STATUSES = {"active": True, "inactive": False, "defunct": False, "temporarily closed": False}


def map_service(tables: Tables, feed: Feed, row: Row, report: Report) -> dict[str, Any]:
    """A HealthcareService for an HSDS service row."""
    service_id = row["id"]
    if not row.get("name"):
        report("missing-name", "service has no name")
    codes = code_service(tables, feed, service_id)
    schedules = [parse_hours(schedule) for schedule in _schedules(tables, service_id)]
    if any(hours.unparsed for hours in schedules):
        report("unparsed-schedule", "a schedule time is not a time; its days are kept")
    for term_id in codes.unknown_terms:
        report("unknown-taxonomy-term", f"taxonomy term {term_id or '(empty)'} is not in the feed")
    return compact(
        {
            "resourceType": "HealthcareService",
            "id": feed.resource_id("service", service_id),
            "identifier": [{"system": feed.system("service"), "value": service_id}],
            "active": _active(row, report),
            "providedBy": _provider(tables, feed, row, report),
            "category": codes.category(),
            "type": [coded.concept() for coded in codes.types],
            "location": _locations(tables, feed, service_id, report),
            "name": row.get("name", ""),
            "comment": text(row.get("description", "")),
            "extraDetails": _extra_details(tables, row),
            "telecom": _telecom(tables, row, report),
            "coverageArea": _coverage(tables, service_id),
            "eligibility": _eligibility(tables, row),
            "program": _program(tables, row, report),
            "characteristic": _characteristics(
                row, [coded.concept() for coded in codes.characteristics]
            ),
            "communication": _communication(tables, service_id),
            "availableTime": _available_times(schedules),
            "notAvailable": _not_available(tables, row),
            "availabilityExceptions": _exceptions(schedules),
        }
    )


def _active(row: Row, report: Report) -> bool:
    status = row.get("status", "").lower()
    if not status:
        report("missing-status", "service has no status; mapped as active")
        return True
    if status not in _STATUSES:
        report(
            "unknown-status", f"service status {status!r} is not an HSDS status; mapped as inactive"
        )
        return False
    return _STATUSES[status]


def _provider(tables: Tables, feed: Feed, row: Row, report: Report) -> dict[str, str] | None:
    organization_id = row.get("organization_id", "")
    if not organization_id:
        report("missing-organization", "service names no organization")
        return None
    organization = tables.by_id("organization").get(organization_id)
    if organization is None:
        report("missing-organization", f"organization {organization_id} is not in the feed")
        return None
    resource_id = feed.resource_id("organization", organization_id)
    return reference("Organization", resource_id, organization.get("name", ""))


def _site_links(tables: Tables, service_id: str) -> list[Row]:
    return tables.children("service_at_location", "service_id", service_id)


def _locations(tables: Tables, feed: Feed, service_id: str, report: Report) -> list[dict[str, str]]:
    references: list[dict[str, str]] = []
    for link in _site_links(tables, service_id):
        location_id = link.get("location_id", "")
        location = tables.by_id("location").get(location_id)
        if location is None:
            report(
                "missing-location",
                f"service_at_location {link.get('id', '')} names no known location",
            )
            continue
        ref = reference(
            "Location", feed.resource_id("location", location_id), location.get("name", "")
        )
        if ref not in references:
            references.append(ref)
    return references


def _schedules(tables: Tables, service_id: str) -> list[Row]:
    """The service's schedules and those of its sites (service_at_location)."""
    rows = list(tables.children("schedule", "service_id", service_id))
    for link in _site_links(tables, service_id):
        if link.get("id"):
            rows += [
                row
                for row in tables.children("schedule", "service_at_location_id", link["id"])
                if row.get("service_id") != service_id
            ]
    return rows


def _available_times(schedules: list[Hours]) -> list[dict[str, object]]:
    times = [hours.available_time() for hours in schedules]
    return merge_days([available for available in times if available is not None])


def _exceptions(schedules: list[Hours]) -> str:
    """Schedule words FHIR has no element for: descriptions, monthly rules, UTC offsets."""
    notes: list[str] = []
    for hours in schedules:
        for note in (hours.text, f"Times are UTC{hours.offset}." if hours.offset else None):
            if note and text(note) not in notes:
                notes.append(text(note))
    return "\n".join(notes)


def _not_available(tables: Tables, row: Row) -> list[dict[str, Any]]:
    periods: list[dict[str, Any]] = []
    status = row.get("status", "").lower()
    if row.get("alert"):
        periods.append({"description": text(row["alert"])})
    elif status == "temporarily closed":
        periods.append({"description": "Temporarily closed"})
    for holiday in tables.children("holiday_schedule", "service_id", row["id"]):
        if holiday.get("closed", "true").lower() not in ("true", "1", "yes"):
            continue
        start, end = holiday.get("start_date", ""), holiday.get("end_date", "")
        during = compact({"start": date_or_none(start), "end": date_or_none(end)})
        if during:
            periods.append({"description": "Closed", "during": during})
        elif start or end:
            periods.append({"description": f"Closed {start} - {end}".strip(" -")})
    return periods


def _telecom(tables: Tables, row: Row, report: Report) -> list[dict[str, Any]]:
    telecom = phone_points(tables, "service_id", row["id"], report, only_own=False)
    telecom += contact_points(email=row.get("email", ""), url=row.get("url", ""))
    for extra in tables.children("url", "service_id", row["id"]):
        point = {"system": "url", "value": extra.get("url", ""), "use": "work"}
        if point["value"] and point not in telecom:
            telecom.append(point)
    return telecom


def _coverage(tables: Tables, service_id: str) -> list[dict[str, str]]:
    """Service areas by name: a display-only reference (HSD's choice); extents are not kept."""
    areas = []
    for area in tables.children("service_area", "service_id", service_id):
        name = area.get("name") or area.get("description", "")
        if name and {"display": name} not in areas:
            areas.append({"display": name})
    return areas


def _eligibility(tables: Tables, row: Row) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    if row.get("eligibility_description"):
        entries.append({"comment": text(row["eligibility_description"])})
    for item in tables.children("eligibility", "service_id", row["id"]):
        words = item.get("eligibility") or item.get("description", "")
        if words:
            entries.append({"comment": text(words)})
    ages = []
    if row.get("minimum_age"):
        ages.append(f"Minimum age: {row['minimum_age']}")
    if row.get("maximum_age"):
        ages.append(f"Maximum age: {row['maximum_age']}")
    if ages:
        entries.append({"code": {"text": "Age"}, "comment": "; ".join(ages)})
    documents = [
        item["document"]
        for item in tables.children("required_document", "service_id", row["id"])
        if item.get("document")
    ]
    if documents:
        entries.append({"code": {"text": "Required documents"}, "comment": "; ".join(documents)})
    return entries


def _program(tables: Tables, row: Row, report: Report) -> list[dict[str, str]]:
    program_id = row.get("program_id", "")
    if not program_id:
        return []
    program = tables.by_id("program").get(program_id)
    if program is None or not program.get("name"):
        report("unlinkable-row", f"program {program_id} is not in the feed")
        return []
    return [{"text": program["name"]}]


def _characteristics(row: Row, coded: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if row.get("interpretation_services"):
        coded = coded + [{"text": f"Interpretation services: {row['interpretation_services']}"}]
    return coded


def _communication(tables: Tables, service_id: str) -> list[dict[str, Any]]:
    """Languages as BCP-47 codings when the feed gives a code (3.x), else as text (1.x)."""
    languages: list[dict[str, Any]] = []
    for item in tables.children("language", "service_id", service_id):
        language, name = code(item.get("code", "")), item.get("name", "")
        if language:
            concept: dict[str, Any] = {
                "coding": [
                    compact({"system": "urn:ietf:bcp:47", "code": language, "display": name})
                ]
            }
        elif name:
            concept = {"text": name}
        else:
            continue
        if concept not in languages:
            languages.append(concept)
    return languages


def _extra_details(tables: Tables, row: Row) -> str:
    """What HSDS says about access and cost that FHIR has no element for, as markdown."""
    service_id = row["id"]
    parts = [
        ("Also known as", row.get("alternate_name", "")),
        ("How to apply", row.get("application_process", "")),
        ("Fees", row.get("fees_description", "") or row.get("fees", "")),
        ("Wait time", row.get("wait_time", "")),
        ("Accreditations", row.get("accreditations", "")),
        ("Licenses", row.get("licenses", "")),
    ]
    for option in tables.children("cost_option", "service_id", service_id):
        amount = " ".join(
            part for part in (option.get("amount", ""), option.get("currency", "")) if part
        )
        words = ", ".join(
            part
            for part in (option.get("option", ""), amount, option.get("amount_description", ""))
            if part
        )
        parts.append(("Cost", words))
    for funding in tables.children("funding", "service_id", service_id):
        parts.append(("Funding source", funding.get("source", "")))
    return "\n\n".join(f"{label}: {text(value)}" for label, value in parts if value)
