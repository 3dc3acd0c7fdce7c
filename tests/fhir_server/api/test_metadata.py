"""The CapabilityStatement lists only what works, and what it lists does work."""

from __future__ import annotations

import httpx

from fhir_server.search.registry import SearchRegistry


async def test_capability_statement(client: httpx.AsyncClient) -> None:
    response = await client.get("/metadata")
    assert response.status_code == 200
    statement = response.json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert {
        "Patient",
        "Observation",
        "ServiceRequest",
        "Task",
        "Consent",
        "HealthcareService",
    } <= set(resources)
    patient = resources["Patient"]
    assert {i["code"] for i in patient["interaction"]} >= {
        "read",
        "vread",
        "create",
        "update",
        "delete",
        "search-type",
    }
    params = {p["name"] for p in patient["searchParam"]}
    assert {"name", "family", "birthdate", "identifier", "_id", "_lastUpdated"} <= params
    assert {"_text", "_content", "_list"} <= params
    system = {i["code"] for i in statement["rest"][0]["interaction"]}
    assert system == {"transaction", "batch", "history-system"}


async def test_every_listed_search_parameter_is_accepted(client: httpx.AsyncClient) -> None:
    statement = (await client.get("/metadata")).json()
    sample = {
        "string": "a",
        "token": "a",
        "reference": "Patient/1",
        "date": "2020",
        "number": "1",
        "quantity": "1",
        "uri": "http://a",
        "special": "38.2|-85.7|10|km",
    }
    registry = SearchRegistry.load_default()
    for resource in statement["rest"][0]["resource"]:
        if resource["type"] not in {
            "Patient",
            "Observation",
            "Task",
            "ServiceRequest",
            "Condition",
            "Consent",
            "Location",
            "HealthcareService",
            "Organization",
            "Goal",
            "Group",
            "Coverage",
        }:
            continue
        for param in resource["searchParam"]:
            if param["type"] == "composite":
                found = registry.get(resource["type"], param["name"])
                assert found is not None
                parts = registry.components(found)
                assert parts is not None
                value = "$".join("1" if c.type == "reference" else sample[c.type] for c in parts)
            else:
                value = sample[param["type"]]
            if param["type"] == "reference":
                value = "1"
            response = await client.get(f"/{resource['type']}", params={param["name"]: value})
            assert response.status_code == 200, (resource["type"], param["name"], response.text)


async def test_every_listed_include_and_revinclude_is_accepted(client: httpx.AsyncClient) -> None:
    statement = (await client.get("/metadata")).json()
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    for resource_type in ("Patient", "ServiceRequest", "Task", "Observation"):
        resource = resources[resource_type]
        assert "*" in resource["searchInclude"]
        for value in resource["searchInclude"]:
            response = await client.get(f"/{resource_type}?_include={value}")
            assert response.status_code == 200, (resource_type, value, response.text)
        for value in resource["searchRevInclude"][:40]:
            response = await client.get(f"/{resource_type}?_revinclude={value}")
            assert response.status_code == 200, (resource_type, value, response.text)
    assert "Observation:subject" in resources["Patient"]["searchRevInclude"]
    assert "Patient:organization" in resources["Patient"]["searchInclude"]
