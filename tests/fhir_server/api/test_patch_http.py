"""PATCH over HTTP: JSON Patch and FHIRPath Patch, conditional, in bundles, with If-Match."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx
import orjson

JSON_PATCH = {"Content-Type": "application/json-patch+json"}


async def _patient(client: httpx.AsyncClient, id: str = "p1") -> dict[str, Any]:
    body = {
        "resourceType": "Patient",
        "id": id,
        "identifier": [{"system": "urn:state", "value": id.upper()}],
        "name": [{"family": "Mora", "given": ["Ana"]}],
        "gender": "female",
    }
    response = await client.put(f"/Patient/{id}", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _fhirpath_replace(path: str, value: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "operation",
                "part": [
                    {"name": "type", "valueCode": "replace"},
                    {"name": "path", "valueString": path},
                    {"name": "value", **value},
                ],
            }
        ],
    }


async def test_json_patch_makes_a_new_version(client: httpx.AsyncClient) -> None:
    await _patient(client)
    document = [
        {"op": "replace", "path": "/gender", "value": "other"},
        {"op": "add", "path": "/name/0/given/-", "value": "Luz"},
    ]
    response = await client.patch("/Patient/p1", content=orjson.dumps(document), headers=JSON_PATCH)
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["gender"] == "other"
    assert patched["name"][0]["given"] == ["Ana", "Luz"]
    assert patched["meta"]["versionId"] == "2"
    assert response.headers["etag"] == 'W/"2"'
    assert (await client.get("/Patient?gender=other")).json()["entry"][0]["resource"]["id"] == "p1"


async def test_fhirpath_patch(client: httpx.AsyncClient) -> None:
    await _patient(client)
    response = await client.patch(
        "/Patient/p1", json=_fhirpath_replace("Patient.birthDate", {"valueDate": "1990-01-02"})
    )
    # replace needs an existing element: the patient has no birthDate
    assert response.status_code == 422, response.text
    response = await client.patch(
        "/Patient/p1", json=_fhirpath_replace("Patient.gender", {"valueCode": "male"})
    )
    assert response.status_code == 200, response.text
    assert response.json()["gender"] == "male"


async def test_if_match_and_missing_resources(client: httpx.AsyncClient) -> None:
    await _patient(client)
    document = orjson.dumps([{"op": "replace", "path": "/gender", "value": "other"}])
    stale = await client.patch(
        "/Patient/p1", content=document, headers={**JSON_PATCH, "If-Match": 'W/"7"'}
    )
    assert stale.status_code == 412
    fresh = await client.patch(
        "/Patient/p1", content=document, headers={**JSON_PATCH, "If-Match": 'W/"1"'}
    )
    assert fresh.status_code == 200
    assert (
        await client.patch("/Patient/nobody", content=document, headers=JSON_PATCH)
    ).status_code == 404
    await client.delete("/Patient/p1")
    assert (
        await client.patch("/Patient/p1", content=document, headers=JSON_PATCH)
    ).status_code == 410


async def test_a_patch_that_breaks_the_resource_is_refused(client: httpx.AsyncClient) -> None:
    await _patient(client)
    cases = [
        ([{"op": "replace", "path": "/birthDate", "value": "soon"}], 422),  # path absent
        ([{"op": "add", "path": "/birthDate", "value": "soon"}], 400),  # invalid date
        ([{"op": "replace", "path": "/id", "value": "p2"}], 422),
        ([{"op": "test", "path": "/gender", "value": "male"}], 422),
        ([{"op": "jump", "path": "/gender"}], 400),
        ({"op": "add"}, 400),
    ]
    for document, status in cases:
        response = await client.patch(
            "/Patient/p1", content=orjson.dumps(document), headers=JSON_PATCH
        )
        assert response.status_code == status, (document, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
    assert (await client.get("/Patient/p1")).json()["meta"]["versionId"] == "1"
    bad_body = await client.patch("/Patient/p1", content=b"[{", headers=JSON_PATCH)
    assert bad_body.status_code == 400
    wrong_type = await client.patch(
        "/Patient/p1", content=b"[]", headers={"Content-Type": "text/plain"}
    )
    assert wrong_type.status_code == 415
    not_parameters = await client.patch("/Patient/p1", json={"resourceType": "Patient"})
    assert not_parameters.status_code == 400


async def test_conditional_patch(client: httpx.AsyncClient) -> None:
    await _patient(client, "p1")
    await _patient(client, "p2")
    document = orjson.dumps([{"op": "replace", "path": "/gender", "value": "unknown"}])
    response = await client.patch(
        "/Patient?identifier=urn:state|P2", content=document, headers=JSON_PATCH
    )
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "p2"
    several = await client.patch("/Patient?family=mora", content=document, headers=JSON_PATCH)
    assert several.status_code == 412
    none = await client.patch(
        "/Patient?identifier=urn:state|P9", content=document, headers=JSON_PATCH
    )
    assert none.status_code == 404


async def test_concurrent_patches_lose_no_change(client: httpx.AsyncClient) -> None:
    await _patient(client)
    given = [f"G{n}" for n in range(8)]
    responses = await asyncio.gather(
        *(
            client.patch(
                "/Patient/p1",
                content=orjson.dumps([{"op": "add", "path": "/name/0/given/-", "value": g}]),
                headers=JSON_PATCH,
            )
            for g in given
        )
    )
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    final = (await client.get("/Patient/p1")).json()
    assert sorted(final["name"][0]["given"]) == sorted(["Ana", *given])
    assert final["meta"]["versionId"] == str(1 + len(given))


async def test_patch_entries_in_a_transaction(client: httpx.AsyncClient) -> None:
    await _patient(client)
    await _patient(client, "p2")
    json_patch = base64.b64encode(
        orjson.dumps([{"op": "replace", "path": "/gender", "value": "other"}])
    ).decode()
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {
                    "resourceType": "Binary",
                    "contentType": "application/json-patch+json",
                    "data": json_patch,
                },
                "request": {"method": "PATCH", "url": "Patient/p1"},
            },
            {
                "resource": _fhirpath_replace("Patient.name.family", {"valueString": "Mora-Diaz"}),
                "request": {"method": "PATCH", "url": "Patient?identifier=urn:state|P2"},
            },
        ],
    }
    response = await client.post("/", json=bundle)
    assert response.status_code == 200, response.text
    final = (await client.get("/Patient/p1")).json()
    assert final["gender"] == "other"
    assert final["meta"]["versionId"] == "2"
    other = (await client.get("/Patient/p2")).json()
    assert other["name"][0]["family"] == "Mora-Diaz"
    # Two entries patching one resource: the transaction SHALL fail (http.html#trules).
    bundle["entry"][1]["request"]["url"] = "Patient?identifier=urn:state|P1"
    response = await client.post("/", json=bundle)
    assert response.status_code == 400
    assert (await client.get("/Patient/p1")).json()["meta"]["versionId"] == "2"
