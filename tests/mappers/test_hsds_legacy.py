"""Older HSDS generations: the fictional 1.1 sample package and 2.0.1 field names."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from mappers.hsds import Feed, MappingResult, map_directory
from mappers.hsds.crosswalk import SDOHCC_SYSTEM
from profiles.models import validate_resource

SAMPLE_11 = (
    Path(__file__).resolve().parents[2]
    / ".."
    / "shared"
    / "feeds"
    / "hsds"
    / "sample-hsds-1.1"
    / "all_resources"
)
FEED = Feed("legacy", base="https://211.example.org/hsds")


def _resource(result: MappingResult, hsds_object: str, feed_id: str) -> dict[str, Any]:
    return next(
        item.resource
        for item in result.resources
        if item.hsds_object == hsds_object and item.feed_id == feed_id
    )


@pytest.mark.skipif(
    not SAMPLE_11.is_dir(), reason=f"sample-hsds-1.1 is not at {SAMPLE_11} (../shared is absent)"
)
def test_sample_hsds_1_1() -> None:
    result = map_directory(SAMPLE_11, feed=FEED)
    assert result.summary()["resources"] == {
        "Organization": 10,
        "Location": 10,
        "HealthcareService": 13,
    }
    for item in result.resources:
        validate_resource(item.resource)
    service = _resource(result, "service", "c89eb05c-62dd-4b64-b494-0cc347b6ea7f")
    # regular_schedules: numbered weekdays (1 = Monday), merged into one entry.
    assert service["availableTime"] == [
        {
            "daysOfWeek": ["mon", "tue", "wed"],
            "availableStartTime": "09:00:00",
            "availableEndTime": "17:00:00",
        }
    ]
    # holiday_schedules, eligibility, 1.x languages by name, service_areas.service_area.
    assert service["notAvailable"] == [
        {"description": "Closed", "during": {"start": "2019-12-24", "end": "2019-12-26"}}
    ]
    assert {"comment": "adult"} in service["eligibility"]
    assert service["communication"] == [{"text": "English"}, {"text": "Spanish"}]
    assert service["coverageArea"] == [{"display": "Sample service area"}]
    location = _resource(result, "location", "30b83c60-64a1-11e6-8b77-86f30ca893d3")
    assert location["address"]["line"] == ["Address 1", "Address 2"]  # physical over postal
    assert location["address"]["type"] == "physical"
    organization = _resource(result, "organization", "1899600a-649c-11e6-8b77-86f30ca893d3")
    assert {"system": "url", "value": "http://example.com", "use": "work"} in organization[
        "telecom"
    ]
    assert any(ident.get("value") == "574374770" for ident in organization["identifier"])


_TABLES_201: dict[str, tuple[str, list[str], list[list[str]]]] = {
    "organization": (
        "organizations.csv",
        ["id", "name", "alternate_name", "description", "email", "url", "tax_status", "tax_id"],
        [
            [
                "o1",
                "Example Pantry Network",
                "",
                "Pantries",
                "info@pantry.example.org",
                "https://pantry.example.org",
                "",
                "",
            ]
        ],
    ),
    "service": (
        "services.csv",
        ["id", "organization_id", "program_id", "name", "description", "status", "fees"],
        [["s1", "o1", "p1", "Weekend Pantry", "Groceries", "active", "None"]],
    ),
    "program": (
        "programs.csv",
        ["id", "organization_id", "name", "alternate_name"],
        [["p1", "o1", "Food Access", ""]],
    ),
    "location": (
        "locations.csv",
        [
            "id",
            "organization_id",
            "name",
            "alternate_name",
            "description",
            "transportation",
            "latitude",
            "longitude",
        ],
        [
            ["l1", "o1", "Main Site", "", "", "", "38.2", "-85.7"],
            ["l2", "o1", "Example Annex", "", "", "", "100", "101"],
        ],
    ),
    "service_at_location": (
        "services_at_location.csv",
        ["id", "service_id", "location_id", "description"],
        [["sl1", "s1", "l1", ""], ["sl2", "s1", "l2", ""]],
    ),
    "physical_address": (
        "physical_addresses.csv",
        [
            "id",
            "location_id",
            "attention",
            "address_1",
            "address_2",
            "address_3",
            "address_4",
            "city",
            "region",
            "state_province",
            "postal_code",
            "country",
        ],
        [["a1", "l1", "", "1 Sample St", "", "", "", "Louisville", "", "KY ", "40202", "US"]],
    ),
    "postal_address": (
        "postal_addresses.csv",
        [
            "id",
            "location_id",
            "attention",
            "address_1",
            "address_2",
            "address_3",
            "address_4",
            "city",
            "region",
            "state_province",
            "postal_code",
            "country",
        ],
        [["a2", "l2", "", "PO Box 1", "", "", "", "Louisville", "", "KY", "40201", "US"]],
    ),
    "phone": (
        "phones.csv",
        [
            "id",
            "location_id",
            "service_id",
            "organization_id",
            "contact_id",
            "service_at_location_id",
            "number",
            "extension",
            "type",
            "language",
            "description",
            "department",
        ],
        [["ph1", "", "s1", "", "", "", "502-555-0199", "", "fax", "", "", ""]],
    ),
    "schedule": (
        "schedules.csv",
        [
            "id",
            "service_id",
            "location_id",
            "service_at_location_id",
            "freq",
            "byday",
            "opens_at",
            "closes_at",
            "description",
        ],
        [
            ["sc1", "s1", "", "", "WEEKLY", "SA,SU", "09:00", "12:00", ""],
            ["sc2", "s1", "", "", "MONTHLY", "2MO", "10:00", "11:00", "Second Monday"],
        ],
    ),
    "service_attribute": (
        "service_attributes.csv",
        ["id", "service_id", "taxonomy_term_id"],
        [["sa1", "s1", "t1"], ["sa2", "s1", "t-missing"]],
    ),
    "taxonomy_term": (
        "taxonomy_terms.csv",
        ["id", "term", "description", "parent_id", "taxonomy", "language"],
        [
            ["t1", "Food Pantries (local label)", "", "t0", "AIRS", "en"],
            ["t0", "Basic Needs (local label)", "", "", "AIRS", "en"],
        ],
    ),
    "language": (
        "languages.csv",
        ["id", "service_id", "location_id", "language"],
        [["lg1", "s1", "", "Spanish"]],
    ),
    "accessibility_for_disabilities": (
        "accessibility_for_disabilities.csv",
        ["id", "location_id", "accessibility", "details"],
        [["ac1", "l1", "ramp", "at the side door"]],
    ),
    "service_area": (
        "service_areas.csv",
        ["id", "service_id", "service_area", "description"],
        [["ar1", "s1", "Jefferson County", ""]],
    ),
    "eligibility": (
        "eligibility.csv",
        ["id", "service_id", "eligibility"],
        [["e1", "", "Seniors"]],
    ),
}


def _package_201(directory: Path) -> Path:
    """A small HSDS 2.0.1 package: 2.0.1 table names, a file per table, a descriptor."""
    resources = []
    for name, (file_name, header, rows) in _TABLES_201.items():
        with (directory / file_name).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
        resources.append({"name": name, "path": file_name})
    (directory / "datapackage.json").write_text(
        json.dumps({"name": "hsds", "resources": resources})
    )
    return directory


def test_hsds_2_0_1_field_names(tmp_path: Path) -> None:
    result = map_directory(_package_201(tmp_path), feed=FEED)
    for item in result.resources:
        validate_resource(item.resource)
    service = _resource(result, "service", "s1")
    assert service["program"] == [{"text": "Food Access"}]
    assert service["telecom"] == [{"system": "fax", "value": "502-555-0199", "use": "work"}]
    assert service["type"] == [
        {
            "coding": [
                {
                    "system": "https://211.example.org/hsds/taxonomy/airs",
                    "code": "t1",
                    "display": "Food Pantries (local label)",
                }
            ]
        }
    ]
    # The term's parent is the feed's top-level category.
    assert service["category"][0] == {
        "coding": [
            {
                "system": "https://211.example.org/hsds/taxonomy/airs",
                "code": "t0",
                "display": "Basic Needs (local label)",
            }
        ]
    }
    assert not [
        c
        for concept in service["category"]
        for c in concept["coding"]
        if c["system"] == SDOHCC_SYSTEM
    ]
    assert service["availableTime"] == [
        {
            "daysOfWeek": ["sat", "sun"],
            "availableStartTime": "09:00:00",
            "availableEndTime": "12:00:00",
        }
    ]
    assert "Second Monday" in service["availabilityExceptions"]  # MONTHLY has no FHIR form
    assert service["communication"] == [{"text": "Spanish"}]
    assert service["coverageArea"] == [{"display": "Jefferson County"}]
    assert "Fees: None" in service["extraDetails"]
    main = _resource(result, "location", "l1")
    assert main["address"]["state"] == "KY"  # the padding is gone
    assert main["position"] == {"latitude": 38.2, "longitude": -85.7}
    assert main["extension"][0]["valueCodeableConcept"] == {"text": "ramp; at the side door"}
    annex = _resource(result, "location", "l2")
    assert annex["address"]["type"] == "postal" and "position" not in annex
    problems = {(p.kind, p.feed_id, p.code) for p in result.problems}
    assert ("location", "l2", "invalid-coordinates") in problems
    assert ("service", "s1", "unknown-taxonomy-term") in problems
    assert ("eligibility", "e1", "unlinkable-row") in problems
    assert ("attribute", "sa2", "unlinkable-row") not in problems  # its service exists


def test_dangling_references_are_mapped_and_reported(tmp_path: Path) -> None:
    _package_201(tmp_path)
    rows = [
        ["s1", "o1", "p1", "Weekend Pantry", "Groceries", "active", ""],
        ["s2", "o-gone", "", "Orphan Service", "", "", ""],
        ["", "o1", "", "No Id Service", "", "active", ""],
    ]
    with (tmp_path / "services.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(_TABLES_201["service"][1])
        writer.writerows(rows)
    result = map_directory(tmp_path, feed=FEED)
    orphan = _resource(result, "service", "s2")
    assert "providedBy" not in orphan and orphan["active"] is True
    problems = {(p.kind, p.feed_id, p.code) for p in result.problems}
    assert {
        ("service", "s2", "missing-organization"),
        ("service", "s2", "missing-status"),
    } <= problems
    assert ("service", "", "missing-id") in problems
    assert result.summary()["resources"]["HealthcareService"] == 2
