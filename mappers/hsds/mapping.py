"""Read a feed and map it: the entry points of the HSDS mapper."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mappers.hsds.csv_reader import read_datapackage
from mappers.hsds.feed import Feed
from mappers.hsds.json_reader import read_json
from mappers.hsds.result import MappedResource, MappingResult, Problem, content_hash
from mappers.hsds.service import map_service
from mappers.hsds.sites import map_location, map_organization
from mappers.hsds.tables import InvalidHsds, Row, Tables

__all__ = ["iter_mapping", "map_directory", "map_tables", "read_feed"]

# Row tables whose rows only mean something through a parent: (table, parent keys).
_LINKED = {
    "phone": (
        "organization_id",
        "service_id",
        "location_id",
        "contact_id",
        "service_at_location_id",
    ),
    "schedule": ("service_id", "location_id", "service_at_location_id"),
    "holiday_schedule": ("service_id", "location_id", "service_at_location_id"),
    "eligibility": ("service_id",),
    "language": ("service_id", "location_id", "phone_id"),
    "contact": ("organization_id", "service_id", "location_id", "service_at_location_id"),
    "address": ("location_id",),
    "accessibility": ("location_id",),
    "service_area": ("service_id", "service_at_location_id"),
    "required_document": ("service_id",),
    "cost_option": ("service_id",),
    "funding": ("organization_id", "service_id"),
    "service_at_location": ("service_id",),
    "attribute": ("link_id",),
}
_PARENT_TABLES = {
    "organization_id": "organization",
    "service_id": "service",
    "location_id": "location",
    "contact_id": "contact",
    "service_at_location_id": "service_at_location",
    "phone_id": "phone",
}
_NOT_NAME = re.compile(r"[^a-z0-9]+")
_LEGAL_SUFFIXES = (" inc", " incorporated", " llc", " corp", " corporation", " co", " ltd")


def read_feed(path: Path) -> Tables:
    """The tables of an HSDS feed at ``path`` (raises InvalidHsds).

    A ``.json`` file, or a directory: with ``datapackage.json`` a CSV package; else its JSON
    files (API pages or objects); else its CSV files read by name.
    """
    if path.is_file():
        if path.suffix.lower() != ".json":
            raise InvalidHsds(f"{path.name}: expected a .json file or a directory")
        return read_json([path])
    if not path.is_dir():
        raise InvalidHsds(f"{path.name}: no such file or directory")
    if (path / "datapackage.json").is_file():
        return read_datapackage(path)
    json_files = sorted(path.glob("*.json"))
    if json_files:
        return read_json(json_files)
    if any(path.glob("*.csv")):
        return read_datapackage(path)
    raise InvalidHsds(f"{path.name}: no HSDS JSON files and no datapackage.json")


def map_directory(path: Path, *, feed: Feed | str) -> MappingResult:
    """Read the feed at ``path`` and map it to FHIR R4 (raises InvalidHsds)."""
    return map_tables(read_feed(path), feed=feed)


def map_tables(tables: Tables, *, feed: Feed | str) -> MappingResult:
    """Organizations, Locations and HealthcareServices, with the problems found on the way."""
    resources: list[MappedResource] = []
    problems: list[Problem] = []
    for item in iter_mapping(tables, feed=feed):
        if isinstance(item, MappedResource):
            resources.append(item)
        else:
            problems.append(item)
    name = feed.name if isinstance(feed, Feed) else feed
    counts = {table: len(tables.rows(table)) for table in tables.names()}
    return MappingResult(name, tuple(resources), tuple(problems), counts)


def iter_mapping(tables: Tables, *, feed: Feed | str) -> Iterator[MappedResource | Problem]:
    """The resources one at a time, each after its own problems, in ``map_tables``' order.

    For a loader that writes as it maps rather than holding a whole directory's resources;
    problems about rows no resource comes from (unlinkable rows, duplicates) come last.
    """
    if isinstance(feed, str):
        feed = Feed(feed)
    yield from _mapped(tables, feed, "organization", map_organization, _organization_order(tables))
    yield from _mapped(tables, feed, "location", map_location, tables.rows("location"))
    yield from _mapped(tables, feed, "service", map_service, tables.rows("service"))
    yield from _link_problems(tables)
    yield from _duplicate_organizations(tables)


MapOne = Callable[[Tables, Feed, Row, Callable[[str, str], None]], dict[str, Any]]


def _mapped(
    tables: Tables, feed: Feed, hsds_object: str, map_one: MapOne, rows: list[Row]
) -> Iterator[MappedResource | Problem]:
    seen: set[str] = set()
    for row in rows:
        feed_id = row.get("id", "")
        problems: list[Problem] = []

        def report(
            code: str, message: str, feed_id: str = feed_id, found: list[Problem] = problems
        ) -> None:
            found.append(Problem(hsds_object, feed_id, code, message))

        if not feed_id:
            yield Problem(hsds_object, "", "missing-id", f"{hsds_object} row has no id; not mapped")
            continue
        if feed_id in seen:
            yield Problem(
                hsds_object,
                feed_id,
                "duplicate-id",
                f"{hsds_object} id repeated; the first row was mapped",
            )
            continue
        seen.add(feed_id)
        resource = map_one(tables, feed, row, report)
        yield from problems
        yield MappedResource(
            resource_type=resource["resourceType"],
            id=resource["id"],
            hsds_object=hsds_object,
            feed_id=feed_id,
            resource=resource,
            content_hash=content_hash(resource),
        )


def _organization_order(tables: Tables) -> list[Row]:
    """Organizations in feed order, each parent before the organizations that are part of it.

    Iterative, and stops at a cycle: a feed's parent chain may be long or loop.
    """
    by_id = tables.by_id("organization")
    ordered: list[Row] = []
    placed: set[int] = set()
    for row in tables.rows("organization"):
        chain: list[Row] = []
        in_chain: set[int] = set()
        current: Row | None = row
        while current is not None and id(current) not in placed and id(current) not in in_chain:
            chain.append(current)
            in_chain.add(id(current))
            current = by_id.get(current.get("parent_organization_id", ""))
        for item in reversed(chain):
            placed.add(id(item))
            ordered.append(item)
    return ordered


def _link_problems(tables: Tables) -> Iterator[Problem]:
    """Rows that hang off no parent, or off one the feed does not have; rows without ids."""
    for table, keys in _LINKED.items():
        for row in tables.rows(table):
            row_id = row.get("id", "")
            links = [(key, row.get(key, "")) for key in keys if row.get(key)]
            if not links:
                yield Problem(table, row_id, "unlinkable-row", f"{table} row names no parent")
                continue
            if not row_id:
                parent = ", ".join(f"{key} {value}" for key, value in links)
                yield Problem(table, "", "missing-id", f"{table} row of {parent} has no id")
            for key, value in links:
                parent_table = _PARENT_TABLES.get(key) or row.get("link_entity") or "service"
                if value not in tables.by_id(parent_table):
                    yield Problem(
                        table, row_id, "unlinkable-row", f"{key} {value} is not in the feed"
                    )


def _duplicate_organizations(tables: Tables) -> Iterator[Problem]:
    """Organizations that look like an earlier one: the same EIN or the same plain name.

    Both are kept (two records may be two branches); the loader or a person decides.
    """
    by_ein: dict[str, str] = {}
    by_name: dict[str, str] = {}
    for row in tables.by_id("organization").values():
        org_id = row["id"]
        eins = {
            item.get("identifier", "")
            for item in tables.children("organization_identifier", "organization_id", org_id)
            if item.get("identifier_scheme", "").upper() == "US-EIN" and item.get("identifier")
        }
        if row.get("tax_id"):
            eins.add(row["tax_id"])
        name = _plain_name(row.get("name", ""))
        earlier = next((by_ein[ein] for ein in sorted(eins) if ein in by_ein), None)
        if earlier is None and name:
            earlier = by_name.get(name)
        if earlier is not None:
            yield Problem(
                "organization", org_id, "possible-duplicate", f"looks like organization {earlier}"
            )
        for ein in eins:
            by_ein.setdefault(ein, org_id)
        if name:
            by_name.setdefault(name, org_id)


def _plain_name(name: str) -> str:
    plain = " " + _NOT_NAME.sub(" ", name.lower()).strip()
    for suffix in _LEGAL_SUFFIXES:
        if plain.endswith(suffix):
            plain = plain[: -len(suffix)]
    return plain.strip()
