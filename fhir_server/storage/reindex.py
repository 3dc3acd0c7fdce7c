"""Index rows of some search parameters made anew for stored resources: a custom parameter's.

A whole reindex rewrites every row of a resource (``Repository.reindex``); a new or changed
custom SearchParameter needs only its own rows, which this writes set-based: one ``DELETE`` of
the parameter's old rows for the batch, whatever table they are in (its type may have
changed), then one ``COPY`` per table of the new rows.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import orjson

from fhir_server.search.extract import IndexExtractor
from fhir_server.storage.repository import INDEX_LAYOUT, index_rows

__all__ = ["reindex_params"]

_DELETE = (
    "WITH "
    + ", ".join(
        f"d_{table} AS (DELETE FROM {table}"
        " WHERE resource_type = %(t)s AND rid = ANY(%(rids)s) AND param = ANY(%(codes)s))"
        for table, _ in INDEX_LAYOUT.values()
    )
    + " SELECT 1"
)


async def reindex_params(
    conn: Any,
    resource_type: str,
    resources: Sequence[tuple[int, str, str | bytes]],
    extractor: IndexExtractor,
    codes: Collection[str],
) -> None:
    """Replace the rows under ``codes`` of the stored ``(rid, id, body)`` with ``extractor``'s.

    ``codes`` are every code the parameters write (``code$0``... for a composite's parts).
    Run inside the caller's transaction, with the resources' rows locked.
    """
    rids = [rid for rid, _, _ in resources]
    await conn.execute(_DELETE, {"t": resource_type, "rids": rids, "codes": list(codes)})
    rows: dict[str, list[tuple[Any, ...]]] = {}
    for rid, _, body in resources:
        for field, found in index_rows(
            resource_type, rid, extractor.extract(orjson.loads(body))
        ).items():
            rows.setdefault(field, []).extend(found)
    for field, found in rows.items():
        table, columns = INDEX_LAYOUT[field]
        statement = f"COPY {table} (resource_type, rid, param, {', '.join(columns)}) FROM STDIN"
        async with conn.cursor() as cursor, cursor.copy(statement) as copy:
            for row in found:
                await copy.write_row(row)
