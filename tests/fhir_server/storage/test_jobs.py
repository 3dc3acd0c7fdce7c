"""Durable jobs: claimed once across processes, resumed when a runner dies, cancellable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from fhir_server.storage.database import libpq_url, open_pool
from fhir_server.storage.jobs import JobContext, JobRunner, Jobs


@pytest.fixture
async def pool(clean_database: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    pool = await open_pool(clean_database, 4)
    try:
        yield pool
    finally:
        await pool.close()


async def test_submit_claim_complete(pool: AsyncConnectionPool[Any]) -> None:
    async with pool.connection() as conn:
        jobs = Jobs(conn)
        submitted = await jobs.submit("import", {"files": 2})
        assert submitted.state == "queued"
        claimed = await jobs.claim(["import"], stale_seconds=60)
        assert claimed is not None and claimed.id == submitted.id
        assert claimed.state == "running" and claimed.attempts == 1
        assert await jobs.claim(["import"], stale_seconds=60) is None
        assert await jobs.beat(claimed.id, {"done": 1})
        await jobs.complete(claimed.id, {"loaded": 10})
        done = await jobs.get(claimed.id)
    assert done is not None and done.finished
    assert (done.state, done.progress, done.result) == ("completed", {"done": 1}, {"loaded": 10})


async def test_concurrent_claims_never_take_the_same_job(pool: AsyncConnectionPool[Any]) -> None:
    async with pool.connection() as conn:
        for n in range(6):
            await Jobs(conn).submit("reindex", {"n": n})

    async def claim() -> str | None:
        async with pool.connection() as conn:
            job = await Jobs(conn).claim(["reindex"], stale_seconds=60)
            return job.id if job else None

    claimed = await asyncio.gather(*(claim() for _ in range(8)))
    taken = [c for c in claimed if c is not None]
    assert len(taken) == 6 and len(set(taken)) == 6


async def test_a_job_whose_runner_stopped_is_claimed_again(
    pool: AsyncConnectionPool[Any],
) -> None:
    async with pool.connection() as conn:
        jobs = Jobs(conn)
        submitted = await jobs.submit("import", {})
        first = await jobs.claim(["import"], stale_seconds=60)
        assert first is not None
        await jobs.beat(first.id, {"lines": 500})
        assert await jobs.claim(["import"], stale_seconds=60) is None
        await conn.execute(
            "UPDATE job SET heartbeat_at = now() - interval '5 minutes' WHERE id = %s",
            (submitted.id,),
        )
        again = await jobs.claim(["import"], stale_seconds=60)
    assert again is not None and again.id == submitted.id
    assert again.attempts == 2 and again.progress == {"lines": 500}


async def test_runner_runs_handlers_and_records_failures(
    pool: AsyncConnectionPool[Any], clean_database: str
) -> None:
    async def count(context: JobContext) -> Mapping[str, Any]:
        for n in range(1, 4):
            await context.progress(step=n)
        return {"total": context.job.params["to"]}

    async def broken(context: JobContext) -> Mapping[str, Any]:
        raise RuntimeError("secret patient name in a message")

    runner = JobRunner(
        pool, libpq_url(clean_database), {"count": count, "broken": broken}, poll_seconds=30
    )
    runner.start()
    try:
        await asyncio.sleep(0.5)  # the runner is listening; NOTIFY wakes it, not the 30 s poll
        async with pool.connection() as conn:
            ok = await Jobs(conn).submit("count", {"to": 3})
            bad = await Jobs(conn).submit("broken", {})
        for _ in range(100):
            async with pool.connection() as conn:
                states = [(await Jobs(conn).get(j.id)) for j in (ok, bad)]
            if all(s is not None and s.finished for s in states):
                break
            await asyncio.sleep(0.05)
    finally:
        await runner.stop()
    done, failed = states
    assert done is not None and done.state == "completed"
    assert done.result == {"total": 3} and done.progress == {"step": 3}
    assert failed is not None and failed.state == "failed"
    assert failed.error is not None and "secret" not in failed.error


async def test_cancel_stops_a_running_job(
    pool: AsyncConnectionPool[Any], clean_database: str
) -> None:
    started = asyncio.Event()
    steps: list[int] = []

    async def slow(context: JobContext) -> Mapping[str, Any]:
        started.set()
        for n in range(200):
            await asyncio.sleep(0.02)
            steps.append(n)
            await context.progress(step=n)
        return {}

    runner = JobRunner(pool, libpq_url(clean_database), {"slow": slow}, poll_seconds=0.1)
    runner.start()
    try:
        async with pool.connection() as conn:
            job = await Jobs(conn).submit("slow", {})
        await asyncio.wait_for(started.wait(), 10)
        async with pool.connection() as conn:
            assert await Jobs(conn).cancel(job.id)
            assert not await Jobs(conn).cancel(job.id)
        await asyncio.sleep(0.3)
        stopped_at = len(steps)
        await asyncio.sleep(0.2)
        async with await psycopg.AsyncConnection.connect(libpq_url(clean_database)) as conn:
            final = await Jobs(conn).get(job.id)
    finally:
        await runner.stop()
    assert final is not None and final.state == "cancelled"
    assert len(steps) == stopped_at < 200
