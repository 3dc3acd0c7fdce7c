"""The creates of a transaction Bundle written set-based: one COPY per table, not a statement each.

A transaction gives every resource it creates a fresh id before writing any
(http://hl7.org/fhir/R4/http.html#trules), so its creates are known to be new: they can be
gathered and written together. :class:`CreateBatch` validates each one as it is added (so an
invalid resource is refused as its entry comes, as a single create would refuse it), and
:meth:`CreateBatch.write` stores them all in the caller's transaction: the rows of every table
come from the bulk loader's :class:`~fhir_server.storage.bulk.BatchEncoder`, which makes the same
stored bytes, history row, index rows, Patient-compartment rows and full-text row as
``Repository.create`` (tests/fhir_server/api/test_bundle_rows.py holds the two equal). Every
resource of one batch has the same ``lastUpdated``: they are written in one transaction.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Sequence
from typing import Any

from fhir_server.search.registry import SearchRegistry
from fhir_server.storage.bulk import TABLES, BatchEncoder, EncodedBatch
from fhir_server.storage.repository import (
    Indexer,
    Repository,
    StoredResource,
    now_millis,
)

__all__ = ["CreateBatch"]

_RESERVE = (
    "SELECT array_agg(nextval('resource_rid_seq')), array_agg(nextval('resource_history_seq'))"
    " FROM generate_series(1, %s)"
)
_TABLE = {name: position for position, (name, _) in enumerate(TABLES)}
_BODY = _TABLE["resource"]
_TEXT = _TABLE["idx_text"]
# Full text (search.html#text): the encoder's lines hold the texts; the tsvectors are made here,
# as a single create makes them.
_TEXT_ROWS = (
    "INSERT INTO idx_text (resource_type, rid, narrative, content)"
    " SELECT t, rid, to_tsvector('simple', n), to_tsvector('simple', c)"
    " FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::text[]) AS x (t, rid, n, c)"
)
_COPY = {
    position: f"COPY {name} ({', '.join(columns)}) FROM STDIN"
    for position, (name, columns) in enumerate(TABLES)
    if position != _TEXT
}
# The escapes of PostgreSQL's COPY text format that the encoder writes (sql-copy.html).
_UNESCAPE = re.compile(rb"\\(.)")
_UNESCAPED = {b"\\": b"\\", b"t": b"\t", b"n": b"\n", b"r": b"\r"}


class CreateBatch:
    """New resources gathered on a repository and written in one go."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._resources: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self._resources)

    def add(self, resource_type: str, id: str, body: dict[str, Any]) -> None:
        """Validate a create of ``body`` as ``resource_type/id`` and keep it for :meth:`write`.

        ``id`` must be new, such as a UUID the server chose; a body's own ``id`` is ignored,
        as a create ignores it. Raises what ``Repository.create`` raises for an invalid body.
        """
        self.repo.check(resource_type, body)
        self._resources.append({**body, "id": id} if body.get("id") != id else body)

    async def write(self) -> list[StoredResource]:
        """Store every resource added since the last write, in the order added."""
        resources, self._resources = self._resources, []
        if not resources:
            return []
        conn = self.repo.conn
        row = await (await conn.execute(_RESERVE, (len(resources),))).fetchone()
        assert row is not None
        rids, seqs = row
        now = now_millis()
        batch = _encoder(self.repo.indexer).encode(resources, rids, seqs, now)
        await conn.execute(_TEXT_ROWS, _text_columns(batch.lines[_TEXT]))
        async with conn.cursor() as cursor:
            for position, statement in _COPY.items():
                data = batch.lines[position]
                if data:
                    async with cursor.copy(statement) as copy:
                        await copy.write(data)
        return [
            StoredResource(resource_type, id, 1, now, False, body)
            for (resource_type, id), body in zip(batch.keys, _bodies(batch), strict=True)
        ]


_ENCODERS: weakref.WeakKeyDictionary[Indexer, tuple[SearchRegistry, BatchEncoder]] = (
    weakref.WeakKeyDictionary()
)


def _encoder(indexer: Indexer) -> BatchEncoder:
    """The process's encoder of ``indexer``, made anew when its registry changes.

    The encoder caches index rows per registry (``Indexer.use`` swaps in another one when
    custom search parameters come or go), so each registry gets an encoder of its own.
    """
    found = _ENCODERS.get(indexer)
    if found is None or found[0] is not indexer.registry:
        found = _ENCODERS[indexer] = (indexer.registry, BatchEncoder(indexer))
    return found[1]


def _text_columns(lines: bytes) -> tuple[list[str], list[int], list[str], list[str]]:
    """The idx_text COPY lines as columns: resource types, rids, narratives, contents."""
    types: list[str] = []
    rids: list[int] = []
    narratives: list[str] = []
    contents: list[str] = []
    for line in lines.split(b"\n")[:-1]:
        resource_type, rid, narrative, content = line.split(b"\t")
        types.append(resource_type.decode())
        rids.append(int(rid))
        narratives.append(_unescape(narrative).decode())
        contents.append(_unescape(content).decode())
    return types, rids, narratives, contents


def _bodies(batch: EncodedBatch) -> Sequence[bytes]:
    """Each resource's stored JSON text, the last field of its resource line."""
    lines = batch.lines[_BODY].split(b"\n")[:-1]
    return [_unescape(line.rsplit(b"\t", 1)[1]) for line in lines]


def _unescape(field: bytes) -> bytes:
    if b"\\" not in field:
        return field
    return _UNESCAPE.sub(lambda m: _UNESCAPED.get(m[1], m[1]), field)
