"""The HSDS mapper on the authored Kentucky 3.1 sample (JSON and CSV), field by field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mappers.hsds import (
    Feed,
    MappedResource,
    MappingResult,
    Problem,
    Tables,
    iter_mapping,
    map_directory,
    map_tables,
    read_feed,
)
from mappers.hsds.crosswalk import SDOHCC_SYSTEM
from profiles.models import validate_resource
from profiles.registry import ProfileRegistry
from profiles.validator import Validator
from terminology import Terminology

KY = (
    Path(__file__).resolve().parents[2]
    / ".."
    / "shared"
    / "feeds"
    / "hsds"
    / "ky-authored-hsds-3.1"
)
FEED = Feed("ky-211", base="https://211.example.org/hsds")

pytestmark = pytest.mark.skipif(
    not KY.is_dir(), reason=f"the authored KY HSDS sample is not at {KY} (../shared is absent)"
)


@pytest.fixture(scope="module")
def result() -> MappingResult:
    return map_directory(KY, feed=FEED)


def _by_name(result: MappingResult, resource_type: str) -> dict[str, dict[str, Any]]:
    return {
        item.resource["name"]: item.resource
        for item in result.resources
        if item.resource_type == resource_type
    }


def _location(result: MappingResult, feed_id: str) -> dict[str, Any]:
    return next(
        item.resource
        for item in result.resources
        if item.hsds_object == "location" and item.feed_id == feed_id
    )


def test_maps_every_organization_location_and_service(result: MappingResult) -> None:
    assert result.summary()["resources"] == {
        "Organization": 12,
        "Location": 13,
        "HealthcareService": 21,
    }


def test_json_and_csv_forms_give_the_same_resources(result: MappingResult) -> None:
    from_csv = map_directory(KY / "csv", feed=FEED)
    assert {item.id: item.resource for item in from_csv.resources} == {
        item.id: item.resource for item in result.resources
    }
    assert set(from_csv.problems) == set(result.problems)


def test_mapping_twice_gives_identical_output(result: MappingResult) -> None:
    again = map_directory(KY, feed=FEED)
    assert again.resources == result.resources
    assert again.problems == result.problems


def test_every_resource_passes_r4_base_validation(result: MappingResult) -> None:
    for item in result.resources:
        validate_resource(item.resource)


def test_claimed_profiles_are_met(result: MappingResult) -> None:
    validator = Validator(ProfileRegistry.bundled(), Terminology.bundled())
    claimed = 0
    for item in result.resources:
        for profile in item.resource.get("meta", {}).get("profile", []):
            claimed += 1
            errors = [
                issue
                for issue in validator.validate(item.resource, profile)
                if issue.severity in ("error", "fatal")
            ]
            assert errors == [], (item.resource_type, item.feed_id, errors)
    assert claimed >= 12 + 11  # organizations with names, locations with an address


def test_ids_are_deterministic_and_identifiers_carry_the_feed_ids(result: MappingResult) -> None:
    for item in result.resources:
        assert item.id == FEED.resource_id(item.hsds_object, item.feed_id)
        assert item.resource["id"] == item.id
        assert {
            "system": f"https://211.example.org/hsds/{item.hsds_object}-id",
            "value": item.feed_id,
        } in item.resource["identifier"]
        assert len(item.id) <= 64
    other = map_directory(KY, feed=Feed("another-211"))
    assert not {item.id for item in other.resources} & {item.id for item in result.resources}
    assert other.resources[0].resource["identifier"][0]["system"] == (
        "urn:sdoh-fhir:hsds:another-211:organization-id"
    )


def test_referenced_resources_come_first(result: MappingResult) -> None:
    seen: set[str] = set()
    for item in result.resources:
        resource = item.resource
        references = [resource.get("providedBy"), resource.get("managingOrganization")]
        references += resource.get("location", [])
        for ref in references:
            if ref:
                assert ref["reference"] in seen
        seen.add(f"{item.resource_type}/{item.id}")


def test_content_hash_changes_with_content_only(result: MappingResult) -> None:
    hashes = [item.content_hash for item in result.resources]
    assert len(set(hashes)) == len(hashes)
    tables = read_feed(KY)
    tables.by_id("service")["fac6487c-d7ca-5dda-b3dd-4cbd287f5618"]["name"] = (
        "Food Pantry (renamed)"
    )
    changed = {item.feed_id: item.content_hash for item in map_tables(tables, feed=FEED).resources}
    before = {item.feed_id: item.content_hash for item in result.resources}
    assert [key for key in before if before[key] != changed[key]] == [
        "fac6487c-d7ca-5dda-b3dd-4cbd287f5618"
    ]


def test_food_pantry_field_by_field(result: MappingResult) -> None:
    service = _by_name(result, "HealthcareService")["Food Pantry"]
    organization_id = FEED.resource_id("organization", "490cfd27-3af3-58df-a1a2-9476a986e0c9")
    assert service["active"] is True
    assert service["providedBy"] == {
        "reference": f"Organization/{organization_id}",
        "display": "Bluegrass Example Food Bank",
    }
    assert service["location"] == [
        {
            "reference": "Location/"
            + FEED.resource_id("location", "5ddebfa2-7174-574e-8bdb-379d78a61006"),
            "display": "Bluegrass Example Food Bank",
        }
    ]
    assert {"system": SDOHCC_SYSTEM, "code": "food-insecurity", "display": "Food Insecurity"} in [
        coding for concept in service["category"] for coding in concept["coding"]
    ]
    # The feed's own codes and displays, as given.
    types = [concept["coding"][0] for concept in service["type"]]
    assert {
        "system": "https://211taxonomy.org/",
        "code": "BD-1800.2000",
        "display": "Food pantries",
    } in types
    assert {
        "system": "http://openeligibility.org",
        "code": "1130",
        "display": "Food Pantry",
    } in types
    assert service["comment"] == "Free groceries once per month for households in Fayette County."
    assert service["telecom"] == [
        {"system": "phone", "value": "859-555-0100 x10", "use": "work"},
        {"system": "email", "value": "pantry@bgfb.example.org", "use": "work"},
        {"system": "url", "value": "https://foodbank.example.org/pantry", "use": "work"},
    ]
    assert service["coverageArea"] == [{"display": "Fayette County"}]
    assert service["eligibility"] == [
        {"comment": "Kentucky residents."},
        {"code": {"text": "Required documents"}, "comment": "Photo ID; Proof of Kentucky address"},
    ]
    assert service["availableTime"] == [
        {
            "daysOfWeek": ["tue", "thu"],
            "availableStartTime": "09:00:00",
            "availableEndTime": "13:00:00",
        }
    ]
    assert "UTC-05:00" in service["availabilityExceptions"]


def test_organization_field_by_field(result: MappingResult) -> None:
    organization = _by_name(result, "Organization")["Bluegrass Example Food Bank"]
    assert organization["active"] is True
    assert {
        "use": "official",
        "type": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "TAX"}]
        },
        "system": "urn:oid:2.16.840.1.113883.4.4",
        "value": "00-0000001",
    } in organization["identifier"]
    assert {"system": "phone", "value": "859-555-0100", "use": "work"} in organization["telecom"]
    assert {
        "system": "url",
        "value": "https://foodbank.example.org",
        "use": "work",
    } in organization["telecom"]


def test_location_with_address_and_position(result: MappingResult) -> None:
    location = _location(result, "5ddebfa2-7174-574e-8bdb-379d78a61006")
    assert location["position"] == {"latitude": 38.0406, "longitude": -84.5037}
    assert location["address"] == {
        "use": "work",
        "type": "physical",
        "line": ["100 Example Market St"],
        "city": "Lexington",
        "district": "Fayette County",
        "state": "KY",
        "postalCode": "40507",
        "country": "US",
    }
    assert location["managingOrganization"]["reference"] == "Organization/" + FEED.resource_id(
        "organization", "490cfd27-3af3-58df-a1a2-9476a986e0c9"
    )


def test_virtual_location_has_no_address_or_position(result: MappingResult) -> None:
    location = _location(result, "6345dabd-4d95-5f25-97d0-f88711de0cb8")
    assert location["physicalType"]["coding"][0]["code"] == "vi"
    assert "address" not in location and "position" not in location
    assert {"system": "url", "value": "https://eshv.example.org/chat", "use": "work"} in location[
        "telecom"
    ]
    assert "meta" not in location  # SDOHCC-Location requires an address
    assert not [p for p in result.problems if p.feed_id == "6345dabd-4d95-5f25-97d0-f88711de0cb8"]


def test_confidential_address_keeps_the_city_only(result: MappingResult) -> None:
    location = _location(result, "76a7c448-948a-5797-bf11-1edaf4169fc4")
    assert "line" not in location["address"]
    assert location["address"]["city"] == "Bowling Green"
    assert "position" not in location


def test_missing_coordinates_are_reported(result: MappingResult) -> None:
    location = _location(result, "c3344d13-2b22-5762-894c-48be8be1abaf")
    assert "position" not in location
    assert ("location", "c3344d13-2b22-5762-894c-48be8be1abaf", "no-coordinates") in {
        (p.kind, p.feed_id, p.code) for p in result.problems
    }


def test_services_without_location_keep_their_service_areas(result: MappingResult) -> None:
    services = _by_name(result, "HealthcareService")
    for name in ("Mobile Pantry", "Home Delivered Meals"):
        assert "location" not in services[name]
        assert services[name]["coverageArea"]


def test_status_maps_to_active(result: MappingResult) -> None:
    services = _by_name(result, "HealthcareService")
    assert services["Bus Fare Assistance"]["active"] is False
    closed = services["Rent Payment Assistance"]
    assert closed["active"] is False
    assert closed["notAvailable"][0]["description"]
    assert sum(service["active"] for service in services.values()) == 19


def test_central_time_offsets_are_stripped_and_said(result: MappingResult) -> None:
    service = _by_name(result, "HealthcareService")["Eviction Defense"]
    assert service["availableTime"][0]["availableStartTime"] == "08:30:00"
    assert "UTC-06:00" in service["availabilityExceptions"]


def test_languages_and_minimum_age(result: MappingResult) -> None:
    services = _by_name(result, "HealthcareService")
    medicaid = services["Medicaid and KCHIP Application Help"]
    codes = {concept["coding"][0]["code"] for concept in medicaid["communication"]}
    assert {"es", "ar", "en"} <= codes
    meals = services["Home Delivered Meals"]
    assert {"code": {"text": "Age"}, "comment": "Minimum age: 60"} in meals["eligibility"]


def test_near_duplicate_organizations_are_kept_and_reported(result: MappingResult) -> None:
    names = _by_name(result, "Organization")
    assert "Bluegrass Example Food Bank, Inc." in names and "Bluegrass Example Food Bank" in names
    assert ("a25b059c-00f5-51ba-8dc5-594b00fb843d", "possible-duplicate") in {
        (p.feed_id, p.code) for p in result.problems
    }


def test_crosswalk_finds_the_domains_the_feed_states(result: MappingResult) -> None:
    """Without the feed's own SDOHCC attributes, the crosswalk derives the domains from the
    AIRS and Open Eligibility codes alone."""
    tables = read_feed(KY)
    rows = {name: tables.rows(name) for name in tables.names()}
    rows["attribute"] = [
        row for row in rows["attribute"] if row.get("link_type") != "sdoh_category"
    ]
    derived = _domains(map_tables(Tables(rows), feed=FEED))
    stated = _domains(result)
    assert derived.keys() == stated.keys()
    for name, domains in derived.items():
        assert domains and domains <= stated[name], name
    assert sum(derived[name] == stated[name] for name in derived) >= 20


def _domains(result: MappingResult) -> dict[str, set[str]]:
    return {
        name: {
            coding["code"]
            for concept in service.get("category", [])
            for coding in concept["coding"]
            if coding["system"] == SDOHCC_SYSTEM
        }
        for name, service in _by_name(result, "HealthcareService").items()
    }


def test_iter_mapping_streams_the_same_result(result: MappingResult) -> None:
    items = list(iter_mapping(read_feed(KY), feed=FEED))
    assert tuple(item for item in items if isinstance(item, MappedResource)) == result.resources
    assert tuple(item for item in items if isinstance(item, Problem)) == result.problems
    # A record's problems come just before its resource.
    position = items.index(next(p for p in result.problems if p.code == "no-coordinates"))
    following = items[position + 1]
    assert isinstance(following, MappedResource)
    assert following.feed_id == "c3344d13-2b22-5762-894c-48be8be1abaf"
