"""The reindex job: every stored resource of some types indexed anew with the current parameters.

Queued for each SearchParameter written (its base types; migration 0007) and by
``POST [base]/$reindex`` or ``POST [base]/[type]/$reindex`` (every type, or one), which also
fills index rows added by later migrations for resources stored before them.

Resources are taken in ``rid`` order, a batch per transaction, the rows locked ``FOR UPDATE``:
a batch waits for a writer holding one of its rows, so none is skipped (a deadlock with a
writer is retried). The job records the last ``rid`` done per type, so a job picked up again
after a crash goes on where it stopped. A SearchParameter's job stops when a newer version of
the definition is written (that version's job takes over). Its last pass, once every process
has loaded the new definitions (``settle_seconds`` after the job was claimed), indexes again
what was written since the job was queued, so a write by a process that had not yet reloaded
is not missed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import orjson
import psycopg

from fhir_server.operations.search_parameters import CustomSearchParameters
from fhir_server.search.custom import params_from_definition
from fhir_server.search.extract import IndexExtractor, composite_code
from fhir_server.search.registry import SearchParam, SearchRegistry
from fhir_server.storage.jobs import JobContext
from fhir_server.storage.reindex import reindex_params, reindex_resources
from fhir_server.storage.repository import Indexer

__all__ = ["BATCH", "run_reindex"]

BATCH = 500
_ATTEMPTS = 5
_SCAN = (
    "SELECT rid, id, body FROM resource WHERE resource_type = %s AND rid > %s AND NOT deleted"
    " ORDER BY rid LIMIT %s FOR UPDATE"
)
_RECENT = (
    "SELECT rid, id, body FROM resource WHERE resource_type = %s AND last_updated >= %s"
    " AND rid > %s AND NOT deleted ORDER BY rid LIMIT %s FOR UPDATE"
)
_CURRENT_VERSION = (
    "SELECT version_id, deleted FROM resource"
    " WHERE resource_type = 'SearchParameter' AND id = %s FOR SHARE"
)
_COUNT = "SELECT count(*) FROM resource WHERE resource_type = %s AND NOT deleted"
_DEFINITION = (
    "SELECT version_id, deleted, body FROM resource"
    " WHERE resource_type = 'SearchParameter' AND id = %s"
)


async def run_reindex(
    context: JobContext,
    *,
    parameters: CustomSearchParameters,
    resource_types: frozenset[str],
    settle_seconds: float,
) -> Mapping[str, Any]:
    """Reindex the job's types; the summary is resources reindexed per type."""
    job = context.job
    registry = await parameters.refresh()
    write: _Write
    if "searchParameter" in job.params:
        params = await _definition_params(context, registry)
        if not params:
            return {"indexed": {}, "note": "nothing to index: the definition is not active"}
        types = sorted({p.resource_type for p in params})
        write = _ParamsWriter(
            params, registry, job.params["searchParameter"], job.params["versionId"]
        )
    else:
        types = [t for t in job.params.get("types", ()) if t in resource_types]
        indexer = Indexer(registry)

        async def write(conn: Any, resource_type: str, rows: Sequence[Any]) -> None:
            # Definitions may change while the job runs: each batch extracts with the newest.
            if indexer.registry is not parameters.registry:
                indexer.use(parameters.registry)
            await reindex_resources(conn, resource_type, rows, indexer)

    indexed: dict[str, int] = dict(job.progress.get("indexed", {}))
    started = time.monotonic()
    try:
        await _run(context, write, types, indexed, settle_seconds)
    except _Superseded:
        return {"indexed": indexed, "note": "superseded by a newer version of the definition"}
    return {"indexed": indexed, "scanSeconds": round(time.monotonic() - started, 3)}


async def _run(
    context: JobContext,
    write: _Write,
    types: Sequence[str],
    indexed: dict[str, int],
    settle_seconds: float,
) -> None:
    job = context.job
    for resource_type in types:
        if resource_type in job.progress.get("finished", ()):
            continue
        after = int(context.job.progress.get("after", {}).get(resource_type, 0))
        done = int(context.job.progress.get("done", 0)) if after else 0  # resumed mid-type
        total = await _count(context, resource_type)
        await context.progress(type=resource_type, total=total, done=done)
        indexed[resource_type] = await _scan(context, write, resource_type, _SCAN, (), after, done)
        finished = [*context.job.progress.get("finished", ()), resource_type]
        await context.progress(finished=finished, indexed=indexed)
    # The last pass: what was written since the job was queued, now that every process has
    # loaded the definitions this job indexes (the job is claimed only after its definition
    # committed, so the wait counts from the claim).
    settled = (job.started_at or job.created_at) + timedelta(seconds=settle_seconds)
    wait = (settled - datetime.now(UTC)).total_seconds()
    if wait > 0:
        await asyncio.sleep(wait)
    since = job.created_at - timedelta(seconds=1)
    for resource_type in types:
        await _scan(context, write, resource_type, _RECENT, (since,), 0, 0, record=False)


class _Write(Protocol):
    async def __call__(self, conn: Any, resource_type: str, rows: Sequence[Any]) -> None: ...


class _Superseded(Exception):
    """The job's SearchParameter was changed or deleted: a newer job indexes it."""


class _ParamsWriter:
    """Rewrites only the rows of a SearchParameter's parameters (storage/reindex.py).

    Each batch first checks, holding a share lock on the definition's row, that it is still
    the version the job indexes: a newer version's write waits for the batch, and the batches
    after it stop, so two versions' rows never interleave.
    """

    def __init__(
        self, params: Sequence[SearchParam], registry: SearchRegistry, id: str, version: int
    ) -> None:
        self.id = id
        self.version = version
        self.extractors = {
            t: IndexExtractor([p for p in params if p.resource_type == t], registry=registry)
            for t in {p.resource_type for p in params}
        }
        self.codes = {
            t: [
                code
                for p in params
                if p.resource_type == t
                for code in (p.code, *(composite_code(p.code, i) for i in range(len(p.components))))
            ]
            for t in self.extractors
        }

    async def __call__(self, conn: Any, resource_type: str, rows: Sequence[Any]) -> None:
        row = await (await conn.execute(_CURRENT_VERSION, (self.id,))).fetchone()
        if row is None or row[1] or row[0] != self.version:
            raise _Superseded
        await reindex_params(
            conn, resource_type, rows, self.extractors[resource_type], self.codes[resource_type]
        )


async def _definition_params(
    context: JobContext, registry: SearchRegistry
) -> Sequence[SearchParam]:
    """The parameters of the job's SearchParameter; none when there is nothing to index.

    Raises InvalidDefinition (the job fails with its message) when it cannot be indexed.
    """
    job = context.job
    async with context.pool.connection() as conn:
        row = await (await conn.execute(_DEFINITION, (job.params["searchParameter"],))).fetchone()
    if row is None or row[1] or row[0] != job.params.get("versionId"):
        return ()  # deleted, or superseded by a newer version with a job of its own
    body = orjson.loads(row[2])
    if body.get("status") != "active":
        return ()
    return params_from_definition(body, registry)


async def _count(context: JobContext, resource_type: str) -> int:
    async with context.pool.connection() as conn:
        row = await (await conn.execute(_COUNT, (resource_type,))).fetchone()
    return int(row[0]) if row else 0


async def _batch(
    context: JobContext,
    write: _Write,
    resource_type: str,
    statement: str,
    args: tuple[Any, ...],
) -> Sequence[Any]:
    """One batch in its own transaction; tried again when it deadlocks with a writer.

    The batch locks its rows (``FOR UPDATE``, in rid order) and waits for writers holding
    them, so none is skipped; a writer locking in another order may deadlock with it, and
    PostgreSQL then aborts one of the two.
    """
    for attempt in range(_ATTEMPTS):
        try:
            async with context.pool.connection() as conn, conn.transaction():
                rows = await (
                    await conn.execute(statement, (resource_type, *args, BATCH))
                ).fetchall()
                if rows:
                    await write(conn, resource_type, rows)
                return rows
        except psycopg.errors.DeadlockDetected:
            if attempt == _ATTEMPTS - 1:
                raise
            await asyncio.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


async def _scan(
    context: JobContext,
    write: _Write,
    resource_type: str,
    statement: str,
    extra: tuple[Any, ...],
    after: int,
    done: int,
    *,
    record: bool = True,
) -> int:
    """Reindex the rows ``statement`` pages through, a batch per transaction; the count done."""
    while True:
        rows = await _batch(context, write, resource_type, statement, (*extra, after))
        if not rows:
            return done
        after = rows[-1][0]
        done += len(rows)
        if record:
            positions = {**context.job.progress.get("after", {}), resource_type: after}
            await context.progress(after=positions, done=done)
        else:
            await context.progress()  # stops here if the job was cancelled
