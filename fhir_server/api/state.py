"""What the app holds for its lifetime: settings, engines, the search registry and indexer."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from fhir_server.search.registry import SearchRegistry
from fhir_server.settings import Settings
from fhir_server.storage.repository import Indexer

__all__ = ["AppState"]


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    read_engine: AsyncEngine
    registry: SearchRegistry
    indexer: Indexer
    capability_statement: bytes
    # R4 types the models cover: what the REST API serves.
    resource_types: frozenset[str]
