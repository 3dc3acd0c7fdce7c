"""Read HSDS 3.x JSON in the HSDS API's shapes into 3.x tables.

Accepted: a single object (``GET /services/{id}``), a Page (``{"contents": [...]}``, from
``GET /services?full=true`` and the other list endpoints), a bare list, or a directory of such
files. Nested objects become rows of their own table, given the foreign key their nesting
implies when the publisher left it out (https://docs.openreferral.org/en/latest/hsds/schema_reference.html).
An object nested in several places (an organization inside each of its services) is one row,
its fields merged.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from mappers.hsds.tables import InvalidHsds, Row, Tables, scalar

__all__ = ["read_json"]

# For each table: nested key -> (child table, foreign key the child gets from the parent's id).
# A key of None means the child holds no key to its parent (the parent points at the child).
_NESTED: dict[str, dict[str, tuple[str, str | None]]] = {
    "organization": {
        "funding": ("funding", "organization_id"),
        "contacts": ("contact", "organization_id"),
        "phones": ("phone", "organization_id"),
        "locations": ("location", "organization_id"),
        "programs": ("program", "organization_id"),
        "organization_identifiers": ("organization_identifier", "organization_id"),
        "attributes": ("attribute", "link_id"),
        "services": ("service", "organization_id"),
        "additional_websites": ("url", "organization_id"),
        "metadata": ("metadata", "resource_id"),
    },
    "service": {
        "organization": ("organization", None),
        "program": ("program", None),
        "phones": ("phone", "service_id"),
        "schedules": ("schedule", "service_id"),
        "service_areas": ("service_area", "service_id"),
        "service_at_locations": ("service_at_location", "service_id"),
        "languages": ("language", "service_id"),
        "funding": ("funding", "service_id"),
        "cost_options": ("cost_option", "service_id"),
        "required_documents": ("required_document", "service_id"),
        "contacts": ("contact", "service_id"),
        "capacities": ("service_capacity", "service_id"),
        "attributes": ("attribute", "link_id"),
        "additional_urls": ("url", "service_id"),
        "metadata": ("metadata", "resource_id"),
    },
    "service_at_location": {
        "service": ("service", None),
        "location": ("location", None),
        "service_areas": ("service_area", "service_at_location_id"),
        "contacts": ("contact", "service_at_location_id"),
        "phones": ("phone", "service_at_location_id"),
        "schedules": ("schedule", "service_at_location_id"),
        "attributes": ("attribute", "link_id"),
        "metadata": ("metadata", "resource_id"),
    },
    "location": {
        "languages": ("language", "location_id"),
        "addresses": ("address", "location_id"),
        "contacts": ("contact", "location_id"),
        "accessibility": ("accessibility", "location_id"),
        "phones": ("phone", "location_id"),
        "schedules": ("schedule", "location_id"),
        "attributes": ("attribute", "link_id"),
        "metadata": ("metadata", "resource_id"),
    },
    "phone": {"languages": ("language", "phone_id")},
    "contact": {"phones": ("phone", "contact_id")},
    "attribute": {"taxonomy_term": ("taxonomy_term", None)},
    "taxonomy_term": {"taxonomy_detail": ("taxonomy", None)},
    "program": {"services": ("service", "program_id")},
}

# The key that points from a parent row at a child it nests as a single object.
_POINTER = {
    ("service", "organization"): "organization_id",
    ("service", "program"): "program_id",
    ("service_at_location", "service"): "service_id",
    ("service_at_location", "location"): "location_id",
    ("attribute", "taxonomy_term"): "taxonomy_term_id",
    ("taxonomy_term", "taxonomy"): "taxonomy_id",
}

# File name prefixes of the API's list and object responses, longest first.
_FILE_KINDS = (
    ("service_at_location", "service_at_location"),
    ("taxonomy_term", "taxonomy_term"),
    ("organization", "organization"),
    ("taxonomies", "taxonomy"),
    ("taxonomy", "taxonomy"),
    ("location", "location"),
    ("service", "service"),
)


def read_json(paths: Iterable[Path]) -> Tables:
    """The tables of every object in these JSON files (raises InvalidHsds)."""
    builder = _Builder()
    for path in sorted(paths):
        document = _load(path)
        for item in _items(document):
            if isinstance(item, dict):
                builder.add(_kind(path.name, item), item, {})
    return builder.tables()


def _load(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise InvalidHsds(f"{path.name}: not readable JSON ({exc.__class__.__name__})") from exc


def _items(document: Any) -> Iterator[Any]:
    if isinstance(document, list):
        yield from document
    elif isinstance(document, dict) and isinstance(document.get("contents"), list):
        yield from document["contents"]
    elif isinstance(document, dict) and "id" in document:
        yield document
    # Anything else (the API root's {version, profile, openapi_url}) holds no records.


def _kind(file_name: str, item: dict[str, Any]) -> str:
    """The table of a top-level object: from the API's file name, else from its fields."""
    stem = file_name.lower()
    for prefix, kind in _FILE_KINDS:
        if stem.startswith(prefix):
            return kind
    if "location_type" in item:
        return "location"
    if "service_id" in item and "location_id" in item:
        return "service_at_location"
    if "status" in item or "service_at_locations" in item:
        return "service"
    if "taxonomy" in item or "parent_id" in item or "code" in item:
        return "taxonomy_term"
    return "organization"


class _Builder:
    """Flattens nested objects into rows, merging repeats of one id."""

    def __init__(self) -> None:
        self._rows: dict[str, dict[str, Row]] = {}
        self._anonymous: dict[str, list[Row]] = {}

    def add(self, table: str, item: dict[str, Any], inherited: Row) -> str:
        nested = _NESTED.get(table, {})
        row: Row = dict(inherited)
        children: list[tuple[str, Any, str | None]] = []
        for key, value in item.items():
            if key in nested and isinstance(value, dict | list):
                child_table, foreign_key = nested[key]
                children.append((child_table, value, foreign_key))
                pointer = _POINTER.get((table, child_table))
                if pointer and isinstance(value, dict) and value.get("id") and not row.get(pointer):
                    row[pointer] = scalar(value["id"])
            elif not isinstance(value, dict | list):
                text = scalar(value)
                if text or key not in row:
                    row[key] = text
        row_id = row.get("id", "")
        if table == "attribute" and not row.get("link_entity") and inherited.get("link_id"):
            row["link_entity"] = inherited["_parent"]
        row.pop("_parent", None)
        self._store(table, row)
        for child_table, value, foreign_key in children:
            for child in value if isinstance(value, list) else [value]:
                if isinstance(child, dict):
                    link: Row = {}
                    if foreign_key and row_id:
                        link = {foreign_key: row_id, "_parent": table}
                    self.add(child_table, child, link)
        return row_id

    def _store(self, table: str, row: Row) -> None:
        row_id = row.get("id", "")
        if not row_id:
            self._anonymous.setdefault(table, []).append(row)
            return
        rows = self._rows.setdefault(table, {})
        existing = rows.get(row_id)
        if existing is None:
            rows[row_id] = row
            return
        for key, value in row.items():
            if value and not existing.get(key):
                existing[key] = value

    def tables(self) -> Tables:
        tables = Tables()
        for table, rows in self._rows.items():
            for row in rows.values():
                tables.add(table, row)
        for table, anonymous in self._anonymous.items():
            for row in anonymous:
                tables.add(table, row)
        return tables
