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
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from fhir_server.search.custom import InvalidDefinition, params_from_definition
from fhir_server.search.registry import SearchParam, SearchRegistry
from fhir_server.storage.search_parameters import (
    SEARCH_PARAMETER_CHANNEL,
    StoredDefinition,
    load_definitions,
)

__all__ = ["CustomSearchParameters", "build_registry", "status_path"]

_log = logging.getLogger(__name__)


def status_path(job_id: str) -> str:
    """Where a reindex job's progress is polled, relative to the FHIR base."""
    return f"$reindex-poll-status/{job_id}"


def build_registry(base: SearchRegistry, definitions: Sequence[StoredDefinition]) -> SearchRegistry:
    """``base`` with the active stored definitions, each pending until its reindex completed."""
    added: list[SearchParam] = []
    # Composites name their components by canonical URL, which may be another custom
    # parameter's: resolve plain parameters first.
    ordered = sorted(definitions, key=lambda d: d.body.get("type") == "composite")
    for definition in ordered:
        body = definition.body
        if body.get("status") != "active":
            continue  # draft and retired definitions are not searched (searchparameter.html)
        try:
            params = params_from_definition(body, base.with_params(added))
        except InvalidDefinition as exc:
            added.extend(_refused(definition, str(exc)))
            continue
        pending = _pending(definition)
        added.extend(p if pending is None else replace(p, pending=pending) for p in params)
    return base.with_params(added)


def _pending(definition: StoredDefinition) -> str | None:
    where = f"SearchParameter/{definition.id}"
    if definition.job_id is None:
        return f"{where} has no reindex job; update it to index it"
    watch = f"see GET [base]/{status_path(definition.job_id)}"
    if definition.job_state == "failed":
        return f"indexing {where} failed: {definition.job_error}"
    if definition.job_state == "cancelled":
        return f"indexing {where} was cancelled; update it to index it again"
    if definition.job_state != "completed" or definition.job_version != definition.version_id:
        return f"{where} is being indexed ({watch})"
    return None


def _refused(definition: StoredDefinition, reason: str) -> list[SearchParam]:
    """Placeholders that make a search with the parameter say why it cannot be used."""
    code = definition.body.get("code")
    bases = definition.body.get("base")
    if not isinstance(code, str) or not isinstance(bases, list):
        return []
    pending = f"SearchParameter/{definition.id} cannot be indexed: {reason}"
    return [
        SearchParam(code=code, resource_type=b, type="special", expression=None, pending=pending)
        for b in bases
        if isinstance(b, str)
    ]


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
