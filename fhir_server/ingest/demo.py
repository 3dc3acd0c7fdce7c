"""Load the demo population through the repository: validated and indexed like any write."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import create_async_engine

from fhir_server.ingest.synthetic import demo_population
from fhir_server.search.registry import SearchRegistry
from fhir_server.storage.migrate import sync_url
from fhir_server.storage.repository import Indexer, Repository

__all__ = ["load_demo"]


async def _load(url: str) -> int:
    engine = create_async_engine(sync_url(url))
    indexer = Indexer(SearchRegistry.load_default())
    count = 0
    try:
        async with engine.begin() as conn:
            repo = Repository(conn, indexer)
            for resource in demo_population():
                # PUT with the population's own ids: loading twice changes nothing.
                await repo.update(resource["resourceType"], resource["id"], resource)
                count += 1
    finally:
        await engine.dispose()
    return count


def load_demo(url: str) -> int:
    """Store the demo population; returns how many resources it has."""
    return asyncio.run(_load(url))
