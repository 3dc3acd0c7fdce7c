"""Load the demo population through the repository: validated (against the profiles each
resource claims, too) and indexed like any write."""

from __future__ import annotations

import asyncio

from fhir_server.conformance import Conformance
from fhir_server.ingest.synthetic import demo_population
from fhir_server.search.registry import SearchRegistry
from fhir_server.storage.database import connect
from fhir_server.storage.repository import Indexer, Repository

__all__ = ["load_demo"]


async def _load(url: str) -> int:
    indexer = Indexer(SearchRegistry.load_default())
    count = 0
    async with await connect(url) as conn, conn.transaction():
        repo = Repository(conn, indexer, Conformance.bundled())
        for resource in demo_population():
            # PUT with the population's own ids: loading twice changes nothing.
            await repo.update(resource["resourceType"], resource["id"], resource)
            count += 1
    return count


def load_demo(url: str) -> int:
    """Store the demo population; returns how many resources it has."""
    return asyncio.run(_load(url))
