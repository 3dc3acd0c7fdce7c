"""The repository: every read and write of resources goes through one of these, one per request.

The caller owns the connection and its transaction; the repository never commits. Writes validate
the resource, store the canonical JSON text, append history and rewrite the search-index rows in
the same transaction. Conditional writes hold a transaction-scoped advisory lock on the normalized
criteria, so identical concurrent requests are serialized (http.html#cond-update).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import orjson
from sqlalchemy import and_, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from fhir_server.core.errors import (
    Gone,
    InvalidRequest,
    InvalidResource,
    Issue,
    MultipleMatches,
    NotFound,
    PreconditionFailed,
)
from fhir_server.core.schema import INDEX_TABLES, compartment, resource, resource_history
from fhir_server.search.extract import IndexExtractor, ResourceIndex, patient_compartment_ids
from fhir_server.search.parse import SearchRequest
from fhir_server.search.registry import SearchRegistry, load_patient_compartment
from fhir_server.search.sql import Cursor, build_count, build_ids, build_search, decode_cursor
from profiles.models import ResourceInvalid, validate_resource

__all__ = [
    "HistoryEntry",
    "HistoryPage",
    "Indexer",
    "Repository",
    "SearchPage",
    "StoredResource",
    "WriteOutcome",
    "format_instant",
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


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    resource: StoredResource
    method: str
    seq: int


@dataclass(frozen=True, slots=True)
class HistoryPage:
    entries: tuple[HistoryEntry, ...]
    next_cursor: str | None


class Indexer:
    """Index extractors per resource type, each parameter's FHIRPath compiled once."""

    def __init__(self, registry: SearchRegistry) -> None:
        self.registry = registry
        self._extractors: dict[str, IndexExtractor] = {}
        self._compartment = load_patient_compartment()

    def extract(self, resource_type: str, body: dict[str, Any]) -> ResourceIndex:
        extractor = self._extractors.get(resource_type)
        if extractor is None:
            params = self.registry.for_type(resource_type).values()
            extractor = self._extractors[resource_type] = IndexExtractor(params)
        return extractor.extract(body)

    def compartment_params(self, resource_type: str) -> Sequence[str]:
        return self._compartment.get(resource_type, ())


def format_instant(moment: datetime) -> str:
    """An R4 instant with milliseconds, in UTC."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _now() -> datetime:
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _canonical(
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


def _content(body: dict[str, Any]) -> dict[str, Any]:
    """What an update compares to decide it changes nothing: all but id, versionId, lastUpdated."""
    meta = {
        k: v for k, v in (body.get("meta") or {}).items() if k not in {"versionId", "lastUpdated"}
    }
    rest = {k: v for k, v in body.items() if k not in {"id", "meta"}}
    if meta:
        rest["meta"] = meta
    return rest


def _lock_key(text_key: str) -> Any:
    return func.pg_advisory_xact_lock(func.hashtextextended(text_key, 0))


def normalize_criteria(resource_type: str, items: Sequence[tuple[str, str]]) -> str:
    """The criteria in one canonical form, the key of the advisory lock."""
    return f"{resource_type}?{urlencode(sorted(items))}"


class Repository:
    """Reads and writes resources on one connection, inside the caller's transaction."""

    def __init__(self, conn: AsyncConnection, indexer: Indexer) -> None:
        self.conn = conn
        self.indexer = indexer

    # -- reads ---------------------------------------------------------------------------------

    async def read(self, resource_type: str, id: str) -> StoredResource:
        """http://hl7.org/fhir/R4/http.html#read"""
        row = (
            await self.conn.execute(
                select(
                    resource.c.version_id,
                    resource.c.last_updated,
                    resource.c.deleted,
                    resource.c.body,
                ).where(resource.c.resource_type == resource_type, resource.c.id == id)
            )
        ).first()
        if row is None:
            raise NotFound(f"{resource_type}/{id} is not known")
        stored = StoredResource(
            resource_type,
            id,
            row.version_id,
            row.last_updated,
            row.deleted,
            row.body.encode() if row.body is not None else None,
        )
        if stored.deleted:
            raise _gone(stored)
        return stored

    async def vread(self, resource_type: str, id: str, version_id: int) -> StoredResource:
        """http://hl7.org/fhir/R4/http.html#vread"""
        h = resource_history
        row = (
            await self.conn.execute(
                select(h.c.last_updated, h.c.deleted, h.c.body).where(
                    h.c.resource_type == resource_type, h.c.id == id, h.c.version_id == version_id
                )
            )
        ).first()
        if row is None:
            raise NotFound(f"{resource_type}/{id} has no version {version_id}")
        stored = StoredResource(
            resource_type,
            id,
            version_id,
            row.last_updated,
            row.deleted,
            row.body.encode() if row.body is not None else None,
        )
        if stored.deleted:
            raise _gone(stored)
        return stored

    async def search(self, request: SearchRequest) -> SearchPage:
        """http://hl7.org/fhir/R4/search.html: one page of matches, keyset-paged."""
        cursor = decode_cursor(request.cursor, len(request.sort)) if request.cursor else None
        total = await self._total(request)
        if request.summary == "count":
            return SearchPage((), None, None, total)
        rows = (await self.conn.execute(build_search(request, cursor))).all()
        more = len(rows) > request.count
        rows = rows[: request.count]
        backwards = cursor is not None and cursor.backwards
        if backwards:
            rows.reverse()
        found = tuple(
            StoredResource(
                request.resource_type,
                row.id,
                row.version_id,
                row.last_updated,
                False,
                row.body.encode(),
            )
            for row in rows
        )
        arity = len(request.sort)

        def position(row: Any, back: bool) -> Cursor:
            return Cursor(tuple(row[5 + i] for i in range(arity)), row.rid, back)

        next_cursor = previous_cursor = None
        if rows:
            if more or backwards:
                next_cursor = position(rows[-1], False)
            if (cursor is not None and not backwards) or (backwards and more):
                previous_cursor = position(rows[0], True)
        return SearchPage(found, next_cursor, previous_cursor, total)

    async def _total(self, request: SearchRequest) -> int | None:
        if request.total == "accurate" or request.summary == "count":
            return int((await self.conn.execute(build_count(request))).scalar_one())
        if request.total == "estimate":
            # The planner's row estimate: no scan, so cheap on any size of table.
            compiled = build_count(request).compile(dialect=self.conn.dialect)
            plan = (
                await self.conn.exec_driver_sql(
                    f"EXPLAIN (FORMAT JSON) {compiled}", dict(compiled.params)
                )
            ).scalar_one()
            node = (plan if isinstance(plan, list) else orjson.loads(plan))[0]["Plan"]
            while node.get("Node Type") == "Aggregate" and node.get("Plans"):
                node = node["Plans"][0]
            return int(node["Plan Rows"])
        return None

    async def find(self, request: SearchRequest, limit: int = 2) -> list[str]:
        """Ids of up to ``limit`` resources matching ``request`` (for conditional interactions)."""
        rows = await self.conn.execute(build_ids(request, limit))
        return [row[0] for row in rows]

    async def history(
        self,
        resource_type: str | None = None,
        id: str | None = None,
        *,
        since: datetime | None = None,
        at: datetime | None = None,
        count: int = 20,
        cursor: str | None = None,
    ) -> HistoryPage:
        """http://hl7.org/fhir/R4/http.html#history, newest first."""
        h = resource_history
        query = select(h)
        if resource_type is not None:
            query = query.where(h.c.resource_type == resource_type)
        if id is not None:
            query = query.where(h.c.id == id)
        if since is not None:
            query = query.where(h.c.last_updated >= since)
        if at is not None:
            newer = resource_history.alias("newer")
            query = query.where(
                h.c.last_updated <= at,
                ~select(newer.c.version_id)
                .where(
                    newer.c.resource_type == h.c.resource_type,
                    newer.c.id == h.c.id,
                    newer.c.version_id > h.c.version_id,
                    newer.c.last_updated <= at,
                )
                .exists(),
            )
        if cursor is not None:
            try:
                stamp, _, seq = cursor.partition("~")
                position = (datetime.fromisoformat(stamp), int(seq))
            except ValueError:
                raise InvalidRequest("the history paging cursor is not valid") from None
            query = query.where(
                (h.c.last_updated < position[0])
                | and_(h.c.last_updated == position[0], h.c.seq < position[1])
            )
        query = query.order_by(h.c.last_updated.desc(), h.c.seq.desc()).limit(count + 1)
        rows = (await self.conn.execute(query)).all()
        entries = tuple(
            HistoryEntry(
                StoredResource(
                    row.resource_type,
                    row.id,
                    row.version_id,
                    row.last_updated,
                    row.deleted,
                    row.body.encode() if row.body is not None else None,
                ),
                row.method,
                row.seq,
            )
            for row in rows[:count]
        )
        next_cursor = None
        if len(rows) > count and entries:
            last = entries[-1]
            next_cursor = f"{last.resource.last_updated.isoformat()}~{last.seq}"
        return HistoryPage(entries, next_cursor)

    # -- writes --------------------------------------------------------------------------------

    async def create(
        self,
        resource_type: str,
        body: dict[str, Any],
        *,
        if_none_exist: SearchRequest | None = None,
    ) -> WriteOutcome:
        """http://hl7.org/fhir/R4/http.html#create (and conditional create)."""
        _check(resource_type, body)
        if if_none_exist is not None:
            await self._lock(normalize_criteria(resource_type, if_none_exist.query))
            found = await self.find(if_none_exist)
            if len(found) > 1:
                raise MultipleMatches("the If-None-Exist criteria match more than one resource")
            if found:
                return WriteOutcome(await self.read(resource_type, found[0]), created=False)
        return await self._insert(resource_type, str(uuid.uuid4()), body)

    async def update(
        self,
        resource_type: str,
        id: str,
        body: dict[str, Any],
        *,
        if_match: int | None = None,
    ) -> WriteOutcome:
        """http://hl7.org/fhir/R4/http.html#update, including update-as-create."""
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
        _check(resource_type, body)
        await self._lock(f"{resource_type}/{id}")
        current = (
            await self.conn.execute(
                select(
                    resource.c.rid,
                    resource.c.version_id,
                    resource.c.deleted,
                    resource.c.body,
                    resource.c.last_updated,
                ).where(resource.c.resource_type == resource_type, resource.c.id == id)
            )
        ).first()
        if current is None:
            if if_match is not None:
                raise PreconditionFailed(f"{resource_type}/{id} does not exist (If-Match)")
            return await self._insert(resource_type, id, body)
        if if_match is not None and if_match != current.version_id:
            raise PreconditionFailed(
                f"version conflict: {resource_type}/{id} is at version {current.version_id}, "
                f"not {if_match}"
            )
        if not current.deleted and _content(orjson.loads(current.body)) == _content(body):
            # An update that changes nothing makes no new version.
            return WriteOutcome(
                StoredResource(
                    resource_type,
                    id,
                    current.version_id,
                    current.last_updated,
                    False,
                    current.body.encode(),
                ),
                created=False,
            )
        version_id = current.version_id + 1
        now = _now()
        stored_body = _canonical(resource_type, id, version_id, now, body)
        text_body = orjson.dumps(stored_body).decode()
        await self.conn.execute(
            update(resource)
            .where(resource.c.resource_type == resource_type, resource.c.id == id)
            .values(version_id=version_id, last_updated=now, deleted=False, body=text_body)
        )
        await self._append_history(resource_type, id, version_id, now, "PUT", text_body)
        await self._drop_index(resource_type, current.rid)
        await self._write_index(resource_type, id, current.rid, stored_body)
        stored = StoredResource(resource_type, id, version_id, now, False, text_body.encode())
        return WriteOutcome(stored, created=current.deleted)

    async def conditional_update(
        self, criteria: SearchRequest, body: dict[str, Any], *, if_match: int | None = None
    ) -> WriteOutcome:
        """http://hl7.org/fhir/R4/http.html#cond-update"""
        resource_type = criteria.resource_type
        _check(resource_type, body)
        await self._lock(normalize_criteria(resource_type, criteria.query))
        found = await self.find(criteria)
        if len(found) > 1:
            raise MultipleMatches("the criteria match more than one resource")
        if not found:
            if "id" in body:
                return await self.update(resource_type, body["id"], body, if_match=if_match)
            return await self._insert(resource_type, str(uuid.uuid4()), body)
        if "id" in body and body["id"] != found[0]:
            raise InvalidRequest("the resource id does not match the resource the criteria found")
        return await self.update(
            resource_type, found[0], {**body, "id": found[0]}, if_match=if_match
        )

    async def delete(self, resource_type: str, id: str) -> StoredResource | None:
        """http://hl7.org/fhir/R4/http.html#delete: soft; None if it was already deleted."""
        await self._lock(f"{resource_type}/{id}")
        current = (
            await self.conn.execute(
                select(resource.c.rid, resource.c.version_id, resource.c.deleted).where(
                    resource.c.resource_type == resource_type, resource.c.id == id
                )
            )
        ).first()
        if current is None:
            raise NotFound(f"{resource_type}/{id} is not known")
        if current.deleted:
            return None
        version_id = current.version_id + 1
        now = _now()
        await self.conn.execute(
            update(resource)
            .where(resource.c.resource_type == resource_type, resource.c.id == id)
            .values(version_id=version_id, last_updated=now, deleted=True, body=None)
        )
        await self._append_history(resource_type, id, version_id, now, "DELETE", None)
        await self._drop_index(resource_type, current.rid)
        return StoredResource(resource_type, id, version_id, now, True, None)

    async def conditional_delete(self, criteria: SearchRequest) -> StoredResource | None:
        """http://hl7.org/fhir/R4/http.html#cdelete: deletes the single match, if any."""
        await self._lock(normalize_criteria(criteria.resource_type, criteria.query))
        found = await self.find(criteria)
        if len(found) > 1:
            raise MultipleMatches("the criteria match more than one resource")
        if not found:
            return None
        return await self.delete(criteria.resource_type, found[0])

    async def _lock(self, key: str) -> None:
        await self.conn.execute(select(_lock_key(key)))

    async def _insert(self, resource_type: str, id: str, body: dict[str, Any]) -> WriteOutcome:
        now = _now()
        stored_body = _canonical(resource_type, id, 1, now, body)
        text_body = orjson.dumps(stored_body).decode()
        rid = (
            await self.conn.execute(
                insert(resource)
                .values(
                    resource_type=resource_type,
                    id=id,
                    rid=func.nextval("resource_rid_seq"),
                    version_id=1,
                    last_updated=now,
                    deleted=False,
                    body=text_body,
                )
                .returning(resource.c.rid)
            )
        ).scalar_one()
        await self._append_history(resource_type, id, 1, now, "POST", text_body)
        await self._write_index(resource_type, id, rid, stored_body)
        stored = StoredResource(resource_type, id, 1, now, False, text_body.encode())
        return WriteOutcome(stored, created=True)

    async def _append_history(
        self,
        resource_type: str,
        id: str,
        version_id: int,
        now: datetime,
        method: str,
        body: str | None,
    ) -> None:
        await self.conn.execute(
            insert(resource_history).values(
                resource_type=resource_type,
                id=id,
                version_id=version_id,
                seq=func.nextval("resource_history_seq"),
                last_updated=now,
                method=method,
                deleted=body is None,
                body=body,
            )
        )

    async def _write_index(
        self, resource_type: str, id: str, rid: int, body: dict[str, Any]
    ) -> None:
        index = self.indexer.extract(resource_type, body)
        common = {"resource_type": resource_type, "rid": rid}
        for kind, rows in (
            ("string", index.strings),
            ("token", index.tokens),
            ("date", index.dates),
            ("number", index.numbers),
            ("quantity", index.quantities),
            ("uri", index.uris),
            ("reference", index.references),
        ):
            if rows:
                table = INDEX_TABLES[kind]
                await self.conn.execute(
                    insert(table), [{**common, **_row_dict(row)} for row in rows]
                )
        patients = patient_compartment_ids(
            resource_type, id, index.references, self.indexer.compartment_params(resource_type)
        )
        if patients:
            await self.conn.execute(
                insert(compartment),
                [
                    {**common, "compartment_type": "Patient", "compartment_id": p}
                    for p in sorted(patients)
                ],
            )

    async def _drop_index(self, resource_type: str, rid: int) -> None:
        # One round trip for all eight tables.
        tables = [*INDEX_TABLES.values(), compartment]
        ctes = ", ".join(
            f"d{i} AS (DELETE FROM {t.name} WHERE resource_type = :t AND rid = :rid)"
            for i, t in enumerate(tables[:-1])
        )
        await self.conn.execute(
            text(
                f"WITH {ctes} DELETE FROM {tables[-1].name} WHERE resource_type = :t AND rid = :rid"
            ),
            {"t": resource_type, "rid": rid},
        )


def _row_dict(row: Any) -> dict[str, Any]:
    return {name: getattr(row, name) for name in row.__slots__}


def _check(resource_type: str, body: dict[str, Any]) -> None:
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
