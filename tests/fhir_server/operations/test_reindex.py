"""The reindex job on its own: it goes on where a stopped run left off, and stops when cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from fhir_server.operations.reindex import run_reindex
from fhir_server.operations.search_parameters import CustomSearchParameters
from fhir_server.search.registry import SearchRegistry
from fhir_server.storage.database import libpq_url, open_pool
from fhir_server.storage.jobs import JobCancelled, JobContext, Jobs
from fhir_server.storage.repository import Indexer, Repository

REGISTRY = SearchRegistry.load_default()


@pytest.fixture
async def pool(clean_database: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    pool = await open_pool(clean_database, 4)
    try:
        yield pool
    finally:
        await pool.close()


async def _patients(pool: AsyncConnectionPool[Any], n: int) -> list[int]:
    async with pool.connection() as conn:
        repo = Repository(conn, Indexer(REGISTRY))
        for i in range(n):
            body = {
                "resourceType": "Patient",
                "id": f"p{i:02d}",
                "name": [{"family": f"Resumed{i:02d}"}],
            }
            await repo.update("Patient", f"p{i:02d}", body)
        rows = await (
            await conn.execute(
                "SELECT rid FROM resource WHERE resource_type = 'Patient' ORDER BY rid"
            )
        ).fetchall()
        await conn.execute("DELETE FROM idx_string WHERE resource_type = 'Patient'")
        # Written well before the job: its last pass over recent writes leaves them alone.
        await conn.execute("UPDATE resource SET last_updated = last_updated - interval '1 hour'")
    return [row[0] for row in rows]


async def _families(url: str) -> set[str]:
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute(
            "SELECT value FROM idx_string WHERE resource_type = 'Patient' AND param = 'family'"
        ).fetchall()
    return {row[0] for row in rows}


def _parameters(pool: AsyncConnectionPool[Any], url: str) -> CustomSearchParameters:
    return CustomSearchParameters(REGISTRY, pool, libpq_url(url), lambda registry: None)


async def test_a_resumed_job_goes_on_after_the_last_batch_done(
    pool: AsyncConnectionPool[Any], clean_database: str
) -> None:
    rids = await _patients(pool, 10)
    async with pool.connection() as conn:
        jobs = Jobs(conn)
        submitted = await jobs.submit("reindex", {"types": ["Patient"]})
        job = await jobs.claim(["reindex"], stale_seconds=60)
        assert job is not None and job.id == submitted.id
        # As a run that died after its first batch of four left it.
        await jobs.beat(job.id, {"type": "Patient", "after": {"Patient": rids[3]}, "done": 4})
        job = await jobs.get(job.id)
    assert job is not None
    result = await run_reindex(
        JobContext(job, pool),
        parameters=_parameters(pool, clean_database),
        resource_types=frozenset({"Patient"}),
        settle_seconds=0,
    )
    assert result["indexed"] == {"Patient": 10}
    assert await _families(clean_database) == {f"Resumed{i:02d}" for i in range(4, 10)}


async def test_a_cancelled_job_stops(pool: AsyncConnectionPool[Any], clean_database: str) -> None:
    await _patients(pool, 3)
    async with pool.connection() as conn:
        jobs = Jobs(conn)
        await jobs.submit("reindex", {"types": ["Patient"]})
        job = await jobs.claim(["reindex"], stale_seconds=60)
        assert job is not None
        assert await jobs.cancel(job.id)
    with pytest.raises(JobCancelled):
        await run_reindex(
            JobContext(job, pool),
            parameters=_parameters(pool, clean_database),
            resource_types=frozenset({"Patient"}),
            settle_seconds=0,
        )


async def test_the_last_pass_indexes_what_was_written_after_the_job_was_queued(
    pool: AsyncConnectionPool[Any], clean_database: str
) -> None:
    rids = await _patients(pool, 5)
    async with pool.connection() as conn:
        jobs = Jobs(conn)
        await jobs.submit("reindex", {"types": ["Patient"]})
        job = await jobs.claim(["reindex"], stale_seconds=60)
        assert job is not None
        # The scan is past every row, but p02 was written (by a process that had not yet
        # reloaded its parameters, say) after the job was queued.
        await jobs.beat(job.id, {"after": {"Patient": rids[-1]}, "done": 5})
        await conn.execute("UPDATE resource SET last_updated = now() WHERE id = 'p02'")
        job = await jobs.get(job.id)
    assert job is not None
    await run_reindex(
        JobContext(job, pool),
        parameters=_parameters(pool, clean_database),
        resource_types=frozenset({"Patient"}),
        settle_seconds=0,
    )
    assert await _families(clean_database) == {"Resumed02"}


async def test_a_row_a_writer_holds_is_waited_for_not_skipped(
    pool: AsyncConnectionPool[Any], clean_database: str
) -> None:
    await _patients(pool, 5)
    async with pool.connection() as conn:
        jobs = Jobs(conn)
        await jobs.submit("reindex", {"types": ["Patient"]})
        job = await jobs.claim(["reindex"], stale_seconds=60)
        assert job is not None
    async with await psycopg.AsyncConnection.connect(libpq_url(clean_database)) as writer:
        await writer.execute("SELECT 1 FROM resource WHERE id = 'p01' FOR UPDATE")
        running = asyncio.create_task(
            run_reindex(
                JobContext(job, pool),
                parameters=_parameters(pool, clean_database),
                resource_types=frozenset({"Patient"}),
                settle_seconds=0,
            )
        )
        await asyncio.sleep(0.5)
        assert not running.done()  # waiting for the writer
        await writer.rollback()
    await running
    assert await _families(clean_database) == {f"Resumed{i:02d}" for i in range(5)}
