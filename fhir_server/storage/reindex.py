"""Index rows made anew for stored resources, a batch at a time, set-based.

:func:`reindex_resources` rewrites every row of each resource: typed index rows, full text and
Patient-compartment membership. A new or changed custom SearchParameter needs only its own rows:
:func:`reindex_params` deletes the parameter's old rows for the batch, whatever table they are
in (its type may have changed), and writes the new ones. Either way one ``DELETE`` statement,
then one ``COPY`` per index table.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import orjson

from fhir_server.search.extract import IndexExtractor, extract_text, patient_compartment_ids
from fhir_server.storage.repository import INDEX_LAYOUT, Indexer, index_rows

__all__ = ["reindex_params", "reindex_resources"]

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
    await _copy(conn, rows)


_DELETE_ALL = (
    "WITH "
    + ", ".join(
        f"d_{table} AS (DELETE FROM {table} WHERE resource_type = %(t)s AND rid = ANY(%(rids)s))"
        for table in (*(table for table, _ in INDEX_LAYOUT.values()), "idx_text")
    )
    + " DELETE FROM compartment WHERE resource_type = %(t)s AND rid = ANY(%(rids)s)"
)
# Full text as the write statements make it (repository.py): 'simple' tsvectors.
_TEXT = (
    "INSERT INTO idx_text (resource_type, rid, narrative, content)"
    " SELECT %(t)s, x.rid, to_tsvector('simple', x.narrative), to_tsvector('simple', x.content)"
    " FROM unnest(%(rids)s::bigint[], %(narratives)s::text[], %(contents)s::text[])"
    " AS x(rid, narrative, content)"
)
_COMPARTMENT = (
    "INSERT INTO compartment (resource_type, rid, compartment_type, compartment_id)"
    " SELECT %(t)s, x.rid, 'Patient', x.id FROM unnest(%(rids)s::bigint[], %(ids)s::text[])"
    " AS x(rid, id) ON CONFLICT DO NOTHING"
)


async def reindex_resources(
    conn: Any,
    resource_type: str,
    resources: Sequence[tuple[int, str, str | bytes]],
    indexer: Indexer,
) -> None:
    """Every index, full-text and compartment row of the stored ``(rid, id, body)`` made anew.

    Run inside the caller's transaction, with the resources' rows locked.
    """
    rids = [rid for rid, _, _ in resources]
    await conn.execute(_DELETE_ALL, {"t": resource_type, "rids": rids})
    rows: dict[str, list[tuple[Any, ...]]] = {}
    narratives: list[str] = []
    contents: list[str] = []
    members: tuple[list[int], list[str]] = ([], [])
    compartment = indexer.compartment_params(resource_type)
    for rid, id, text in resources:
        body = orjson.loads(text)
        index = indexer.extract(resource_type, body)
        for field, found in index_rows(resource_type, rid, index).items():
            rows.setdefault(field, []).extend(found)
        narrative, content = extract_text(body)
        narratives.append(narrative)
        contents.append(content)
        for patient in patient_compartment_ids(resource_type, id, index.references, compartment):
            members[0].append(rid)
            members[1].append(patient)
    await _copy(conn, rows)
    await conn.execute(
        _TEXT, {"t": resource_type, "rids": rids, "narratives": narratives, "contents": contents}
    )
    if members[0]:
        await conn.execute(
            _COMPARTMENT, {"t": resource_type, "rids": members[0], "ids": members[1]}
        )


async def _copy(conn: Any, rows: dict[str, list[tuple[Any, ...]]]) -> None:
    for field, found in rows.items():
        table, columns = INDEX_LAYOUT[field]
        statement = f"COPY {table} (resource_type, rid, param, {', '.join(columns)}) FROM STDIN"
        async with conn.cursor() as cursor, cursor.copy(statement) as copy:
            for row in found:
                await copy.write_row(row)
