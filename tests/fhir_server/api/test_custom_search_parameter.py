"""Custom SearchParameters: refused while indexing, usable once reindexed; $reindex."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from fhir_server.api.app import create_app
from fhir_server.settings import Settings
from fhir_server.storage.database import libpq_url

HOUSING = "http://example.org/fhir/StructureDefinition/housing-status"
POLL = 0.3


@asynccontextmanager
async def _client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url=database_url, base_url="http://test", search_parameter_poll_seconds=POLL
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://test",
            headers={"Content-Type": "application/fhir+json"},
        ) as http:
            yield http


@pytest.fixture
async def client(clean_database: str) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(clean_database) as http:
        yield http


def _patient(id: str, status: str | None) -> dict[str, object]:
    body: dict[str, object] = {"resourceType": "Patient", "id": id, "name": [{"family": id}]}
    if status is not None:
        body["extension"] = [
            {
                "url": HOUSING,
                "valueCodeableConcept": {
                    "coding": [{"system": "http://example.org/housing", "code": status}]
                },
            }
        ]
    return body


def _definition(expression: str, *, status: str = "active") -> dict[str, object]:
    return {
        "resourceType": "SearchParameter",
        "url": "http://example.org/fhir/SearchParameter/patient-housing-status",
        "name": "HousingStatus",
        "status": status,
        "description": "The resident's housing status, from an extension",
        "code": "housing-status",
        "base": ["Patient"],
        "type": "token",
        "expression": expression,
    }


_EXPRESSION = f"Patient.extension.where(url = '{HOUSING}').value"


async def _ids(client: httpx.AsyncClient, query: str) -> set[str]:
    response = await client.get(query)
    assert response.status_code == 200, response.text
    return {e["resource"]["id"] for e in response.json().get("entry", ())}


async def _while_indexed(
    client: httpx.AsyncClient, query: str, *, new: bool = True
) -> httpx.Response:
    """The refusal a search gets once this process knows of the (re)definition, until indexed."""
    for _ in range(100):
        response = await client.get(query)
        if "being indexed" in response.text:
            return response
        if new:  # until the notification arrives a new parameter is simply unknown here
            assert "unknown search parameter" in response.text, response.text
        await asyncio.sleep(0.02)
    raise AssertionError("the parameter was never reported as being indexed")


async def _until_usable(client: httpx.AsyncClient, query: str) -> httpx.Response:
    for _ in range(200):
        response = await client.get(query)
        # Unknown until the notification arrives, then refused until indexed.
        waiting = ("being indexed", "unknown search parameter")
        if response.status_code != 400 or not any(w in response.text for w in waiting):
            return response
        await asyncio.sleep(0.1)
    raise AssertionError("the parameter never became usable")


async def _finish(client: httpx.AsyncClient, location: str) -> httpx.Response:
    path = location.removeprefix("http://test")
    for _ in range(300):
        response = await client.get(path)
        if response.status_code != 202:
            return response
        assert response.headers["X-Progress"]
        await asyncio.sleep(0.1)
    raise AssertionError("the reindex did not finish")


async def test_refused_until_indexed_then_finds_what_was_stored_before(
    client: httpx.AsyncClient,
) -> None:
    for i in range(12):
        status = "unstable" if i % 3 == 0 else "stable"
        assert (await client.put(f"/Patient/p{i}", json=_patient(f"p{i}", status))).is_success
    assert (await client.put("/Patient/none", json=_patient("none", None))).is_success

    posted = await client.post("/SearchParameter", json=_definition(_EXPRESSION))
    assert posted.status_code == 201, posted.text

    refused = await _while_indexed(client, "/Patient?housing-status=unstable")
    assert refused.status_code == 400
    outcome = refused.json()
    assert outcome["resourceType"] == "OperationOutcome"
    message = outcome["issue"][0]["diagnostics"]
    assert "housing-status" in message and "being indexed" in message
    # The message names the job to watch; its progress is visible while it runs.
    job = re.search(r"\$reindex-poll-status/([0-9a-f-]{36})", message)
    assert job is not None
    done = await _finish(client, f"/$reindex-poll-status/{job.group(1)}")
    assert done.status_code == 200, done.text
    parts = {p["name"]: p for p in done.json()["parameter"]}
    assert parts["searchParameter"]["valueReference"]["reference"].startswith("SearchParameter/")
    counted = {
        q["name"]: q.get("valueCode", q.get("valueInteger")) for q in parts["indexed"]["part"]
    }
    assert counted == {"type": "Patient", "count": 13}

    usable = await _until_usable(client, "/Patient?housing-status=unstable")
    assert usable.status_code == 200, usable.text
    assert await _ids(client, "/Patient?housing-status=unstable") == {"p0", "p3", "p6", "p9"}
    assert await _ids(
        client, "/Patient?housing-status=http://example.org/housing|stable&_count=100"
    ) == {f"p{i}" for i in range(12) if i % 3}
    assert await _ids(client, "/Patient?housing-status:missing=true") == {"none"}
    # Writes after the definition are indexed as they are made.
    assert (await client.put("/Patient/later", json=_patient("later", "unstable"))).is_success
    assert "later" in await _ids(client, "/Patient?housing-status=unstable")
    assert (await client.put("/Patient/p0", json=_patient("p0", "stable"))).is_success
    assert "p0" not in await _ids(client, "/Patient?housing-status=unstable")
    # The CapabilityStatement lists it once it is usable.
    metadata = (await client.get("/metadata")).json()
    patient = next(r for r in metadata["rest"][0]["resource"] if r["type"] == "Patient")
    assert "housing-status" in {p["name"] for p in patient["searchParam"]}


async def test_a_changed_definition_is_reindexed_and_a_deleted_one_is_gone(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.put("/Patient/a", json=_patient("a", "unstable"))).is_success
    definition = _definition(_EXPRESSION)
    put = await client.put("/SearchParameter/housing", json={**definition, "id": "housing"})
    assert put.status_code == 201, put.text
    assert (await _until_usable(client, "/Patient?housing-status=unstable")).status_code == 200
    assert await _ids(client, "/Patient?housing-status=unstable") == {"a"}

    # Now the parameter reads the name: the old rows must not answer for it.
    changed = {**definition, "id": "housing", "type": "string", "expression": "Patient.name.family"}
    assert (await client.put("/SearchParameter/housing", json=changed)).status_code == 200
    await _while_indexed(client, "/Patient?housing-status=a", new=False)
    assert (await _until_usable(client, "/Patient?housing-status=a")).status_code == 200
    assert await _ids(client, "/Patient?housing-status=a") == {"a"}

    assert (await client.delete("/SearchParameter/housing")).status_code in {200, 204}
    for _ in range(50):
        gone = await client.get("/Patient?housing-status=a")
        if "unknown search parameter" in gone.text:
            break
        await asyncio.sleep(0.1)
    assert gone.status_code == 400 and "unknown search parameter" in gone.text


async def test_a_definition_that_cannot_be_indexed_says_why(client: httpx.AsyncClient) -> None:
    bad = {**_definition("Patient.extension.where(url = "), "id": "broken"}
    assert (await client.put("/SearchParameter/broken", json=bad)).status_code == 201
    for _ in range(50):
        refused = await client.get("/Patient?housing-status=x")
        if "cannot be indexed" in refused.text:
            break
        await asyncio.sleep(0.1)
    assert refused.status_code == 400
    assert "SearchParameter/broken cannot be indexed" in refused.text
    assert "FHIRPath" in refused.text

    special = {**_definition("Patient.name"), "id": "special", "code": "odd", "type": "special"}
    assert (await client.put("/SearchParameter/special", json=special)).status_code == 201
    for _ in range(50):
        refused = await client.get("/Patient?odd=x")
        if "cannot be indexed" in refused.text:
            break
        await asyncio.sleep(0.1)
    assert refused.status_code == 400 and "special" in refused.text

    # A draft is not searched at all.
    draft = {**_definition(_EXPRESSION, status="draft"), "id": "draft", "code": "drafted"}
    assert (await client.put("/SearchParameter/draft", json=draft)).status_code == 201
    await asyncio.sleep(POLL * 2)
    assert "unknown search parameter" in (await client.get("/Patient?drafted=x")).text


async def test_another_process_learns_of_the_parameter_and_indexes_its_writes(
    clean_database: str,
) -> None:
    async with _client(clean_database) as first, _client(clean_database) as second:
        assert (await first.put("/Patient/one", json=_patient("one", "unstable"))).is_success
        posted = await first.post("/SearchParameter", json=_definition(_EXPRESSION))
        assert posted.status_code == 201
        # The other process refuses it while it is indexed, then answers, and its own writes
        # are indexed with the new parameter.
        assert (await _while_indexed(second, "/Patient?housing-status=unstable")).status_code == 400
        assert (await second.put("/Patient/two", json=_patient("two", "unstable"))).is_success
        assert (await _until_usable(second, "/Patient?housing-status=unstable")).is_success
        assert await _ids(second, "/Patient?housing-status=unstable") == {"one", "two"}
        assert await _ids(first, "/Patient?housing-status=unstable") == {"one", "two"}


async def test_a_transaction_bundle_defining_a_parameter_queues_its_reindex(
    client: httpx.AsyncClient,
) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:0b0c3a4e-4d51-4d0e-9f39-3f1c1a7d0c11",
                "resource": _patient("x", "unstable") | {"id": None},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": _definition(_EXPRESSION),
                "request": {"method": "POST", "url": "SearchParameter"},
            },
        ],
    }
    del bundle["entry"][0]["resource"]["id"]  # type: ignore[index]
    response = await client.post("/", json=bundle)
    assert response.status_code == 200, response.text
    assert (await _while_indexed(client, "/Patient?housing-status=unstable")).status_code == 400
    usable = await _until_usable(client, "/Patient?housing-status=unstable")
    assert usable.status_code == 200
    assert len(usable.json()["entry"]) == 1


async def test_reindex_restores_rows_of_resources_stored_before_an_index_existed(
    client: httpx.AsyncClient, clean_database: str, snapshot: Callable[[str], Any]
) -> None:
    for i in range(7):
        body = _patient(f"r{i}", None) | {"name": [{"family": f"Zebedee{i}"}]}
        assert (await client.put(f"/Patient/r{i}", json=body)).is_success
        observation = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "71802-3"}]},
            "subject": {"reference": f"Patient/r{i}"},
            "effectiveDateTime": f"2026-0{i + 1}-01",
            "text": {"status": "generated", "div": f"<div>Housing check {i}</div>"},
        }
        assert (await client.post("/Observation", json=observation)).is_success
    written = snapshot(clean_database)
    # As if they had been stored before the string and full-text indexes were added.
    with psycopg.connect(libpq_url(clean_database), autocommit=True) as conn:
        conn.execute("DELETE FROM idx_string WHERE resource_type = 'Patient'")
        conn.execute("DELETE FROM idx_text")
        conn.execute("DELETE FROM compartment WHERE resource_type = 'Observation'")
    assert await _ids(client, "/Patient?family=Zebedee") == set()
    assert await _ids(client, "/Patient?_content=zebedee3") == set()

    kick = await client.post("/Patient/$reindex")
    assert kick.status_code == 202
    assert kick.json()["resourceType"] == "OperationOutcome"
    done = await _finish(client, kick.headers["Content-Location"])
    assert done.status_code == 200, done.text
    assert len(await _ids(client, "/Patient?family=Zebedee")) == 7
    assert await _ids(client, "/Patient?_content=zebedee3") == {"r3"}

    # Every type: what a reindex writes is exactly what the writes wrote.
    everything = await client.post("/$reindex")
    assert everything.status_code == 202
    done = await _finish(client, everything.headers["Content-Location"])
    assert done.status_code == 200, done.text
    assert snapshot(clean_database) == written
    assert await _ids(client, "/Observation?_text=housing") != set()
    assert len(await _ids(client, "/Patient/r2/Observation")) == 1

    # The system-level form, narrowed by a Parameters body.
    narrowed = await client.post(
        "/$reindex",
        json={
            "resourceType": "Parameters",
            "parameter": [{"name": "type", "valueCode": "Patient"}],
        },
    )
    assert narrowed.status_code == 202
    done = await _finish(client, narrowed.headers["Content-Location"])
    indexed = [p for p in done.json()["parameter"] if p["name"] == "indexed"]
    assert [q.get("valueCode") for q in indexed[0]["part"]][0] == "Patient"


async def test_reindex_errors_are_operation_outcomes(client: httpx.AsyncClient) -> None:
    unknown = await client.post("/NotAType/$reindex")
    assert unknown.status_code == 404
    assert unknown.json()["resourceType"] == "OperationOutcome"
    bad = await client.post(
        "/$reindex",
        json={"resourceType": "Parameters", "parameter": [{"name": "type", "valueCode": "Nope"}]},
    )
    assert bad.status_code == 400 and bad.json()["resourceType"] == "OperationOutcome"
    assert (await client.post("/$reindex", json={"resourceType": "Patient"})).status_code == 400
    for odd in (5, "type", [{"name": "type", "valueCode": []}], [{"name": "type"}]):
        body = {"resourceType": "Parameters", "parameter": odd}
        refused = await client.post("/$reindex", json=body)
        assert refused.status_code == 400, (odd, refused.text)
        assert refused.json()["resourceType"] == "OperationOutcome"
    missing = await client.get("/$reindex-poll-status/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404
    assert (await client.get("/$reindex-poll-status/not-a-uuid")).status_code == 404

    kick = await client.post("/Observation/$reindex")
    location = kick.headers["Content-Location"].removeprefix("http://test")
    assert (await client.delete(location)).status_code == 202
    assert (await client.get(location)).status_code == 404


async def test_the_bulk_load_indexes_custom_parameters(client: httpx.AsyncClient) -> None:
    assert (await client.post("/SearchParameter", json=_definition(_EXPRESSION))).is_success
    assert (await _until_usable(client, "/Patient?housing-status=unstable")).is_success
    lines = b"\n".join(
        orjson.dumps(_patient(f"bulk{i}", "unstable" if i % 2 else "stable")) for i in range(6)
    )
    kick = await client.post(
        "/$import", content=lines, headers={"Content-Type": "application/fhir+ndjson"}
    )
    assert kick.status_code == 202, kick.text
    path = kick.headers["Content-Location"].removeprefix("http://test")
    for _ in range(600):
        if (await client.get(path)).status_code != 202:
            break
        await asyncio.sleep(0.1)
    assert await _ids(client, "/Patient?housing-status=unstable") == {"bulk1", "bulk3", "bulk5"}


async def test_the_parameter_rows_equal_a_whole_reindex_and_rest_writes(
    client: httpx.AsyncClient, clean_database: str, snapshot: Callable[[str], Any]
) -> None:
    """Rows the parameter's own reindex writes are those a whole reindex and a write make."""
    for i in range(5):
        assert (await client.put(f"/Patient/s{i}", json=_patient(f"s{i}", "unstable"))).is_success
    assert (await client.post("/SearchParameter", json=_definition(_EXPRESSION))).is_success
    assert (await _until_usable(client, "/Patient?housing-status=unstable")).is_success
    assert (await client.put("/Patient/w", json=_patient("w", "stable"))).is_success
    by_parameter_job = snapshot(clean_database)
    kick = await client.post("/Patient/$reindex")
    assert (await _finish(client, kick.headers["Content-Location"])).status_code == 200
    assert snapshot(clean_database) == by_parameter_job
