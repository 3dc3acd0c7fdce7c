"""HSDS organization and location to FHIR R4 Organization and Location.

Element choices follow the HSD IG map as updated to HSDS 3.x in research/feeds.md section 2.2
(http://hl7.org/fhir/us/hsds/STU1/). Coordinates are range-checked before they become
``position``: real feeds and the spec's own example carry impossible ones.
"""

from __future__ import annotations

import math
from typing import Any

from mappers.hsds.elements import Report, compact, contact_points, phone_points, reference, text
from mappers.hsds.feed import Feed
from mappers.hsds.schedule import merge_days, parse_hours
from mappers.hsds.tables import Row, Tables

__all__ = ["SDOHCC_LOCATION", "US_CORE_ORGANIZATION", "map_location", "map_organization"]

SDOHCC_LOCATION = "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/SDOHCC-Location"
US_CORE_ORGANIZATION = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-organization"
_ORG_DESCRIPTION = (
    "http://hl7.org/fhir/us/davinci-pdex-plan-net/StructureDefinition/org-description"
)
_ACCESSIBILITY = "http://hl7.org/fhir/us/davinci-pdex-plan-net/StructureDefinition/accessibility"
_EIN_SYSTEM = "urn:oid:2.16.840.1.113883.4.4"
_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
_ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"


def map_organization(tables: Tables, feed: Feed, row: Row, report: Report) -> dict[str, Any]:
    """An Organization for an HSDS organization row (HSDOrganization's elements)."""
    org_id = row["id"]
    parent_id = row.get("parent_organization_id", "")
    part_of = None
    if parent_id and parent_id != org_id:
        if parent_id in tables.by_id("organization"):
            part_of = reference("Organization", feed.resource_id("organization", parent_id))
        else:
            report(
                "missing-parent-organization", f"parent organization {parent_id} is not in the feed"
            )
    name = row.get("name", "")
    if not name:
        report("missing-name", "organization has no name")
    telecom = phone_points(tables, "organization_id", org_id, report, only_own=True)
    telecom += contact_points(email=row.get("email", ""), url=row.get("website", ""))
    description = text(row.get("description", ""))
    organization = compact(
        {
            "resourceType": "Organization",
            "id": feed.resource_id("organization", org_id),
            "meta": {"profile": [US_CORE_ORGANIZATION]} if name else None,
            "extension": [{"url": _ORG_DESCRIPTION, "valueString": description}]
            if description
            else None,
            "identifier": [{"system": feed.system("organization"), "value": org_id}]
            + _organization_identifiers(tables, row),
            "active": True,
            "name": name,
            "alias": [row["alternate_name"]] if row.get("alternate_name") else None,
            "telecom": telecom,
            "address": _organization_addresses(tables, org_id),
            "partOf": part_of,
            "contact": _contacts(tables, org_id),
        }
    )
    return organization


def _organization_addresses(tables: Tables, org_id: str) -> list[dict[str, Any]] | None:
    """The addresses of the organization's own locations (HSDS keeps addresses on locations),
    so that an Organization is found by city (``address-city``); each address once."""
    addresses: list[dict[str, Any]] = []
    for location in tables.children("location", "organization_id", org_id):
        address, _ = _address(tables, location.get("id", ""))
        if address and address not in addresses:
            addresses.append(address)
    return addresses or None


def _organization_identifiers(tables: Tables, row: Row) -> list[dict[str, Any]]:
    identifiers = []
    for item in tables.children("organization_identifier", "organization_id", row["id"]):
        value = item.get("identifier", "")
        if not value:
            continue
        scheme = item.get("identifier_scheme", "")
        if scheme.upper() == "US-EIN":
            identifiers.append(_ein(value))
        else:
            identifiers.append(
                compact(
                    {
                        "type": {"text": item.get("identifier_type", "")}
                        if item.get("identifier_type")
                        else None,
                        "system": f"https://org-id.guide/list/{scheme}" if scheme else None,
                        "value": value,
                    }
                )
            )
    if row.get("tax_id") and not any(ident.get("system") == _EIN_SYSTEM for ident in identifiers):
        identifiers.append(_ein(row["tax_id"]))  # HSDS 1.x-2.x, deprecated in 3.0
    return identifiers


def _ein(value: str) -> dict[str, Any]:
    return {
        "use": "official",
        "type": {"coding": [{"system": _V2_0203, "code": "TAX"}]},
        "system": _EIN_SYSTEM,
        "value": value,
    }


def _contacts(tables: Tables, org_id: str) -> list[dict[str, Any]]:
    contacts = []
    for row in tables.children("contact", "organization_id", org_id):
        if row.get("service_id") or row.get("location_id") or row.get("service_at_location_id"):
            continue
        telecom = contact_points(email=row.get("email", ""))
        contacts.append(
            compact(
                {
                    "purpose": {"text": row["title"]} if row.get("title") else None,
                    "name": {"text": row["name"]} if row.get("name") else None,
                    "telecom": telecom,
                }
            )
        )
    return [contact for contact in contacts if contact]


def map_location(tables: Tables, feed: Feed, row: Row, report: Report) -> dict[str, Any]:
    """A Location for an HSDS location row; claims SDOHCC-Location only with name and address."""
    location_id = row["id"]
    virtual = row.get("location_type", "").lower() == "virtual"
    address, confidential = _address(tables, location_id) if not virtual else (None, False)
    position = None if virtual or confidential else _position(feed, row, report)
    organization_id = row.get("organization_id", "")
    managing = None
    if organization_id:
        if organization_id in tables.by_id("organization"):
            managing = reference("Organization", feed.resource_id("organization", organization_id))
        else:
            report("missing-organization", f"organization {organization_id} is not in the feed")
    name = row.get("name", "")
    if not name:
        report("missing-name", "location has no name")
    telecom = phone_points(tables, "location_id", location_id, report, only_own=False)
    if virtual:
        telecom += contact_points(url=row.get("url", ""))
    identifiers = [{"system": feed.system("location"), "value": location_id}]
    if row.get("external_identifier"):
        identifiers.append(
            compact(
                {
                    "type": {"text": row.get("external_identifier_type", "")}
                    if row.get("external_identifier_type")
                    else None,
                    "value": row["external_identifier"],
                }
            )
        )
    return compact(
        {
            "resourceType": "Location",
            "id": feed.resource_id("location", location_id),
            "meta": {"profile": [SDOHCC_LOCATION]} if name and address else None,
            "extension": _accessibility(tables, row),
            "identifier": identifiers,
            "status": "active",
            "name": name,
            "alias": [row["alternate_name"]] if row.get("alternate_name") else None,
            "description": text(row.get("description", "")),
            "mode": "instance",
            "physicalType": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/location-physical-type",
                        "code": "vi",
                        "display": "Virtual",
                    }
                ]
            }
            if virtual
            else None,
            "telecom": telecom,
            "address": address,
            "position": position,
            "managingOrganization": managing,
            "hoursOfOperation": _hours(tables, location_id),
        }
    )


def _address(tables: Tables, location_id: str) -> tuple[dict[str, Any] | None, bool]:
    """The location's physical address (else postal), and whether it is confidential.

    A confidential site (a domestic-violence shelter) publishes "Confidential" as its street:
    the street is dropped, the city kept, and the caller leaves out the position.
    """
    rows = tables.children("address", "location_id", location_id)
    usable = [
        row
        for row in rows
        if row.get("address_type", "physical").lower() in ("physical", "postal", "")
    ]
    if not usable:
        return None, False
    usable.sort(key=lambda row: row.get("address_type", "physical").lower() != "physical")
    row = usable[0]
    lines = [row.get(f"address_{n}", "") for n in (1, 2, 3, 4)]
    confidential = any(line.lower() == "confidential" for line in lines)
    lines = [line for line in lines if line and line.lower() != "confidential"]
    kind = row.get("address_type", "").lower()
    address = compact(
        {
            "use": "work",
            "type": kind if kind in ("physical", "postal") else "physical",
            "line": lines,
            "city": row.get("city", ""),
            "district": row.get("region", ""),
            "state": row.get("state_province", ""),
            "postalCode": row.get("postal_code", ""),
            "country": row.get("country", ""),
        }
    )
    has_place = any(key in address for key in ("line", "city", "state", "postalCode"))
    return (address if has_place else None), confidential


def _position(feed: Feed, row: Row, report: Report) -> dict[str, float] | None:
    """WGS84 ``position`` when both coordinates are present and possible; else a report."""
    raw_lat, raw_lon = row.get("latitude", ""), row.get("longitude", "")
    if not raw_lat and not raw_lon:
        report("no-coordinates", "location has no latitude/longitude")
        return None
    try:
        latitude, longitude = float(raw_lat), float(raw_lon)
    except ValueError:
        report("invalid-coordinates", "latitude/longitude missing or not numbers")
        return None
    if not (math.isfinite(latitude) and math.isfinite(longitude)):
        report("invalid-coordinates", "latitude/longitude not finite")
        return None
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        report("invalid-coordinates", "latitude/longitude outside WGS84 range")
        return None
    if latitude == 0 and longitude == 0:
        report("invalid-coordinates", "latitude/longitude are 0,0 (a placeholder)")
        return None
    if feed.bounds is not None and not feed.bounds.contains(latitude, longitude):
        report("outside-area", "coordinates are outside the feed's area (kept)")
    return {"longitude": longitude, "latitude": latitude}


def _accessibility(tables: Tables, row: Row) -> list[dict[str, Any]]:
    """Plan-Net accessibility extensions, text only (HSDS gives free text, not its codes)."""
    notes = []
    for item in tables.children("accessibility", "location_id", row["id"]):
        words = "; ".join(
            part for part in (item.get("description", ""), item.get("details", "")) if part
        )
        if words:
            notes.append(words)
    if row.get("transportation"):
        notes.append(f"Transportation: {row['transportation']}")
    return [{"url": _ACCESSIBILITY, "valueCodeableConcept": {"text": note}} for note in notes]


def _hours(tables: Tables, location_id: str) -> list[dict[str, Any]]:
    """Hours from the schedules that belong to the location itself, not to a service there."""
    hours = []
    for row in tables.children("schedule", "location_id", location_id):
        if row.get("service_id") or row.get("service_at_location_id"):
            continue
        opening = parse_hours(row).hours_of_operation()
        if opening is not None:
            hours.append(opening)
    return merge_days(hours)
