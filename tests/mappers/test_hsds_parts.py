"""The HSDS mapper's parts: crosswalk, schedules, readers, feed ids; and arbitrary input."""

from __future__ import annotations

import csv
import json
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mappers.hsds import Feed, InvalidHsds, Tables, map_directory, map_tables, read_feed
from mappers.hsds.crosswalk import SDOHCC_SYSTEM, sdoh_categories, sdohcc_display
from mappers.hsds.schedule import merge_days, parse_hours, parse_time
from profiles.models import validate_resource
from terminology import Terminology

HSDS = Path(__file__).resolve().parents[2] / ".." / "shared" / "feeds" / "hsds"
PACKAGE = Path(__file__).resolve().parents[2] / "mappers" / "hsds"


def _needs(path: Path) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not path.exists(), reason=f"{path} is absent (../shared not present)")


# -- crosswalk --


def test_crosswalk_prefixes_match_at_segment_boundaries_longest_first() -> None:
    assert sdoh_categories("BD-1800.2000-640") == ("food-insecurity",)
    assert sdoh_categories("BH-1800.8500") == ("homelessness",)
    assert sdoh_categories("BH-1800.1500-100") == ("intimate-partner-violence",)
    assert sdoh_categories("RP-1500.1400-200") == ("intimate-partner-violence",)
    assert sdoh_categories("RP-1500.9999") == ("stress",)
    assert sdoh_categories("BD-18000") == ()  # not a child of BD-1800
    assert sdoh_categories("1102") == ()  # an Open Eligibility id is not an AIRS code
    assert sdoh_categories("1102", open_eligibility=True) == ("food-insecurity",)
    assert sdoh_categories("1261", open_eligibility=True) == (
        "financial-insecurity",
        "employment-status",
    )


@_needs(HSDS / "taxonomies" / "sdoh-domain-crosswalk.csv")
def test_crosswalk_table_matches_the_research_csv() -> None:
    with (HSDS / "taxonomies" / "sdoh-domain-crosswalk.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 22
    for row in rows:
        assert sdohcc_display(row["sdohcc_code"]) == row["sdohcc_display"]
        for code in filter(None, row["airs_example_codes"].split(";")):
            assert sdoh_categories(code) == (row["sdohcc_code"],), code
        for code in filter(None, row["open_eligibility_ids"].split(";")):
            assert row["sdohcc_code"] in sdoh_categories(code, open_eligibility=True), code


def test_crosswalk_codes_are_sdohcc_codes() -> None:
    terminology = Terminology.bundled()
    for code in ("food-insecurity", "utility-insecurity", "digital-access", "incarceration-status"):
        assert sdohcc_display(code)
        assert terminology.lookup(SDOHCC_SYSTEM, code) is not None
    for row_code in _crosswalk_codes():
        assert terminology.lookup(SDOHCC_SYSTEM, row_code) is not None, row_code


def _crosswalk_codes() -> set[str]:
    source = (PACKAGE / "crosswalk.py").read_text(encoding="utf-8")
    return set(re.findall(r'"([a-z]+(?:-[a-z]+)+)"', source)) - {"open-eligibility"}


@_needs(HSDS / "miami-211-hsds1" / "data" / "taxonomy.csv")
def test_no_airs_term_names_are_shipped() -> None:
    with (HSDS / "miami-211-hsds1" / "data" / "taxonomy.csv").open(encoding="utf-8") as handle:
        names = {row["name"].strip().lower() for row in csv.DictReader(handle)}
    names = {name for name in names if len(name) > 12}  # short ones are ordinary words
    assert len(names) > 1000
    for path in PACKAGE.glob("*.py"):
        source = path.read_text(encoding="utf-8").lower()
        assert not [name for name in names if name in source], path.name


# -- schedules --


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("09:00", ("09:00:00", None)),
        ("09:00:00-05:00", ("09:00:00", "-05:00")),
        ("13:30Z", ("13:30:00", "Z")),
        ("8:00am", ("08:00:00", None)),
        ("12:00pm", ("12:00:00", None)),
        ("12:15 AM", ("00:15:00", None)),
        ("5:00 p.m.", ("17:00:00", None)),
        ("09:00-0600", ("09:00:00", "-06:00")),
        ("25:00", None),
        ("13:00pm", None),
        ("noon", None),
    ],
)
def test_parse_time(text: str, expected: tuple[str, str | None] | None) -> None:
    assert parse_time(text) == expected


def test_monthly_rules_become_words_not_days() -> None:
    hours = parse_hours(
        {"freq": "MONTHLY", "byday": "2MO", "opens_at": "10:00", "closes_at": "11:00"}
    )
    assert hours.available_time() is None
    assert hours.text == "MONTHLY 2MO 10:00 11:00"


def test_merge_days_groups_equal_times_monday_first() -> None:
    entries: list[dict[str, object]] = [
        {"daysOfWeek": ["wed"], "availableStartTime": "09:00:00", "availableEndTime": "17:00:00"},
        {"daysOfWeek": ["sat"], "availableStartTime": "10:00:00", "availableEndTime": "12:00:00"},
        {"daysOfWeek": ["mon"], "availableStartTime": "09:00:00", "availableEndTime": "17:00:00"},
    ]
    assert merge_days(entries) == [
        {
            "daysOfWeek": ["mon", "wed"],
            "availableEndTime": "17:00:00",
            "availableStartTime": "09:00:00",
        },
        {"daysOfWeek": ["sat"], "availableEndTime": "12:00:00", "availableStartTime": "10:00:00"},
    ]


@given(st.text(max_size=30))
def test_parse_time_takes_any_text(text: str) -> None:
    parsed = parse_time(text)
    if parsed is not None:
        assert re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d:[0-5]\d", parsed[0])


@given(
    st.dictionaries(
        st.sampled_from(["weekday", "freq", "byday", "opens_at", "closes_at", "interval"]),
        st.text(max_size=12),
    )
)
def test_parse_hours_takes_any_row(row: dict[str, str]) -> None:
    hours = parse_hours(row)
    available = hours.available_time()
    if available is not None:
        assert available["daysOfWeek"]


# -- readers --


@_needs(HSDS / "hsds-3.1" / "examples" / "service_full.json")
def test_single_object_file_and_spec_example_coordinates() -> None:
    """The spec's own example puts a site at latitude 100, longitude 101: reported, no position."""
    result = map_directory(HSDS / "hsds-3.1" / "examples" / "service_full.json", feed="spec")
    services = [item for item in result.resources if item.resource_type == "HealthcareService"]
    assert len(services) == 1
    locations = [item.resource for item in result.resources if item.resource_type == "Location"]
    assert locations and all("position" not in location for location in locations)
    assert "invalid-coordinates" in {problem.code for problem in result.problems}


def test_page_and_list_shapes_read_alike(tmp_path: Path) -> None:
    service = {
        "id": "s1",
        "name": "Pantry",
        "status": "active",
        "organization": {"id": "o1", "name": "Org", "description": "d"},
    }
    (tmp_path / "page").mkdir()
    (tmp_path / "page" / "service_list.json").write_text(
        json.dumps({"contents": [service], "total_items": 1})
    )
    (tmp_path / "page" / "base.json").write_text(json.dumps({"version": "3.1", "profile": "x"}))
    (tmp_path / "list.json").write_text(json.dumps([service]))
    from_page = map_directory(tmp_path / "page", feed="f")
    from_list = map_directory(tmp_path / "list.json", feed="f")
    assert [item.resource for item in from_page.resources] == [
        item.resource for item in from_list.resources
    ]
    assert [item.resource_type for item in from_page.resources] == [
        "Organization",
        "HealthcareService",
    ]


def test_unreadable_input_is_invalid_hsds(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(InvalidHsds):
        read_feed(tmp_path / "broken.json")
    with pytest.raises(InvalidHsds):
        read_feed(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidHsds):
        read_feed(tmp_path / "empty")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "name",
                    "status",
                    "organization",
                    "organization_id",
                    "latitude",
                    "longitude",
                    "location",
                    "service_at_locations",
                    "location_id",
                    "phones",
                    "number",
                    "schedules",
                    "byday",
                    "opens_at",
                    "attributes",
                    "taxonomy_term",
                    "code",
                    "parent_id",
                    "addresses",
                    "contents",
                    "languages",
                ]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=60, deadline=None)
@given(_JSON)
def test_arbitrary_json_maps_or_is_invalid(document: object) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "service_list.json"
        path.write_text(json.dumps(document))
        try:
            result = map_directory(path, feed="fuzz")
        except InvalidHsds:
            return
    for item in result.resources:
        assert item.resource["id"] == item.id
        validate_resource(item.resource)


_CELL = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=10)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(
        [
            "services.csv",
            "locations.csv",
            "regular_schedules.csv",
            "holiday_schedules.csv",
            "phones.csv",
        ]
    ),
    st.lists(st.lists(_CELL, min_size=1, max_size=8), max_size=4),
)
def test_arbitrary_csv_maps_or_is_invalid(file_name: str, rows: list[list[str]]) -> None:
    headers = {
        "services.csv": ["id", "organization_id", "name", "status", "email"],
        "locations.csv": ["id", "organization_id", "name", "latitude", "longitude"],
        "regular_schedules.csv": ["id", "service_id", "weekday", "opens_at", "closes_at"],
        "holiday_schedules.csv": ["id", "service_id", "closed", "start_date", "end_date"],
        "phones.csv": ["id", "service_id", "number", "extension", "type"],
    }
    with tempfile.TemporaryDirectory() as directory:
        with (Path(directory) / "services.csv").open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([headers["services.csv"], ["s", "", "S", "active", ""]])
        with (Path(directory) / file_name).open("a", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            if file_name != "services.csv":
                writer.writerow(headers[file_name])
            writer.writerows(rows)
        try:
            result = map_directory(Path(directory), feed="fuzz")
        except InvalidHsds:
            return
    for item in result.resources:
        validate_resource(item.resource)


# -- feed --


def test_feed_ids_are_stable_and_names_checked() -> None:
    feed = Feed("ky-211")
    assert feed.resource_id("service", "1") == feed.resource_id("service", "1")
    assert feed.resource_id("service", "1") != feed.resource_id("location", "1")
    assert re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", feed.resource_id("service", "x" * 500))
    with pytest.raises(ValueError):
        Feed("no spaces please")


def test_feed_values_that_are_not_fhir_values_are_cleaned() -> None:
    """Codes with stray spaces, a taxonomy "uri" that is not one, impossible holiday dates."""
    tables = Tables(
        {
            "service": [{"id": "s1", "name": "Pantry", "status": "active"}],
            "attribute": [{"id": "a1", "link_id": "s1", "taxonomy_term_id": "t1"}],
            "taxonomy_term": [
                {"id": "t1", "code": " BD-1800  2000 ", "name": "x", "taxonomy_id": "x1"}
            ],
            "taxonomy": [{"id": "x1", "name": "Local Terms", "uri": "not a uri"}],
            "holiday_schedule": [
                {
                    "id": "h1",
                    "service_id": "s1",
                    "closed": "true",
                    "start_date": "2025-02-30",
                    "end_date": "soon",
                },
                {
                    "id": "h2",
                    "service_id": "s1",
                    "closed": "true",
                    "start_date": "2025-12-24",
                    "end_date": "",
                },
            ],
            "language": [{"id": "l1", "service_id": "s1", "code": "es  MX", "name": "Spanish"}],
        }
    )
    service = map_tables(tables, feed=Feed("f")).resources[0].resource
    validate_resource(service)
    assert service["type"][0]["coding"][0] == {
        "system": "urn:sdoh-fhir:hsds:f:taxonomy:local-terms",
        "code": "BD-1800 2000",
        "display": "x",
    }
    assert service["notAvailable"] == [
        {"description": "Closed 2025-02-30 - soon"},
        {"description": "Closed", "during": {"start": "2025-12-24"}},
    ]
    with pytest.raises(ValueError):
        Feed("f", base="not a uri")
    with pytest.raises(ValueError):
        Feed("trailing-newline\n")


def test_parents_come_first_even_in_long_chains_and_cycles() -> None:
    chain = [
        {"id": f"o{n}", "name": f"Org {n}", "parent_organization_id": f"o{n + 1}"}
        for n in range(3000)
    ]
    chain.append({"id": "o3000", "name": "Root"})
    loop = [
        {"id": "a", "name": "A", "parent_organization_id": "b"},
        {"id": "b", "name": "B", "parent_organization_id": "a"},
    ]
    result = map_tables(Tables({"organization": chain + loop}), feed="f")
    order = [item.feed_id for item in result.resources]
    assert order[:2] == ["o3000", "o2999"] and len(order) == 3003
    assert sorted(order[-2:]) == ["a", "b"]
    assert "partOf" in result.resources[1].resource
