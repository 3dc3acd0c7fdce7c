"""What the app holds for its lifetime: settings, connection pool, search registry, indexer,
profiles and terminology."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from psycopg_pool import AsyncConnectionPool

from fhir_server.conformance import Conformance
from fhir_server.operations.conformance import StoredConformance
from fhir_server.search.registry import SearchRegistry
from fhir_server.settings import Settings
from fhir_server.storage.repository import Indexer, RefreshConformance

__all__ = ["AppState"]


@dataclass
class AppState:
    settings: Settings
    pool: AsyncConnectionPool[Any]
    registry: SearchRegistry
    indexer: Indexer
    capability_statement: bytes
    # R4 types the models cover: what the REST API serves.
    resource_types: frozenset[str]
    # Profiles and terminology, bundled and stored; how to reload them now (rate-limited).
    conformance: Conformance
    refresh_conformance: RefreshConformance | None = None
    stored_conformance: StoredConformance | None = None
    # The IEES feed's pipeline for $load-iees (an IeesPipeline), started on first use.
    iees_pipeline: Any = None
    feeds_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
