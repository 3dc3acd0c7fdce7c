"""Shared fixtures: one real embedded PostgreSQL for the session, and the app on it over HTTP."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from fhir_server.api.app import create_app
from fhir_server.settings import Settings
from fhir_server.storage.embedded import EmbeddedPostgres
from fhir_server.storage.migrate import upgrade

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

_TABLES = (
    "resource",
    "resource_history",
    "idx_string",
    "idx_token",
    "idx_date",
    "idx_number",
    "idx_quantity",
    "idx_uri",
    "idx_reference",
    "idx_geo",
    "idx_text",
    "compartment",
    "job",
    "job_input",
    "job_output",
)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database: SDOH_FHIR_TEST_DATABASE_URL, or an embedded PostgreSQL."""
    external = os.environ.get("SDOH_FHIR_TEST_DATABASE_URL")
    if external:
        upgrade(external)
        yield external
        return
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg"), durable=False)
    url = server.start()
    try:
        upgrade(url)
        yield url
    finally:
        server.stop()


@pytest.fixture
async def clean_database(database_url: str) -> str:
    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {', '.join(_TABLES)}"))
    await engine.dispose()
    return database_url


@pytest.fixture
async def client(clean_database: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the app, over an empty database."""
    app = create_app(Settings(database_url=clean_database, base_url="http://test"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://test",
            headers={"Content-Type": "application/fhir+json"},
        ) as http:
            yield http
