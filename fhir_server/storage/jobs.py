"""Durable background jobs in PostgreSQL: bulk import, reindexing, and what comes after them.

A job is a row. Any server process claims the oldest queued one with ``FOR UPDATE SKIP LOCKED``,
so jobs survive restarts and spread over every process. A running job writes a heartbeat with
its progress; one whose heartbeat stops (its process died) is queued again and resumes from the
progress it recorded, which each kind of job makes idempotent. ``NOTIFY`` wakes idle runners at
once; they also poll, so a lost notification only delays a job.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from fhir_server.storage.notify import NotifiedLoop

__all__ = ["JOB_CHANNEL", "Job", "JobCancelled", "JobContext", "JobRunner", "Jobs"]

_log = logging.getLogger("fhir_server.jobs")

JOB_CHANNEL = "sdoh_fhir_jobs"
_COLUMNS = (
    "id, kind, state, params, progress, result, error, created_at, started_at, finished_at, "
    "attempts"
)


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    kind: str
    # queued | running | completed | failed | cancelled
    state: str
    params: dict[str, Any]
    progress: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int

    @property
    def finished(self) -> bool:
        return self.state in {"completed", "failed", "cancelled"}


def _job(row: Any) -> Job:
    return Job(*row)


class Jobs:
    """The job table on one connection (autocommit or inside the caller's transaction)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def submit(self, kind: str, params: Mapping[str, Any]) -> Job:
        row = await (
            await self.conn.execute(
                f"INSERT INTO job (id, kind, params) VALUES (%s, %s, %s) RETURNING {_COLUMNS}",
                (str(uuid.uuid4()), kind, Jsonb(dict(params))),
            )
        ).fetchone()
        await self.conn.execute(f"NOTIFY {JOB_CHANNEL}")
        return _job(row)

    async def get(self, id: str) -> Job | None:
        row = await (
            await self.conn.execute(f"SELECT {_COLUMNS} FROM job WHERE id = %s", (id,))
        ).fetchone()
        return _job(row) if row else None

    async def claim(self, kinds: list[str], stale_seconds: float) -> Job | None:
        """The oldest queued job of ``kinds`` (or one whose runner stopped beating), now running."""
        row = await (
            await self.conn.execute(
                f"""
                UPDATE job SET state = 'running', started_at = coalesce(started_at, now()),
                       heartbeat_at = now(), attempts = attempts + 1
                WHERE id = (
                    SELECT id FROM job
                    WHERE kind = ANY(%(kinds)s) AND (
                        state = 'queued' OR (
                            state = 'running'
                            AND heartbeat_at < now() - make_interval(secs => %(stale)s)))
                    ORDER BY created_at
                    FOR UPDATE SKIP LOCKED
                    LIMIT 1)
                RETURNING {_COLUMNS}
                """,
                {"kinds": kinds, "stale": stale_seconds},
            )
        ).fetchone()
        return _job(row) if row else None

    async def beat(self, id: str, progress: Mapping[str, Any]) -> bool:
        """Record progress; False when the job was cancelled (the runner should stop)."""
        row = await (
            await self.conn.execute(
                "UPDATE job SET progress = %s, heartbeat_at = now() "
                "WHERE id = %s AND state = 'running' RETURNING id",
                (Jsonb(dict(progress)), id),
            )
        ).fetchone()
        return row is not None

    async def complete(self, id: str, result: Mapping[str, Any]) -> None:
        await self.conn.execute(
            "UPDATE job SET state = 'completed', result = %s, finished_at = now() "
            "WHERE id = %s AND state = 'running'",
            (Jsonb(dict(result)), id),
        )

    async def fail(self, id: str, error: str) -> None:
        await self.conn.execute(
            "UPDATE job SET state = 'failed', error = %s, finished_at = now() "
            "WHERE id = %s AND state = 'running'",
            (error, id),
        )

    async def add_input(self, id: str, part: int, data: bytes) -> None:
        await self.conn.execute(
            "INSERT INTO job_input (job_id, part, data) VALUES (%s, %s, %s)", (id, part, data)
        )

    async def inputs(self, id: str) -> AsyncIterator[bytes]:
        """The job's spooled input, part by part (one part in memory at a time)."""
        parts = await (
            await self.conn.execute(
                "SELECT part FROM job_input WHERE job_id = %s ORDER BY part", (id,)
            )
        ).fetchall()
        for (part,) in parts:
            row = await (
                await self.conn.execute(
                    "SELECT data FROM job_input WHERE job_id = %s AND part = %s", (id, part)
                )
            ).fetchone()
            yield bytes(row[0])

    async def add_output(self, id: str, name: str, part: int, data: bytes) -> None:
        await self.conn.execute(
            "INSERT INTO job_output (job_id, name, part, data) VALUES (%s, %s, %s, %s)",
            (id, name, part, data),
        )

    async def output(self, id: str, name: str) -> AsyncIterator[bytes]:
        parts = await (
            await self.conn.execute(
                "SELECT part FROM job_output WHERE job_id = %s AND name = %s ORDER BY part",
                (id, name),
            )
        ).fetchall()
        for (part,) in parts:
            row = await (
                await self.conn.execute(
                    "SELECT data FROM job_output WHERE job_id = %s AND name = %s AND part = %s",
                    (id, name, part),
                )
            ).fetchone()
            yield bytes(row[0])

    async def cancel(self, id: str) -> bool:
        """Cancel a job that has not finished; False if there is none to cancel."""
        row = await (
            await self.conn.execute(
                "UPDATE job SET state = 'cancelled', finished_at = now() "
                "WHERE id = %s AND state IN ('queued', 'running') RETURNING id",
                (id,),
            )
        ).fetchone()
        return row is not None


class JobCancelled(Exception):
    """Raised in a running job whose row was cancelled, to stop it."""


@dataclass(slots=True)
class JobContext:
    """What a running job sees: its row, and a way to record progress."""

    job: Job
    pool: AsyncConnectionPool[Any]

    async def progress(self, **values: Any) -> None:
        """Record progress (merged into what was recorded); raises if the job was cancelled."""
        merged = {**self.job.progress, **values}
        async with self.pool.connection() as conn:
            alive = await Jobs(conn).beat(self.job.id, merged)
        self.job = Job(**{**_as_dict(self.job), "progress": merged})
        if not alive:
            raise JobCancelled(f"job {self.job.id} was cancelled")


def _as_dict(job: Job) -> dict[str, Any]:
    return {name: getattr(job, name) for name in Job.__slots__}


Handler = Callable[[JobContext], Awaitable[Mapping[str, Any]]]


class JobRunner(NotifiedLoop):
    """Claims and runs jobs in this process, one at a time, until stopped."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        conninfo: str,
        handlers: Mapping[str, Handler],
        *,
        poll_seconds: float = 5.0,
        stale_seconds: float = 120.0,
    ) -> None:
        super().__init__(conninfo, JOB_CHANNEL, poll_seconds, "jobs")
        self.pool = pool
        self.handlers = dict(handlers)
        self.stale_seconds = stale_seconds

    async def run(self) -> None:
        while not self.stopped:
            job = None
            try:
                async with self.pool.connection() as conn:
                    job = await Jobs(conn).claim(list(self.handlers), self.stale_seconds)
                if job is not None:
                    await self._execute(job)
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the runner outlives any one failure
                _log.warning("job runner: %s", type(exc).__name__)
            await self.wait()

    async def _execute(self, job: Job) -> None:
        context = JobContext(job, self.pool)
        beating = asyncio.create_task(self._beat(context))
        try:
            result = await self.handlers[job.kind](context)
        except JobCancelled:
            _log.info("job %s (%s) cancelled", job.id, job.kind)
            return
        except Exception as exc:
            # The message may quote input (a file's content); log only the type.
            _log.warning("job %s (%s) failed: %s", job.id, job.kind, type(exc).__name__)
            async with self.pool.connection() as conn:
                await Jobs(conn).fail(job.id, _describe(exc))
            return
        finally:
            beating.cancel()
        async with self.pool.connection() as conn:
            await Jobs(conn).complete(job.id, result)

    async def _beat(self, context: JobContext) -> None:
        while True:
            await asyncio.sleep(self.stale_seconds / 4)
            async with self.pool.connection() as conn:
                await Jobs(conn).beat(context.job.id, context.job.progress)


def _describe(exc: Exception) -> str:
    """A failure as a user may see it: our own errors say what went wrong, others only what."""
    message = getattr(exc, "message", None)
    if isinstance(message, str):
        return message
    return f"the job stopped on an unexpected {type(exc).__name__}"
