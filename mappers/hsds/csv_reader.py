"""Read an HSDS tabular data package (datapackage.json + CSVs) into 3.x tables.

Three generations of names are read (https://github.com/openreferral/specification):
3.x (``address``, ``attribute``, ``schedule``), 2.0.1 (``physical_addresses``,
``postal_addresses``, ``service_attributes``, ``other_attributes``,
``accessibility_for_disabilities``, ``taxonomy_terms.term``) and the 1.x forms real 211
exports still use (``regular_schedules`` with ``weekday``, ``holiday_schedules``,
``services_taxonomy`` and a ``taxonomy`` table of terms). Each is renamed to its 3.x
table and fields here, so the mapper sees one schema. Tables this package does not map
(metadata, payments_accepted ...) are skipped unread.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path

from mappers.hsds.tables import InvalidHsds, Row, Tables, scalar

__all__ = ["read_datapackage"]

# Data package resource name (or CSV file stem) -> 3.x table.
_TABLES = {
    "organization": "organization",
    "organizations": "organization",
    "program": "program",
    "programs": "program",
    "service": "service",
    "services": "service",
    "service_at_location": "service_at_location",
    "services_at_location": "service_at_location",
    "location": "location",
    "locations": "location",
    "phone": "phone",
    "phones": "phone",
    "contact": "contact",
    "contacts": "contact",
    "address": "address",
    "addresses": "address",
    "physical_address": "address",
    "physical_addresses": "address",
    "postal_address": "address",
    "postal_addresses": "address",
    "schedule": "schedule",
    "schedules": "schedule",
    "regular_schedule": "schedule",
    "regular_schedules": "schedule",
    "holiday_schedule": "holiday_schedule",
    "holiday_schedules": "holiday_schedule",
    "funding": "funding",
    "eligibility": "eligibility",
    "service_area": "service_area",
    "service_areas": "service_area",
    "required_document": "required_document",
    "required_documents": "required_document",
    "language": "language",
    "languages": "language",
    "accessibility": "accessibility",
    "accessibility_for_disabilities": "accessibility",
    "attribute": "attribute",
    "attributes": "attribute",
    "service_attribute": "attribute",
    "service_attributes": "attribute",
    "other_attribute": "attribute",
    "other_attributes": "attribute",
    "service_taxonomy": "attribute",
    "services_taxonomy": "attribute",
    "taxonomy_term": "taxonomy_term",
    "taxonomy_terms": "taxonomy_term",
    "taxonomy": "taxonomy",
    "taxonomies": "taxonomy",
    "cost_option": "cost_option",
    "cost_options": "cost_option",
    "organization_identifier": "organization_identifier",
    "organization_identifiers": "organization_identifier",
    "url": "url",
    "urls": "url",
}


def read_datapackage(directory: Path) -> Tables:
    """The tables of the data package in ``directory`` (raises InvalidHsds)."""
    tables = Tables()
    for name, path in _resources(directory):
        table = _TABLES.get(name)
        if table is None:
            continue
        rows = _read_csv(path)
        header = next(rows, None)
        if header is None:
            continue
        fields = [column.strip().lower() for column in header]
        rename = _RENAMES.get(name, _no_rename)
        if (
            table == "taxonomy"
            and "uri" not in fields
            and {"vocabulary", "parent_id"} & set(fields)
        ):
            table, rename = "taxonomy_term", _taxonomy_term  # 1.x: "taxonomy" holds the terms
        for values in rows:
            if not any(value.strip() for value in values):
                continue
            row = {field: scalar(value) for field, value in zip(fields, values, strict=False)}
            tables.add(table, rename(row))
    return tables


def _resources(directory: Path) -> Iterator[tuple[str, Path]]:
    """(resource name, CSV path) from datapackage.json, or every *.csv when it has none."""
    descriptor = directory / "datapackage.json"
    if not descriptor.is_file():
        for path in sorted(directory.glob("*.csv")):
            yield path.stem.lower(), path
        return
    try:
        package = json.loads(descriptor.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidHsds(f"{descriptor.name}: not readable JSON") from exc
    resources = package.get("resources") if isinstance(package, dict) else None
    if not isinstance(resources, list):
        raise InvalidHsds("datapackage.json has no resources list")
    for resource in resources:
        if not isinstance(resource, dict) or not isinstance(resource.get("path"), str):
            continue
        table_path = _table_path(directory, resource["path"])
        if table_path is None:
            continue  # a path outside the package, or a table the publisher omitted
        name = resource.get("name")
        yield (name if isinstance(name, str) else table_path.stem).lower(), table_path


def _table_path(directory: Path, relative: str) -> Path | None:
    """The CSV a resource names, inside the package; exports often keep them under data/."""
    root = directory.resolve()
    for candidate in (root / relative, root / "data" / relative):
        path = candidate.resolve()
        if root in path.parents and path.is_file():
            return path
    return None


def _read_csv(path: Path) -> Iterator[list[str]]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            yield from csv.reader(handle)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InvalidHsds(f"{path.name}: not readable CSV ({exc.__class__.__name__})") from exc


def _no_rename(row: Row) -> Row:
    return row


def _moved(row: Row, **names: str) -> Row:
    """``row`` with each old field (keyword) renamed to its new name (value), if absent."""
    for old, new in names.items():
        if old in row and not row.get(new):
            row[new] = row.pop(old)
    return row


def _physical(row: Row) -> Row:
    row.setdefault("address_type", "physical")
    return row


def _postal(row: Row) -> Row:
    row.setdefault("address_type", "postal")
    return row


def _service_attribute(row: Row) -> Row:
    """2.0.1 service_attributes and 1.x services_taxonomy: a service's taxonomy term."""
    row = _moved(row, taxonomy_id="taxonomy_term_id", service_id="link_id")
    row.setdefault("link_entity", "service")
    row.setdefault("link_type", "service_type")
    return row


def _organization(row: Row) -> Row:
    return _moved(row, url="website")


def _taxonomy_term(row: Row) -> Row:
    """2.0.1 ``term`` and 1.x ``vocabulary``; 1.x feeds use the code as the term's id."""
    row = _moved(row, term="name", vocabulary="taxonomy")
    row.setdefault("code", row.get("id", ""))
    return row


def _language(row: Row) -> Row:
    return _moved(row, language="name")


def _service_area(row: Row) -> Row:
    return _moved(row, service_area="name")


def _accessibility(row: Row) -> Row:
    """2.0.1 ``accessibility`` is the short text; 3.x calls it ``description``."""
    return _moved(row, accessibility="description")


def _regular_schedule(row: Row) -> Row:
    """1.x weekday rows become weekly 3.x rules; ``original_text`` is kept as description."""
    row = _moved(row, original_text="description")
    row.setdefault("freq", "WEEKLY")
    return row


_RENAMES: dict[str, Callable[[Row], Row]] = {
    "organization": _organization,
    "organizations": _organization,
    "physical_address": _physical,
    "physical_addresses": _physical,
    "postal_address": _postal,
    "postal_addresses": _postal,
    "service_attribute": _service_attribute,
    "service_attributes": _service_attribute,
    "service_taxonomy": _service_attribute,
    "services_taxonomy": _service_attribute,
    "taxonomy_term": _taxonomy_term,
    "taxonomy_terms": _taxonomy_term,
    "language": _language,
    "languages": _language,
    "service_area": _service_area,
    "service_areas": _service_area,
    "accessibility_for_disabilities": _accessibility,
    "regular_schedule": _regular_schedule,
    "regular_schedules": _regular_schedule,
}
