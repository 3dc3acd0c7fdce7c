"""CreateBatch: a transaction's creates, validated as added and written set-based."""

from __future__ import annotations

import psycopg
import pytest

from fhir_server.core.errors import InvalidResource
from fhir_server.search.registry import SearchParam, SearchRegistry
from fhir_server.storage.batch import CreateBatch
from fhir_server.storage.database import libpq_url
from fhir_server.storage.repository import Indexer, Repository

HOUSING = SearchParam("housing-note", "Patient", "string", "Patient.extension.value.ofType(string)")


def _patient(note: str) -> dict[str, object]:
    return {
        "resourceType": "Patient",
        "extension": [{"url": "http://example.org/housing", "valueString": note}],
        "name": [{"family": "Batch"}],
    }


async def _strings(conn: psycopg.AsyncConnection[object], id: str) -> set[tuple[str, str]]:
    rows = await (
        await conn.execute(
            "SELECT s.param, s.value FROM idx_string s JOIN resource r"
            " ON r.resource_type = s.resource_type AND r.rid = s.rid WHERE r.id = %s",
            (id,),
        )
    ).fetchall()
    return {(param, value) for param, value in rows}


async def test_rows_follow_the_indexers_current_registry(clean_database: str) -> None:
    indexer = Indexer(SearchRegistry.load_default())
    async with await psycopg.AsyncConnection.connect(libpq_url(clean_database)) as conn:
        repo = Repository(conn, indexer)
        batch = CreateBatch(repo)
        batch.add("Patient", "before", _patient("shelter"))
        [before] = await batch.write()
        assert (before.id, before.version_id) == ("before", 1)
        assert ("housing-note", "shelter") not in await _strings(conn, "before")

        indexer.use(indexer.registry.with_param(HOUSING))
        batch.add("Patient", "after", _patient("shelter"))
        await batch.write()
        assert ("housing-note", "shelter") in await _strings(conn, "after")
        assert ("family", "Batch") in await _strings(conn, "after")


async def test_an_invalid_resource_is_refused_when_added(clean_database: str) -> None:
    indexer = Indexer(SearchRegistry.load_default())
    async with await psycopg.AsyncConnection.connect(libpq_url(clean_database)) as conn:
        batch = CreateBatch(Repository(conn, indexer))
        batch.add("Patient", "good", _patient("ok"))
        with pytest.raises(InvalidResource):
            batch.add("Patient", "bad", {"resourceType": "Patient", "active": "yes"})
        assert len(batch) == 1
        written = await batch.write()
        assert [w.id for w in written] == ["good"]
        assert await batch.write() == []
