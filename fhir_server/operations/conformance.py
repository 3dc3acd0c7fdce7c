"""Profiles and terminology in every server process: the bundled ones with those stored.

A StructureDefinition, CodeSystem, ValueSet or ConceptMap written to the server notifies every
process (a trigger: migration 0008), which reloads them here; each process also reloads every
``poll_seconds`` in case a notification was lost. A write that claims a profile this process does
not know yet asks for a reload first (:meth:`StoredConformance.refresh_soon`), so a profile posted
a moment ago, through this process or another, is not taken for unknown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from psycopg_pool import AsyncConnectionPool

from fhir_server.conformance import Conformance
from fhir_server.storage.conformance import (
    CONFORMANCE_CHANNEL,
    load_definitions,
    stored_versions,
)
from fhir_server.storage.notify import NotifiedLoop

__all__ = ["StoredConformance"]

_log = logging.getLogger(__name__)


# A url that a reload just found unknown is not reloaded for again before this (writes that keep
# claiming an unknown profile must not each cost a reload); a notification reloads anyway.
_MISS_SECONDS = 1.0


class StoredConformance(NotifiedLoop):
    """This process's ``Conformance``; ``on_change`` is called with each new one."""

    def __init__(
        self,
        base: Conformance,
        pool: AsyncConnectionPool[Any],
        conninfo: str,
        on_change: Callable[[Conformance], None],
        *,
        poll_seconds: float = 5.0,
    ) -> None:
        super().__init__(conninfo, CONFORMANCE_CHANNEL, poll_seconds, "conformance")
        self.base = base
        self.current = base
        self.pool = pool
        self.on_change = on_change
        self._seen: list[tuple[str, str, int]] = []
        self._lock = asyncio.Lock()
        self._missed: dict[str, float] = {}

    async def refresh(self, conn: Any = None) -> Conformance:
        """Reload the stored definitions if they changed (on ``conn``, or a pooled connection);
        the conformance they give."""
        async with self._lock:
            if conn is not None:
                return await self._reload(conn)
            async with self.pool.connection() as pooled:
                return await self._reload(pooled)

    async def _reload(self, conn: Any) -> Conformance:
        seen = await stored_versions(conn)
        if seen == self._seen:
            return self.current
        definitions = await load_definitions(conn)
        current = self.base.with_definitions(definitions)
        self.on_change(current)
        self.current, self._seen = current, seen
        self._missed.clear()
        return current

    async def refresh_soon(self, conn: Any, missing: Sequence[str] = ()) -> Conformance:
        """:meth:`refresh` on ``conn`` for a request that needs definitions not known here yet
        (``missing`` urls), unless each was found missing by a reload less than a second ago."""
        now = time.monotonic()
        if missing and all(
            now - self._missed.get(url, -_MISS_SECONDS) < _MISS_SECONDS for url in missing
        ):
            return self.current
        current = await self.refresh(conn)
        for url in missing:
            self._missed[url] = now
        return current

    async def run(self) -> None:
        while await self.wait():
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep serving with what it has
                _log.warning("conformance: reload failed: %s", type(exc).__name__)
