"""HSDS records as 3.x tables: the one shape both readers produce and the mapper consumes.

HSDS 3.x is canonically nested JSON, with a tabular (CSV) serialization compiled from it
(https://docs.openreferral.org/en/latest/hsds/serialization.html). Reducing both to tables of
string rows, with 3.x table and field names, is what lets the JSON and CSV forms of one feed
give the same FHIR resources, and lets the 1.x/2.0.1 adapters be renames.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any

__all__ = ["InvalidHsds", "Row", "Tables", "scalar"]

Row = dict[str, str]

# C0 controls other than tab, line feed and carriage return: FHIR strings refuse them.
_CONTROLS = dict.fromkeys([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20)])
_HAS_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


class InvalidHsds(ValueError):
    """The input is not an HSDS feed this package can read (not JSON, no datapackage ...)."""


def scalar(value: Any) -> str:
    """A field value as the CSV form would carry it: stripped text, "" for null.

    Real exports pad values (Miami's ``"FL "``); JSON gives numbers where CSV gives text.
    Control characters, which no FHIR string may hold, are dropped.
    """
    if type(value) is str:  # the common case first: most values need only the strip
        if _HAS_CONTROL.search(value) is None:
            return value.strip()
        return value.translate(_CONTROLS).strip()
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value).translate(_CONTROLS).strip()


class Tables:
    """Rows by 3.x table name, with lookups by id and by foreign key built on first use."""

    def __init__(self, rows: Mapping[str, Iterable[Row]] | None = None) -> None:
        self._rows: dict[str, list[Row]] = {name: list(r) for name, r in (rows or {}).items()}
        self._by_id: dict[str, dict[str, Row]] = {}
        self._by_key: dict[tuple[str, str], dict[str, list[Row]]] = {}
        self._derived: dict[Hashable, Any] = {}

    def add(self, table: str, row: Row) -> None:
        """Append a row (the caller adds every row before the first lookup)."""
        self._rows.setdefault(table, []).append(row)

    def rows(self, table: str) -> list[Row]:
        """Every row of ``table`` in feed order ([] for a table the feed does not have)."""
        return self._rows.get(table, [])

    def names(self) -> list[str]:
        return sorted(self._rows)

    def by_id(self, table: str) -> dict[str, Row]:
        """Rows of ``table`` by non-empty id; for a repeated id the first row wins."""
        index = self._by_id.get(table)
        if index is None:
            index = {}
            for row in self.rows(table):
                row_id = row.get("id", "")
                if row_id and row_id not in index:
                    index[row_id] = row
            self._by_id[table] = index
        return index

    def derived(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """A value computed from these tables once (a cache keyed by its caller's ``key``)."""
        if key not in self._derived:
            self._derived[key] = build()
        return self._derived[key]

    def children(self, table: str, key: str, parent_id: str) -> list[Row]:
        """Rows of ``table`` whose ``key`` column is ``parent_id``, sorted by their id.

        HSDS rows form sets, not sequences, and CSV and JSON order them differently:
        sorting by id gives one output for both forms.
        """
        index = self._by_key.get((table, key))
        if index is None:
            grouped: dict[str, list[Row]] = defaultdict(list)
            for row in self.rows(table):
                value = row.get(key, "")
                if value:
                    grouped[value].append(row)
            index = {
                parent: sorted(rows, key=lambda row: row.get("id", ""))
                for parent, rows in grouped.items()
            }
            self._by_key[(table, key)] = index
        return index.get(parent_id, [])
