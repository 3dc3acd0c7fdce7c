"""The repository: every read and write of resources goes through one of these, one per request.

The caller owns the connection and its transaction; the repository never commits. Writes validate
the resource, store the canonical JSON text, append history and rewrite the search-index rows in
the same transaction. Conditional writes hold a transaction-scoped advisory lock on the normalized
criteria, so identical concurrent requests are serialized (http.html#cond-update). Hot statements
are fixed SQL text; searches and history are built as SQL text with bound parameters only.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import orjson
import psycopg

from fhir_server.conformance import Conformance
from fhir_server.core.errors import (
    Conflict,
    Gone,
    InvalidRequest,
    InvalidResource,
    Issue,
    MultipleMatches,
    NotFound,
    PreconditionFailed,
)
from fhir_server.search.extract import (
    IndexExtractor,
    ResourceIndex,
    extract_text,
    patient_compartment_ids,
)
from fhir_server.search.parse import SearchRequest
from fhir_server.search.registry import SearchRegistry, load_patient_compartment
from fhir_server.search.sql import (
    Cursor,
    Sql,
    build_count,
    build_ids,
    build_search,
    decode_cursor,
)
from fhir_server.storage.conformance import CONFORMANCE_TYPES
from profiles.models import ResourceInvalid, validate_resource

__all__ = [
    "HistoryEntry",
    "HistoryPage",
    "Indexer",
    "Repository",
    "SearchPage",
    "StoredResource",
    "WriteOutcome",
    "INDEX_LAYOUT",
    "canonical_resource",
    "check_resource",
    "format_instant",
    "INSERT_STATEMENT",
    "UPDATE_STATEMENT",
    "index_params",
    "index_rows",
    "now_millis",
    "same_content",
]


@dataclass(frozen=True, slots=True)
class StoredResource:
    """One version of a resource as stored; ``body`` is the JSON text served as is."""

    resource_type: str
    id: str
    version_id: int
    last_updated: datetime
    deleted: bool
    body: bytes | None

    @property
    def etag(self) -> str:
        return f'W/"{self.version_id}"'


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    resource: StoredResource
    # True: a new resource was made (201); False: an existing one was updated or matched (200).
    created: bool


@dataclass(frozen=True, slots=True)
class SearchPage:
    resources: tuple[StoredResource, ...]
    next_cursor: Cursor | None
    previous_cursor: Cursor | None
    total: int | None
    # Each resource's values of the request's sort keys (a near key's: the distance in km).
    sort_values: tuple[tuple[Any, ...], ...] = ()


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    resource: StoredResource
    method: str
    seq: int


@dataclass(frozen=True, slots=True)
class HistoryPage:
    entries: tuple[HistoryEntry, ...]
    next_cursor: str | None
    previous_cursor: str | None = None


class Indexer:
    """Index extractors per resource type, each parameter's FHIRPath compiled once."""

    def __init__(self, registry: SearchRegistry) -> None:
        self.registry = registry
        self._extractors: dict[str, IndexExtractor] = {}
        self._compartment = load_patient_compartment()

    def use(self, registry: SearchRegistry) -> None:
        """Extract with ``registry`` from now on (custom search parameters came or went)."""
        self._extractors = {}
        self.registry = registry

    def extract(self, resource_type: str, body: dict[str, Any]) -> ResourceIndex:
        extractor = self._extractors.get(resource_type)
        if extractor is None:
            params = self.registry.for_type(resource_type).values()
            extractor = self._extractors[resource_type] = IndexExtractor(
                params, registry=self.registry
            )
        return extractor.extract(body)

    def compartment_params(self, resource_type: str) -> Sequence[str]:
        return self._compartment.get(resource_type, ())


def format_instant(moment: datetime) -> str:
    """An R4 instant with milliseconds, in UTC."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_millis() -> datetime:
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def canonical_resource(
    resource_type: str, id: str, version_id: int, last_updated: datetime, body: dict[str, Any]
) -> dict[str, Any]:
    """The resource as the server stores it: resourceType, id and meta first, meta filled in."""
    meta = {
        k: v for k, v in (body.get("meta") or {}).items() if k not in {"versionId", "lastUpdated"}
    }
    out: dict[str, Any] = {
        "resourceType": resource_type,
        "id": id,
        "meta": {"versionId": str(version_id), "lastUpdated": format_instant(last_updated), **meta},
    }
    for key, value in body.items():
        if key not in out:
            out[key] = value
    return out


def same_content(stored: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether writing ``new`` over ``stored`` changes nothing (no new version)."""
    return _content(stored) == _content(new)


def _content(body: dict[str, Any]) -> dict[str, Any]:
    """What an update compares to decide it changes nothing: all but id, versionId, lastUpdated."""
    meta = {
        k: v for k, v in (body.get("meta") or {}).items() if k not in {"versionId", "lastUpdated"}
    }
    rest = {k: v for k, v in body.items() if k not in {"id", "meta"}}
    if meta:
        rest["meta"] = meta
    return rest


_READ = (
    "SELECT version_id, last_updated, deleted, body FROM resource"
    " WHERE resource_type = %s AND id = %s"
)
_VREAD = (
    "SELECT last_updated, deleted, body FROM resource_history"
    " WHERE resource_type = %s AND id = %s AND version_id = %s"
)
_CURRENT = (
    "SELECT rid, version_id, deleted, body, last_updated FROM resource"
    " WHERE resource_type = %s AND id = %s"
)
_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
# Index field of ResourceIndex -> (table, value columns after resource_type, rid, param).
# ``ord`` ties the rows of one composite element together (search/extract.py).
INDEX_LAYOUT = {
    "strings": ("idx_string", ("norm", "value", "ord")),
    "tokens": ("idx_token", ("system", "code", "text", "type_system", "type_code", "ord")),
    "dates": ("idx_date", ("low", "high", "ord")),
    "numbers": ("idx_number", ("value", "low", "high", "ord")),
    "quantities": ("idx_quantity", ("system", "code", "unit", "value", "low", "high", "ord")),
    "uris": ("idx_uri", ("value", "ord")),
    "references": (
        "idx_reference",
        ("target_type", "target_id", "url", "identifier_system", "identifier_value", "ord"),
    ),
    "geo": ("idx_geo", ("lat", "lon")),
}
# Longest text kept in a btree-indexed column: PostgreSQL refuses index rows over ~2.7 kB.
_INDEXED_TEXT_MAX = 1000


def index_rows(
    resource_type: str, rid: int, index: ResourceIndex
) -> dict[str, list[tuple[Any, ...]]]:
    """Rows per index field (``tokens``, ...) as tuples in the column order of ``INDEX_LAYOUT``."""
    rows: dict[str, list[tuple[Any, ...]]] = {}
    for field, (_, columns) in INDEX_LAYOUT.items():
        found = getattr(index, field)
        if found:
            rows[field] = [
                (
                    resource_type,
                    rid,
                    row.param,
                    *(_bounded(getattr(row, column)) for column in columns),
                )
                for row in found
            ]
    return rows


def _bounded(value: Any) -> Any:
    if type(value) is str and len(value) > _INDEXED_TEXT_MAX:
        return value[:_INDEXED_TEXT_MAX]
    return value


_NUMERIC = {("idx_number", c) for c in ("value", "low", "high")} | {
    ("idx_quantity", c) for c in ("value", "low", "high")
}
_TIMESTAMP = {("idx_date", "low"), ("idx_date", "high")}
_DOUBLE = {("idx_geo", "lat"), ("idx_geo", "lon")}


def _cast(table: str, column: str) -> str:
    if column == "ord":
        return "::integer"
    if (table, column) in _NUMERIC:
        return "::numeric"
    if (table, column) in _TIMESTAMP:
        return "::timestamptz"
    if (table, column) in _DOUBLE:
        return "::double precision"
    return ""


def _insert_index(rid: str, source: str) -> str:
    """CTEs inserting every index table's rows, read from one JSON parameter ``%(rows)s``.

    ``rows`` maps each index field to a list of rows, each a list in column order; one JSON
    text costs the driver far less than an array per column.
    """
    ctes = []
    for field, (table, columns) in INDEX_LAYOUT.items():
        values = ", ".join(
            f"(x ->> {i + 1}){_cast(table, column)}" for i, column in enumerate(columns)
        )
        ctes.append(
            f"i_{table} AS (INSERT INTO {table} (resource_type, rid, param, {', '.join(columns)})"
            f" SELECT %(t)s, {rid}, x ->> 0, {values}"
            f" FROM {source}jsonb_array_elements(%(rows)s::jsonb -> '{field}') AS x)"
        )
    # Full text (search.html#text): one row per resource, its words as 'simple' tsvectors
    # (search/sql.py says why 'simple').
    ctes.append(
        "i_idx_text AS (INSERT INTO idx_text (resource_type, rid, narrative, content)"
        f" SELECT %(t)s, {rid}, to_tsvector('simple', %(narrative)s),"
        f" to_tsvector('simple', %(content)s){' FROM new' if source else ''})"
    )
    ctes.append(
        "i_compartment AS (INSERT INTO compartment"
        " (resource_type, rid, compartment_type, compartment_id)"
        f" SELECT %(t)s, {rid}, 'Patient', x.id FROM {source}unnest(%(patients)s::text[]) AS x(id)"
        " ON CONFLICT DO NOTHING)"
    )
    return ", ".join(ctes)


# A create in one statement: the resource row, its first history row and every index row.
# The text never varies, so each connection prepares it once.
_INSERT = (
    "WITH new AS ("
    " INSERT INTO resource (resource_type, id, rid, version_id, last_updated, deleted, body)"
    " VALUES (%(t)s, %(id)s, nextval('resource_rid_seq'), 1, %(now)s, false, %(body)s)"
    " RETURNING rid),"
    " hist AS (INSERT INTO resource_history"
    " (resource_type, id, version_id, seq, last_updated, method, deleted, body)"
    " VALUES (%(t)s, %(id)s, 1, nextval('resource_history_seq'), %(now)s, 'POST', false,"
    " %(body)s)), " + _insert_index("new.rid", "new, ") + " SELECT rid FROM new"
)
# The new current row and its history row.
_UPDATE_ROW = (
    "WITH changed AS ("
    " UPDATE resource SET version_id = %(v)s, last_updated = %(now)s, deleted = %(deleted)s,"
    " body = %(body)s WHERE resource_type = %(t)s AND id = %(id)s)"
    " INSERT INTO resource_history"
    " (resource_type, id, version_id, seq, last_updated, method, deleted, body)"
    " VALUES (%(t)s, %(id)s, %(v)s, nextval('resource_history_seq'), %(now)s, %(method)s,"
    " %(deleted)s, %(body)s)"
)
# An update in one statement: all sub-statements see the same snapshot, so the deletes remove
# only the old index rows, never the ones inserted beside them.
_UPDATE = (
    "WITH changed AS ("
    " UPDATE resource SET version_id = %(v)s, last_updated = %(now)s, deleted = false,"
    " body = %(body)s WHERE resource_type = %(t)s AND id = %(id)s),"
    " hist AS (INSERT INTO resource_history"
    " (resource_type, id, version_id, seq, last_updated, method, deleted, body)"
    " VALUES (%(t)s, %(id)s, %(v)s, nextval('resource_history_seq'), %(now)s, 'PUT', false,"
    " %(body)s)), "
    + ", ".join(
        f"d_{table} AS (DELETE FROM {table} WHERE resource_type = %(t)s AND rid = %(rid)s)"
        for table, _ in INDEX_LAYOUT.values()
    )
    + ", d_idx_text AS (DELETE FROM idx_text WHERE resource_type = %(t)s AND rid = %(rid)s)"
    + ", d_compartment AS (DELETE FROM compartment WHERE resource_type = %(t)s"
    " AND rid = %(rid)s AND NOT compartment_id = ANY(%(patients)s::text[])), "
    + _insert_index("%(rid)s", "")
    + " SELECT 1"
)
# Every index row of a resource (on delete), all tables in one round trip.
_DROP_INDEX = (
    "WITH "
    + ", ".join(
        f"d{i} AS (DELETE FROM {table} WHERE resource_type = %(t)s AND rid = %(rid)s)"
        for i, (table, _) in enumerate(INDEX_LAYOUT.values())
    )
    + ", d_text AS (DELETE FROM idx_text WHERE resource_type = %(t)s AND rid = %(rid)s)"
    + " DELETE FROM compartment WHERE resource_type = %(t)s AND rid = %(rid)s"
)


def normalize_criteria(resource_type: str, items: Sequence[tuple[str, str]]) -> str:
    """The criteria in one canonical form, the key of the advisory lock."""
    return f"{resource_type}?{urlencode(sorted(set(items)))}"


# Reloads the profiles and terminology on the given connection, for the canonical urls a write
# needs and does not find (a reload of a url missed a moment ago may be skipped).
RefreshConformance = Callable[[Any, Sequence[str]], Awaitable[Conformance]]


class Repository:
    """Reads and writes resources on one connection, inside the caller's transaction."""

    def __init__(
        self,
        conn: psycopg.AsyncConnection[Any],
        indexer: Indexer,
        conformance: Conformance | None = None,
        refresh_conformance: RefreshConformance | None = None,
    ) -> None:
        self.conn = conn
        self.indexer = indexer
        # The profiles and terminology writes are checked against (None: the base rules only),
        # and how to reload them when a write claims a profile not known yet.
        self.conformance = conformance
        self._refresh_conformance = refresh_conformance
        # Whether a profile or terminology resource was written (the caller reloads them).
        self.wrote_definitions = False

    async def _know_profiles(self, resource_type: str, body: dict[str, Any]) -> None:
        """Reload the profiles first if ``body`` claims one unknown here: it may have been
        posted a moment ago, through another server process. On this connection: taking a
        second one from the pool while holding this one could wait for ever under load."""
        if self.conformance is None or self._refresh_conformance is None:
            return
        unknown = self.conformance.unknown_claims(resource_type, body)
        if unknown:
            self.conformance = await self._refresh_conformance(self.conn, unknown)

    def check(self, resource_type: str, body: dict[str, Any]) -> None:
        """Validate a write of ``body``: the R4 base rules, then the profiles it must conform to
        (400 for the first, 422 for the second)."""
        check_resource(resource_type, body)
        if resource_type in CONFORMANCE_TYPES:
            self.wrote_definitions = True
        if self.conformance is not None:
            self.conformance.check_write(resource_type, body)

    # -- reads ---------------------------------------------------------------------------------

    async def read(self, resource_type: str, id: str) -> StoredResource:
        """http://hl7.org/fhir/R4/http.html#read"""
        row = await (await self.conn.execute(_READ, (resource_type, id))).fetchone()
        if row is None:
            raise NotFound(f"{resource_type}/{id} is not known")
        version_id, last_updated, deleted, body = row
        stored = StoredResource(
            resource_type,
            id,
            version_id,
            last_updated,
            deleted,
            body.encode() if body is not None else None,
        )
        if deleted:
            raise _gone(stored)
        return stored

    async def vread(self, resource_type: str, id: str, version_id: int) -> StoredResource:
        """http://hl7.org/fhir/R4/http.html#vread"""
        cursor = await self.conn.execute(_VREAD, (resource_type, id, version_id))
        row = await cursor.fetchone()
        if row is None:
            raise NotFound(f"{resource_type}/{id} has no version {version_id}")
        last_updated, deleted, body = row
        stored = StoredResource(
            resource_type,
            id,
            version_id,
            last_updated,
            deleted,
            body.encode() if body is not None else None,
        )
        if deleted:
            raise _gone(stored)
        return stored

    async def search(self, request: SearchRequest) -> SearchPage:
        """http://hl7.org/fhir/R4/search.html: one page of matches, keyset-paged."""
        kinds = [key.kind for key in request.sort]
        cursor = decode_cursor(request.cursor, kinds) if request.cursor else None
        total = await self._total(request)
        if request.summary == "count":
            return SearchPage((), None, None, total)
        rows = await self._fetch(build_search(request, cursor))
        more = len(rows) > request.count
        rows = rows[: request.count]
        backwards = cursor is not None and cursor.backwards
        if backwards:
            rows.reverse()
        # Row: rid, id, version_id, last_updated, body, sort values...
        found = tuple(
            StoredResource(request.resource_type, row[1], row[2], row[3], False, row[4].encode())
            for row in rows
        )
        arity = len(request.sort)

        def position(row: Any, back: bool) -> Cursor:
            return Cursor(tuple(row[5 + i] for i in range(arity)), row[0], back)

        next_cursor = previous_cursor = None
        if rows:
            if more or backwards:
                next_cursor = position(rows[-1], False)
            if (cursor is not None and not backwards) or (backwards and more):
                previous_cursor = position(rows[0], True)
        values = tuple(tuple(row[5 : 5 + arity]) for row in rows)
        return SearchPage(found, next_cursor, previous_cursor, total, values)

    async def _total(self, request: SearchRequest) -> int | None:
        if request.total == "accurate" or request.summary == "count":
            return int((await self._fetch(build_count(request)))[0][0])
        if request.total == "estimate":
            # The planner's row estimate: no scan, so cheap on any size of table.
            count = build_count(request)
            cursor = await self.conn.execute("EXPLAIN (FORMAT JSON) " + count.text, count.params)
            row = await cursor.fetchone()
            assert row is not None
            plan = row[0] if isinstance(row[0], list) else orjson.loads(row[0])
            node = plan[0]["Plan"]
            while node.get("Node Type") == "Aggregate" and node.get("Plans"):
                node = node["Plans"][0]
            return int(node["Plan Rows"])
        return None

    async def find(self, request: SearchRequest, limit: int = 2) -> list[str]:
        """Ids of up to ``limit`` resources matching ``request`` (for conditional interactions)."""
        return [row[0] for row in await self._fetch(build_ids(request, limit))]

    async def history(
        self,
        resource_type: str | None = None,
        id: str | None = None,
        *,
        since: datetime | None = None,
        at: tuple[datetime, datetime] | None = None,
        count: int = 20,
        cursor: str | None = None,
    ) -> HistoryPage:
        """http://hl7.org/fhir/R4/http.html#history, newest first."""
        where: list[str] = []
        params: dict[str, Any] = {}
        if resource_type is not None:
            where.append("h.resource_type = %(t)s")
            params["t"] = resource_type
        if id is not None:
            where.append("h.id = %(id)s")
            params["id"] = id
        if since is not None:
            where.append("h.last_updated >= %(since)s")
            params["since"] = since
        if at is not None:
            # Versions current at some point in [low, high): written before high, and not
            # replaced by a newer version at or before low.
            where.append(
                "h.last_updated < %(high)s AND NOT EXISTS (SELECT 1 FROM resource_history n"
                " WHERE n.resource_type = h.resource_type AND n.id = h.id"
                " AND n.version_id > h.version_id AND n.last_updated <= %(low)s)"
            )
            params["low"], params["high"] = at
        # A cursor is "time~seq" for the older entries after it, "time~seq~b" for the newer ones.
        backwards = False
        if cursor is not None:
            parts = cursor.split("~")
            try:
                if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "b"):
                    raise ValueError("bad cursor")
                params["c_time"] = datetime.fromisoformat(parts[0])
                params["c_seq"] = int(parts[1])
            except ValueError:
                raise InvalidRequest("the history paging cursor is not valid") from None
            backwards = len(parts) == 3
            op = ">" if backwards else "<"
            where.append(
                f"(h.last_updated {op} %(c_time)s"
                f" OR (h.last_updated = %(c_time)s AND h.seq {op} %(c_seq)s))"
            )
        params["limit"] = count + 1
        rows = await self._fetch(
            Sql(
                "SELECT h.resource_type, h.id, h.version_id, h.last_updated, h.deleted, h.body,"
                " h.method, h.seq FROM resource_history h"
                + (" WHERE " + " AND ".join(where) if where else "")
                + (
                    " ORDER BY h.last_updated, h.seq"
                    if backwards
                    else " ORDER BY h.last_updated DESC, h.seq DESC"
                )
                + " LIMIT %(limit)s",
                params,
            )
        )
        entries = tuple(
            HistoryEntry(
                StoredResource(
                    row[0],
                    row[1],
                    row[2],
                    row[3],
                    row[4],
                    row[5].encode() if row[5] is not None else None,
                ),
                row[6],
                row[7],
            )
            for row in rows[:count]
        )
        more = len(rows) > count
        if backwards:
            entries = entries[::-1]

        def position(entry: HistoryEntry) -> str:
            return f"{entry.resource.last_updated.isoformat()}~{entry.seq}"

        next_cursor = previous_cursor = None
        if entries:
            if more or backwards:
                next_cursor = position(entries[-1])
            if (cursor is not None and not backwards) or (backwards and more):
                previous_cursor = position(entries[0]) + "~b"
        return HistoryPage(entries, next_cursor, previous_cursor)

    # -- writes --------------------------------------------------------------------------------

    async def create(
        self,
        resource_type: str,
        body: dict[str, Any],
        *,
        if_none_exist: SearchRequest | None = None,
        id: str | None = None,
    ) -> WriteOutcome:
        """http://hl7.org/fhir/R4/http.html#create (and conditional create).

        Without ``if_none_exist`` this is a single statement, atomic without a transaction.
        ``id`` is a new id the server chose beforehand (a transaction gives ids to the resources
        it creates before writing any, to rewrite references); it must be fresh, like a UUID.
        """
        await self._know_profiles(resource_type, body)
        self.check(resource_type, body)
        if if_none_exist is not None:
            await self._lock(normalize_criteria(resource_type, if_none_exist.query))
            found = await self.find(if_none_exist)
            if len(found) > 1:
                raise MultipleMatches("the If-None-Exist criteria match more than one resource")
            if found:
                return WriteOutcome(await self.read(resource_type, found[0]), created=False)
        return await self._insert(resource_type, id or str(uuid.uuid4()), body)

    async def update(
        self,
        resource_type: str,
        id: str,
        body: dict[str, Any],
        *,
        if_match: int | None = None,
    ) -> WriteOutcome:
        """http://hl7.org/fhir/R4/http.html#update, including update-as-create."""
        if not _ID.fullmatch(id):
            raise InvalidRequest("a resource id is 1-64 characters: letters, digits, '-' and '.'")
        if body.get("id") != id:
            raise InvalidRequest(
                "the resource id must be present and equal the id in the URL",
                issues=(
                    Issue(
                        "error",
                        "invalid",
                        "Resource.id does not match the URL",
                        (f"{resource_type}.id",),
                    ),
                ),
            )
        await self._know_profiles(resource_type, body)
        self.check(resource_type, body)
        await self._lock(f"{resource_type}/{id}")
        current = await (await self.conn.execute(_CURRENT, (resource_type, id))).fetchone()
        if current is None:
            if if_match is not None:
                raise PreconditionFailed(f"{resource_type}/{id} does not exist (If-Match)")
            return await self._insert(resource_type, id, body)
        rid, current_version, deleted, current_body, current_updated = current
        if if_match is not None and if_match != current_version:
            raise PreconditionFailed(
                f"version conflict: {resource_type}/{id} is at version {current_version}, "
                f"not {if_match}"
            )
        if not deleted and _content(orjson.loads(current_body)) == _content(body):
            # An update that changes nothing makes no new version.
            return WriteOutcome(
                StoredResource(
                    resource_type,
                    id,
                    current_version,
                    current_updated,
                    False,
                    current_body.encode(),
                ),
                created=False,
            )
        version_id = current_version + 1
        now = now_millis()
        stored_body = canonical_resource(resource_type, id, version_id, now, body)
        text_body = orjson.dumps(stored_body).decode()
        await self.conn.execute(
            _UPDATE,
            {
                "t": resource_type,
                "id": id,
                "rid": rid,
                "v": version_id,
                "now": now,
                "body": text_body,
                **self._index_params(resource_type, id, stored_body),
            },
        )
        stored = StoredResource(resource_type, id, version_id, now, False, text_body.encode())
        return WriteOutcome(stored, created=deleted)

    async def conditional_update(
        self, criteria: SearchRequest, body: dict[str, Any], *, if_match: int | None = None
    ) -> WriteOutcome:
        """http://hl7.org/fhir/R4/http.html#cond-update"""
        resource_type = criteria.resource_type
        await self._know_profiles(resource_type, body)
        self.check(resource_type, body)
        await self._lock(normalize_criteria(resource_type, criteria.query))
        found = await self.find(criteria)
        if len(found) > 1:
            raise MultipleMatches("the criteria match more than one resource")
        if not found:
            if "id" in body:
                current = await (
                    await self.conn.execute(_CURRENT, (resource_type, body["id"]))
                ).fetchone()
                if current is not None and not current[2]:
                    # http://hl7.org/fhir/R5/http.html#cond-update: the id names a resource
                    # the criteria do not match; writing it would overwrite an unrelated one.
                    raise Conflict(
                        f"{resource_type}/{body['id']} exists but the criteria do not match it"
                    )
                return await self.update(resource_type, body["id"], body, if_match=if_match)
            return await self._insert(resource_type, str(uuid.uuid4()), body)
        if "id" in body and body["id"] != found[0]:
            raise InvalidRequest("the resource id does not match the resource the criteria found")
        await self._lock(f"{resource_type}/{found[0]}")
        if await self.find(criteria, limit=2) != found:
            # Changed by a write that did not go through these criteria (a delete by id, say).
            raise Conflict("the matching resource changed while this update waited; retry")
        return await self.update(
            resource_type, found[0], {**body, "id": found[0]}, if_match=if_match
        )

    async def delete(
        self, resource_type: str, id: str, *, if_match: int | None = None
    ) -> StoredResource | None:
        """http://hl7.org/fhir/R4/http.html#delete: soft; None if it was already deleted."""
        if resource_type in CONFORMANCE_TYPES:
            self.wrote_definitions = True
        await self._lock(f"{resource_type}/{id}")
        current = await (await self.conn.execute(_CURRENT, (resource_type, id))).fetchone()
        if current is None:
            raise NotFound(f"{resource_type}/{id} is not known")
        rid, current_version, deleted = current[:3]
        if if_match is not None and if_match != current_version:
            raise PreconditionFailed(
                f"version conflict: {resource_type}/{id} is at version {current_version}, "
                f"not {if_match}"
            )
        if deleted:
            return None
        version_id = current_version + 1
        now = now_millis()
        await self.conn.execute(
            _UPDATE_ROW,
            {
                "t": resource_type,
                "id": id,
                "v": version_id,
                "now": now,
                "deleted": True,
                "body": None,
                "method": "DELETE",
            },
        )
        await self.conn.execute(_DROP_INDEX, {"t": resource_type, "rid": rid})
        return StoredResource(resource_type, id, version_id, now, True, None)

    async def conditional_delete(
        self, criteria: SearchRequest, *, if_match: int | None = None
    ) -> StoredResource | None:
        """http://hl7.org/fhir/R4/http.html#cdelete: deletes the single match, if any."""
        await self._lock(normalize_criteria(criteria.resource_type, criteria.query))
        found = await self.find(criteria)
        if len(found) > 1:
            raise MultipleMatches("the criteria match more than one resource")
        if not found:
            return None
        return await self.delete(criteria.resource_type, found[0], if_match=if_match)

    async def lock_resource(self, resource_type: str, id: str) -> None:
        """Hold off other writes of ``resource_type/id`` until this transaction ends.

        The lock every write of the resource takes: a read-modify-write such as PATCH takes it
        before reading, so no write can land between its read and its update.
        """
        await self._lock(f"{resource_type}/{id}")

    async def _lock(self, key: str) -> None:
        await self.conn.execute(_LOCK, (key,))

    async def _fetch(self, sql: Sql) -> list[Any]:
        return await (await self.conn.execute(sql.text, sql.params)).fetchall()

    async def _insert(self, resource_type: str, id: str, body: dict[str, Any]) -> WriteOutcome:
        now = now_millis()
        stored_body = canonical_resource(resource_type, id, 1, now, body)
        text_body = orjson.dumps(stored_body).decode()
        params = {
            "t": resource_type,
            "id": id,
            "now": now,
            "body": text_body,
            **self._index_params(resource_type, id, stored_body),
        }
        await self.conn.execute(_INSERT, params)
        stored = StoredResource(resource_type, id, 1, now, False, text_body.encode())
        return WriteOutcome(stored, created=True)

    def _index_params(self, resource_type: str, id: str, body: dict[str, Any]) -> dict[str, Any]:
        return index_params(self.indexer, resource_type, id, body)


def index_params(
    indexer: Indexer, resource_type: str, id: str, body: dict[str, Any]
) -> dict[str, Any]:
    """The parameters the write statements (``INSERT_STATEMENT``, ``UPDATE_STATEMENT``) turn
    into index rows and compartment members."""
    index = indexer.extract(resource_type, body)
    rows = {
        field: [
            [row.param, *(_json_value(_bounded(getattr(row, c))) for c in columns)]
            for row in getattr(index, field)
        ]
        for field, (_, columns) in INDEX_LAYOUT.items()
    }
    patients = patient_compartment_ids(
        resource_type, id, index.references, indexer.compartment_params(resource_type)
    )
    narrative, content = extract_text(body)
    return {
        "rows": orjson.dumps(rows).decode(),
        "patients": sorted(patients),
        "narrative": narrative,
        "content": content,
    }


# For writers outside the repository (the feeds): a create, and an update, each one statement.
INSERT_STATEMENT = _INSERT
UPDATE_STATEMENT = _UPDATE


def _json_value(value: Any) -> Any:
    # Decimals travel as text, so no precision is lost; PostgreSQL casts them back to numeric.
    return str(value) if isinstance(value, Decimal) else value


def check_resource(resource_type: str, body: dict[str, Any]) -> None:
    if body.get("resourceType") != resource_type:
        raise InvalidRequest(
            f"the body is a {body.get('resourceType')!r}, not a {resource_type}",
            issues=(
                Issue(
                    "error", "invalid", f"resourceType must be {resource_type}", ("resourceType",)
                ),
            ),
        )
    try:
        validate_resource(body)
    except ResourceInvalid as exc:
        raise InvalidResource(
            str(exc),
            issues=tuple(
                Issue("error", "structure", i.message, (i.expression,)) for i in exc.issues
            ),
        ) from None


def _gone(stored: StoredResource) -> Gone:
    error = Gone(f"{stored.resource_type}/{stored.id} was deleted")
    error.resource = stored  # type: ignore[attr-defined]
    return error
