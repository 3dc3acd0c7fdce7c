"""Bulk insert of new resources with COPY: the same stored bytes and index rows as single writes.

For loading large populations (benchmarks, first loads). It only inserts: ids must be new. Each
resource is validated with the models and indexed with the same extractor as a single write.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg

from fhir_server.core.errors import InvalidResource
from fhir_server.search.extract import patient_compartment_ids
from fhir_server.storage.repository import (
    INDEX_LAYOUT,
    Indexer,
    canonical_resource,
    check_resource,
    index_rows,
    now_millis,
)

__all__ = ["BulkResult", "load_new_resources"]


@dataclass(frozen=True, slots=True)
class BulkResult:
    stored: int
    rejected: int


def _batches(items: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def load_new_resources(
    conninfo: str,
    resources: Iterable[dict[str, Any]],
    indexer: Indexer,
    *,
    batch_size: int = 5000,
) -> BulkResult:
    """Validate, index and COPY resources that do not exist yet; one transaction per batch."""
    stored = rejected = 0
    with psycopg.connect(conninfo, options="-c timezone=UTC") as conn:
        for batch in _batches(resources, batch_size):
            rows = []
            for body in batch:
                try:
                    check_resource(body["resourceType"], body)
                except InvalidResource:
                    rejected += 1
                    continue
                rows.append(body)
            if not rows:
                continue
            with conn.transaction():
                _copy_batch(conn, rows, indexer)
            stored += len(rows)
    return BulkResult(stored, rejected)


def _copy_batch(
    conn: psycopg.Connection[Any], batch: list[dict[str, Any]], indexer: Indexer
) -> None:
    n = len(batch)
    rids = [
        r[0]
        for r in conn.execute(
            "SELECT nextval('resource_rid_seq') FROM generate_series(1, %s)", (n,)
        )
    ]
    seqs = [
        r[0]
        for r in conn.execute(
            "SELECT nextval('resource_history_seq') FROM generate_series(1, %s)", (n,)
        )
    ]
    now: datetime = now_millis()
    rows_by_field: dict[str, list[tuple[Any, ...]]] = {field: [] for field in INDEX_LAYOUT}
    compartment_rows: list[tuple[Any, ...]] = []
    # One COPY at a time per connection: gather the rows, then copy table by table.
    resource_rows = []
    history_rows = []
    for body, rid, seq in zip(batch, rids, seqs, strict=True):
        resource_type, id = body["resourceType"], body["id"]
        stored = canonical_resource(resource_type, id, 1, now, body)
        text = orjson.dumps(stored).decode()
        resource_rows.append((resource_type, id, rid, 1, now, False, text))
        history_rows.append((resource_type, id, 1, seq, now, "POST", False, text))
        index = indexer.extract(resource_type, stored)
        for field, rows in index_rows(resource_type, rid, index).items():
            rows_by_field[field].extend(rows)
        for patient in patient_compartment_ids(
            resource_type, id, index.references, indexer.compartment_params(resource_type)
        ):
            compartment_rows.append((resource_type, rid, "Patient", patient))
    _copy(
        conn,
        "resource",
        ("resource_type", "id", "rid", "version_id", "last_updated", "deleted", "body"),
        resource_rows,
    )
    _copy(
        conn,
        "resource_history",
        ("resource_type", "id", "version_id", "seq", "last_updated", "method", "deleted", "body"),
        history_rows,
    )
    for field, (table, columns) in INDEX_LAYOUT.items():
        _copy(conn, table, ("resource_type", "rid", "param", *columns), rows_by_field[field])
    _copy(
        conn,
        "compartment",
        ("resource_type", "rid", "compartment_type", "compartment_id"),
        compartment_rows,
    )


def _copy(
    conn: psycopg.Connection[Any],
    table: str,
    columns: tuple[str, ...],
    rows: list[tuple[Any, ...]],
) -> None:
    if not rows:
        return
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
