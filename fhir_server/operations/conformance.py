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
from collections.abc import Callable
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

    async def refresh(self) -> Conformance:
        """Reload the stored definitions if they changed; the conformance they give."""
        async with self._lock:
            async with self.pool.connection() as conn:
                seen = await stored_versions(conn)
                if seen == self._seen:
                    return self.current
                definitions = await load_definitions(conn)
            self.current = self.base.with_definitions(definitions)
            self._seen = seen
            self.on_change(self.current)
            return self.current

    async def refresh_soon(self) -> Conformance:
        """:meth:`refresh` for a request that needs a definition not known here yet: it costs one
        small query when nothing changed; waiters on a refresh under way share its result."""
        if self._lock.locked():
            async with self._lock:
                return self.current
        return await self.refresh()

    async def run(self) -> None:
        while await self.wait():
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep serving with what it has
                _log.warning("conformance: reload failed: %s", type(exc).__name__)
