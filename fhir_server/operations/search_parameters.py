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
import logging
from collections.abc import Callable
from typing import Any

from psycopg_pool import AsyncConnectionPool

from fhir_server.search.registry import SearchRegistry
from fhir_server.storage.notify import NotifiedLoop
from fhir_server.storage.search_parameters import (
    SEARCH_PARAMETER_CHANNEL,
    build_registry,
    load_definitions,
)

__all__ = ["CustomSearchParameters"]

_log = logging.getLogger(__name__)


class CustomSearchParameters(NotifiedLoop):
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
        super().__init__(conninfo, SEARCH_PARAMETER_CHANNEL, poll_seconds, "search-parameters")
        self.base = base
        self.registry = base
        self.pool = pool
        self.on_change = on_change
        self._seen: object = []  # what was loaded: nothing stored means nothing to change
        self._lock = asyncio.Lock()

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

    async def run(self) -> None:
        while await self.wait():
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep serving with the registry it has
                _log.warning("search parameters: reload failed: %s", type(exc).__name__)
