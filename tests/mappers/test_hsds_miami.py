"""The HSDS mapper on a real 211 export (Miami, 2019, HSDS 1.x-style): robustness and speed.

The export is read from ../shared only (its licence is unclear and it holds licensed AIRS
names): never copy it into the repository.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from mappers.hsds import Bounds, Feed, MappingResult, map_directory
from mappers.hsds.crosswalk import SDOHCC_SYSTEM
from profiles.models import validate_resource

MIAMI = Path(__file__).resolve().parents[2] / ".." / "shared" / "feeds" / "hsds" / "miami-211-hsds1"
FLORIDA = Bounds(south=24.3, west=-87.7, north=31.1, east=-79.9)

pytestmark = pytest.mark.skipif(
    not (MIAMI / "datapackage.json").is_file(),
    reason=f"the Miami 211 export is not at {MIAMI} (../shared is absent)",
)


@pytest.fixture(scope="module")
def timed() -> tuple[MappingResult, float]:
    started = time.perf_counter()
    result = map_directory(MIAMI, feed=Feed("miami-211", bounds=FLORIDA))
    return result, time.perf_counter() - started


@pytest.fixture(scope="module")
def result(timed: tuple[MappingResult, float]) -> MappingResult:
    return timed[0]


def test_every_service_is_mapped_quickly(timed: tuple[MappingResult, float]) -> None:
    result, seconds = timed
    assert seconds < 10
    assert result.summary()["resources"] == {
        "Organization": 1074,
        "Location": 4089,
        "HealthcareService": 4089,
    }


def test_its_quirks_are_reported(result: MappingResult) -> None:
    codes = Counter((problem.kind, problem.code) for problem in result.problems)
    # 447 services and 3,015 locations point at organizations the export does not have.
    assert codes[("service", "missing-organization")] == 447
    assert codes[("location", "missing-organization")] == 3015
    # Every regular_schedules row has an empty id; every eligibility row an empty service_id.
    assert codes[("schedule", "missing-id")] == 11350
    assert codes[("eligibility", "unlinkable-row")] == 2244
    # Valid WGS84, but outside Florida: kept, and reported.
    assert codes[("location", "outside-area")] == 88
    # 1,829 sites have no lat/lon; one is a confidential address, which is not to have any.
    assert codes[("location", "no-coordinates")] == 1828
    # Hand-typed hours ("830am", "8:00m") are reported; the source text is kept.
    assert 0 < codes[("service", "unparsed-schedule")] < 50
    # HSDS 1.x had no required status.
    assert codes[("service", "missing-status")] == 4089


def test_services_with_missing_organizations_are_kept_without_provider(
    result: MappingResult,
) -> None:
    missing = {
        p.feed_id
        for p in result.problems
        if p.kind == "service" and p.code == "missing-organization"
    }
    services = {
        item.feed_id: item.resource for item in result.resources if item.hsds_object == "service"
    }
    assert missing <= services.keys()
    assert all("providedBy" not in services[feed_id] for feed_id in missing)


def test_messages_carry_ids_not_names(result: MappingResult) -> None:
    names = {item.resource.get("name", "") for item in result.resources} - {""}
    assert not [problem for problem in result.problems if problem.message in names]
    assert all(len(problem.message) < 200 for problem in result.problems)


def test_schedules_and_sdoh_domains_come_through(result: MappingResult) -> None:
    services = [item.resource for item in result.resources if item.hsds_object == "service"]
    with_hours = [service for service in services if service.get("availableTime")]
    assert len(with_hours) > 1000
    assert all(
        "availableStartTime" not in time or time["availableStartTime"] < time["availableEndTime"]
        for service in with_hours
        for time in service["availableTime"]
    )
    food = [
        service
        for service in services
        if {"system": SDOHCC_SYSTEM, "code": "food-insecurity", "display": "Food Insecurity"}
        in [coding for concept in service.get("category", []) for coding in concept["coding"]]
    ]
    assert len(food) > 50
    assert all("\\n" not in service.get("comment", "") for service in services)


def test_every_resource_passes_r4_base_validation(result: MappingResult) -> None:
    for item in result.resources:
        validate_resource(item.resource)
