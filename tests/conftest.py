"""Shared fixtures: one real embedded PostgreSQL for the session, and the app on it over HTTP."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from fhir_server.api.app import create_app
from fhir_server.settings import Settings
from fhir_server.storage.database import libpq_url
from fhir_server.storage.embedded import EmbeddedPostgres
from fhir_server.storage.migrate import upgrade

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


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


def _truncate_all(url: str) -> None:
    """Empty every table the migrations made (found in the catalog, so none is forgotten)."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                " AND tablename <> 'alembic_version'"
            )
        ]
        conn.execute(f"TRUNCATE {', '.join(tables)}")


def _without_last_updated(body: str | None) -> Any:
    if body is None:
        return None
    data = orjson.loads(body)
    data["meta"].pop("lastUpdated")
    return orjson.dumps(data).decode()


def _stored_rows(url: str) -> dict[str, Counter[Any]]:
    """Every stored row, by resource type and id instead of rid, the write time left out.

    Two ways of writing the same resources (REST and the bulk load, say) give equal snapshots.
    """
    with psycopg.connect(libpq_url(url)) as conn:
        out: dict[str, Counter[Any]] = {
            "resource": Counter(
                (t, i, v, d, _without_last_updated(b))
                for t, i, v, d, b in conn.execute(
                    "SELECT resource_type, id, version_id, deleted, body FROM resource"
                )
            ),
            "resource_history": Counter(
                (t, i, v, m, d, _without_last_updated(b))
                for t, i, v, m, d, b in conn.execute(
                    "SELECT resource_type, id, version_id, method, deleted, body"
                    " FROM resource_history"
                )
            ),
        }
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                " AND (tablename LIKE 'idx\\_%' OR tablename = 'compartment')"
            )
        ]
        for table in tables:
            rows: Counter[Any] = Counter()
            for t, i, row in conn.execute(
                f"SELECT r.resource_type, r.id, to_jsonb(x) - 'rid' - 'resource_type'"
                f" FROM {table} x JOIN resource r"
                " ON r.resource_type = x.resource_type AND r.rid = x.rid"
            ):
                if row.get("param") == "_lastUpdated":
                    row.pop("low", None)
                    row.pop("high", None)
                rows[(t, i, json.dumps(row, sort_keys=True))] += 1
            out[table] = rows
    return out


@pytest.fixture
def clean_database(database_url: str) -> str:
    _truncate_all(database_url)
    return database_url


@pytest.fixture
def empty_tables() -> Callable[[str], None]:
    """Empties every table of a database, for a test that writes the same data twice."""
    return _truncate_all


@pytest.fixture
def snapshot() -> Callable[[str], dict[str, Counter[Any]]]:
    """Every stored row of a database, comparable across ways of writing the same resources."""
    return _stored_rows


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
