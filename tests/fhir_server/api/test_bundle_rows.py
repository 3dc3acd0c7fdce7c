"""A transaction's creates store the rows single creates store (storage/batch.py).

A transaction Bundle writes its creates set-based, through the bulk loader's encoder and COPY;
``Repository.create`` writes one resource per statement. For the same resources under the same
ids the two must leave the same rows in every table: resource, history, each search-index
table, Patient compartment and full text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg

from fhir_server.conformance import Conformance
from fhir_server.core.errors import UnprocessableEntity
from fhir_server.ingest.synthetic import generate_population
from fhir_server.search.registry import SearchRegistry
from fhir_server.storage.database import libpq_url
from fhir_server.storage.repository import Indexer, Repository

EXAMPLES = Path(__file__).resolve().parents[3].parent / "shared" / "conformance" / "sdohcc"
EXAMPLES = EXAMPLES / "examples"
SYSTEM = "https://kynect.ky.gov/fhir/sid/individual-id"
PATIENT_URN = "urn:uuid:0b5f7a52-0000-4000-8000-000000000001"
# Text with every character COPY escapes, and more: the stored bytes and rows must survive it.
AWKWARD = 'Tab\there, new\nline, CR\r, back\\slash, \\N, quote " and café ☕'


def _awkward_resources() -> list[dict[str, Any]]:
    return [
        {
            "resourceType": "Patient",
            "id": "client-chosen-and-ignored",
            "meta": {
                "profile": ["http://example.org/StructureDefinition/p"],
                "tag": [{"code": "t"}],
            },
            "text": {
                "status": "generated",
                "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{AWKWARD}'
                f' <a href="{PATIENT_URN}">me</a> &amp; &lt;b&gt;</div>',
            },
            "identifier": [{"system": SYSTEM, "value": "ROWS-1"}],
            "name": [{"family": AWKWARD, "given": ["G" * 1500]}],
            "telecom": [{"system": "phone", "value": "555\t0100"}],
            "birthDate": "1980-02",
            "address": [{"line": [AWKWARD], "city": "Frankfort", "state": "KY"}],
        },
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {
                "coding": [{"system": "http://loinc.org", "code": "88122-7"}],
                "text": AWKWARD,
            },
            "subject": {"reference": PATIENT_URN},
            "effectiveDateTime": "2024-03-05T10:11:12.345-05:00",
            "valueQuantity": {
                "value": 1.50,
                "unit": "kg",
                "system": "http://unitsofmeasure.org",
                "code": "kg",
            },
            "component": [
                {"code": {"text": "n"}, "valueQuantity": {"value": 12345678901234.5678901}},
            ],
        },
        {
            "resourceType": "Location",
            "name": "Food bank",
            "position": {"latitude": 38.2, "longitude": -84.87},
            "managingOrganization": {"reference": "Organization/not-here"},
        },
        {
            "resourceType": "RiskAssessment",
            "status": "final",
            "subject": {"reference": PATIENT_URN},
            "prediction": [{"probabilityDecimal": 0.25}],
        },
    ]


def _resources() -> list[dict[str, Any]]:
    found = _awkward_resources()
    if EXAMPLES.is_dir():
        found += [
            _claims_what_it_is(orjson.loads(p.read_bytes()))
            for p in sorted(EXAMPLES.glob("*.json"))
        ]
    found += list(generate_population(6, seed=8))
    return found


def _claims_what_it_is(example: dict[str, Any]) -> dict[str, Any]:
    """The example, without its profile claims if it breaks them: these tests are about the rows
    stored. (The IG's examples are 2.3.0, the profiles 3.0.0; tests/profiles lists the known
    deviations.)"""
    try:
        _CONFORMANCE.check_write(example["resourceType"], example)
    except UnprocessableEntity:
        meta = {k: v for k, v in example["meta"].items() if k != "profile"}
        example = {k: v for k, v in example.items() if k != "meta"} | (
            {"meta": meta} if meta else {}
        )
    return example


_CONFORMANCE = Conformance.bundled()


async def test_a_transaction_stores_what_single_creates_store(
    client: httpx.AsyncClient,
    clean_database: str,
    snapshot: Callable[[str], dict[str, Counter[Any]]],
    empty_tables: Callable[[str], None],
) -> None:
    resources = _resources()
    entries = [
        {
            "fullUrl": PATIENT_URN if i == 0 else f"urn:uuid:0b5f7a52-0000-4000-9000-{i:012d}",
            "resource": resource,
            "request": {"method": "POST", "url": resource["resourceType"]},
        }
        for i, resource in enumerate(resources)
    ]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    response = await client.post("/", json=bundle)
    assert response.status_code == 200, response.text[:2000]
    answered = response.json()["entry"]
    assert [e["response"]["status"] for e in answered] == ["201 Created"] * len(resources)
    by_transaction = snapshot(clean_database)
    stored = [e["resource"] for e in answered]
    assert stored[1]["subject"] == {"reference": f"Patient/{stored[0]['id']}"}
    assert stored[0]["id"] != "client-chosen-and-ignored"
    assert stored[0]["name"][0]["family"] == AWKWARD
    assert f'href="Patient/{stored[0]["id"]}"' in stored[0]["text"]["div"]
    # The answer's bodies are the stored bytes.
    for resource in stored:
        read = await client.get(f"/{resource['resourceType']}/{resource['id']}")
        assert read.json() == resource

    # The same resources, as the transaction rewrote them, by single creates under the same ids.
    empty_tables(clean_database)
    indexer = Indexer(SearchRegistry.load_default())
    async with await psycopg.AsyncConnection.connect(libpq_url(clean_database)) as conn:
        repo = Repository(conn, indexer)
        for resource in stored:
            await repo.create(resource["resourceType"], resource, id=resource["id"])
    by_creates = snapshot(clean_database)

    assert by_transaction.keys() == by_creates.keys()
    for table in by_creates:
        assert by_transaction[table] == by_creates[table], table
    assert sum(by_creates["idx_text"].values()) == len(resources)
    assert any('"lat": 38.2' in row for _, _, row in by_creates["idx_geo"])
    assert sum(by_creates["compartment"].values()) >= 3


async def test_creates_after_a_conditional_reference_see_the_earlier_creates(
    client: httpx.AsyncClient,
) -> None:
    """An entry with a conditional reference is resolved after the creates before it are
    written, so it can name a resource the same transaction creates."""
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": SYSTEM, "value": "ROWS-2"}],
    }
    goal = {
        "resourceType": "Goal",
        "lifecycleStatus": "active",
        "description": {"text": "food security"},
        "subject": {"reference": f"Patient?identifier={SYSTEM}|ROWS-2"},
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": patient, "request": {"method": "POST", "url": "Patient"}},
            {"resource": goal, "request": {"method": "POST", "url": "Goal"}},
            {"resource": {**goal}, "request": {"method": "POST", "url": "Goal"}},
            {"request": {"method": "GET", "url": "Goal?subject.identifier=" + SYSTEM + "|ROWS-2"}},
        ],
    }
    response = await client.post("/", json=bundle)
    assert response.status_code == 200, response.text
    answered = response.json()["entry"]
    patient_id = answered[0]["resource"]["id"]
    assert [e["resource"]["subject"] for e in answered[1:3]] == [
        {"reference": f"Patient/{patient_id}"}
    ] * 2
    found = answered[3]["resource"]
    assert found["type"] == "searchset"
    assert len(found["entry"]) == 2
