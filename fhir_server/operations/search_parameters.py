"""Custom search parameters in every server process: the registry kept in step with the database.

A SearchParameter written to the server (REST, a transaction Bundle or a bulk load) queues a
reindex job in the same transaction (migration 0007) and notifies every process, which reloads
the definitions here. From then on the process indexes the parameter on every write, and the
reindex job indexes what was stored before. Until that job has finished the parameter is
*pending*: a search that uses it is refused with a 400 that says why and where to watch the job
(search/parse.py), never answered from a half-built index.

Notifications can be missed (a dropped connection), so each process also reloads every
``poll_seconds``; a reindex job waits that long before its last pass over recent writes, by
which time every process extracts with the new definition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from fhir_server.search.registry import SearchRegistry
from fhir_server.storage.search_parameters import (
    SEARCH_PARAMETER_CHANNEL,
    build_registry,
    load_definitions,
)

__all__ = ["CustomSearchParameters"]

_log = logging.getLogger(__name__)


class CustomSearchParameters:
    """This process's search registry: the built-in parameters and the stored definitions.

    ``on_change`` is called with each new registry (the app swaps it in for searches and
    writes). :meth:`refresh` reloads at once; :meth:`start` keeps reloading on notification
    and every ``poll_seconds``.
    """

    def __init__(
        self,
        base: SearchRegistry,
        pool: AsyncConnectionPool[Any],
        conninfo: str,
        on_change: Callable[[SearchRegistry], None],
        *,
        poll_seconds: float = 5.0,
    ) -> None:
        self.base = base
        self.registry = base
        self.pool = pool
        self.conninfo = conninfo
        self.on_change = on_change
        self.poll_seconds = poll_seconds
        self._seen: object = ()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False

    async def refresh(self) -> SearchRegistry:
        """Reload the stored definitions; the registry they give (unchanged if they are)."""
        async with self._lock:
            async with self.pool.connection() as conn:
                definitions = await load_definitions(conn)
            seen = [(d.id, d.version_id, d.job_id, d.job_state, d.job_version) for d in definitions]
            if seen != self._seen:
                self.registry = build_registry(self.base, definitions)
                self._seen = seen
                self.on_change(self.registry)
            return self.registry

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._reload(), name="search-parameters"),
            asyncio.create_task(self._listen(), name="search-parameters-listen"),
        ]

    async def stop(self) -> None:
        self._stopped = True  # see JobRunner.stop: a cancel alone may be lost in wait_for
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _reload(self) -> None:
        while not self._stopped:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
            if self._stopped:
                return
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep serving with the registry it has
                _log.warning("search parameters: reload failed: %s", type(exc).__name__)

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {SEARCH_PARAMETER_CHANNEL}")
                    self._wake.set()  # catch up on what was missed while not listening
                    async for _ in conn.notifies():
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(self.poll_seconds)
