"""_include and _revinclude (http://hl7.org/fhir/R4/search.html#include)."""

from __future__ import annotations

from typing import Any

import httpx

from fhir_server.api.app import create_app
from fhir_server.settings import Settings


async def _put(client: httpx.AsyncClient, resource: dict[str, Any]) -> None:
    response = await client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
    assert response.status_code in {200, 201}, response.text


async def _referral_network(client: httpx.AsyncClient, residents: int = 3) -> None:
    await _put(client, {"resourceType": "Organization", "id": "org-1", "name": "Food Bank"})
    for n in range(1, residents + 1):
        await _put(
            client,
            {
                "resourceType": "Patient",
                "id": f"p{n}",
                "name": [{"family": f"Resident{n}"}],
                "managingOrganization": {"reference": "Organization/org-1"},
            },
        )
        await _put(
            client,
            {
                "resourceType": "ServiceRequest",
                "id": f"sr{n}",
                "status": "active",
                "intent": "order",
                "subject": {"reference": f"Patient/p{n}"},
                "performer": [{"reference": "Organization/org-1"}],
            },
        )
        await _put(
            client,
            {
                "resourceType": "Task",
                "id": f"task{n}",
                "status": "requested",
                "intent": "order",
                "focus": {"reference": f"ServiceRequest/sr{n}"},
                "for": {"reference": f"Patient/p{n}"},
            },
        )


def _ids(bundle: dict[str, Any], mode: str) -> list[str]:
    assert bundle["resourceType"] == "Bundle", bundle
    return sorted(
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e["search"]["mode"] == mode
    )


async def test_include_adds_the_referenced_resources(client: httpx.AsyncClient) -> None:
    await _referral_network(client)
    bundle = (await client.get("/ServiceRequest?_include=ServiceRequest:subject")).json()
    assert _ids(bundle, "match") == [
        "ServiceRequest/sr1",
        "ServiceRequest/sr2",
        "ServiceRequest/sr3",
    ]
    assert _ids(bundle, "include") == ["Patient/p1", "Patient/p2", "Patient/p3"]
    # The organization both point at is included once.
    bundle = (
        await client.get(
            "/ServiceRequest?_include=ServiceRequest:performer&_include=ServiceRequest:subject"
        )
    ).json()
    assert _ids(bundle, "include") == [
        "Organization/org-1",
        "Patient/p1",
        "Patient/p2",
        "Patient/p3",
    ]


async def test_include_with_a_target_type_and_wildcard(client: httpx.AsyncClient) -> None:
    await _referral_network(client, residents=1)
    typed = (await client.get("/Task?_include=Task:subject:Patient")).json()
    assert _ids(typed, "include") == ["Patient/p1"]
    wrong = (await client.get("/Task?_include=Task:focus:Patient")).json()
    assert _ids(wrong, "include") == []
    everything = (await client.get("/Task?_include=Task:*")).json()
    assert _ids(everything, "include") == ["Patient/p1", "ServiceRequest/sr1"]


async def test_revinclude_adds_the_resources_that_point_here(client: httpx.AsyncClient) -> None:
    await _referral_network(client)
    bundle = (
        await client.get(
            "/Patient?_id=p2&_revinclude=ServiceRequest:subject&_revinclude=Task:subject"
        )
    ).json()
    assert _ids(bundle, "match") == ["Patient/p2"]
    assert _ids(bundle, "include") == ["ServiceRequest/sr2", "Task/task2"]


async def test_iterate_follows_included_resources(client: httpx.AsyncClient) -> None:
    await _referral_network(client, residents=2)
    bundle = (
        await client.get(
            "/Task?_id=task1&_include=Task:focus&_include:iterate=ServiceRequest:performer"
        )
    ).json()
    assert _ids(bundle, "include") == ["Organization/org-1", "ServiceRequest/sr1"]
    # Without :iterate the second hop is refused: it does not start from the searched type.
    response = await client.get("/Task?_include=Task:focus&_include=ServiceRequest:performer")
    assert response.status_code == 400
    # A revinclude chain: the patient, its requests, and the tasks on those requests.
    bundle = (
        await client.get(
            "/Patient?_id=p1&_revinclude=ServiceRequest:subject&_revinclude:iterate=Task:focus"
        )
    ).json()
    assert _ids(bundle, "include") == ["ServiceRequest/sr1", "Task/task1"]


async def test_paging_with_includes_returns_each_match_once(client: httpx.AsyncClient) -> None:
    await _referral_network(client, residents=7)
    url: str | None = "/ServiceRequest?_include=ServiceRequest:subject&_count=2"
    matches: list[str] = []
    pages = 0
    while url:
        bundle = (await client.get(url)).json()
        matches += _ids(bundle, "match")
        included = _ids(bundle, "include")
        # Each page carries the patients of its own matches.
        expected = sorted(
            f"Patient/p{m.removeprefix('ServiceRequest/sr')}" for m in _ids(bundle, "match")
        )
        assert included == expected
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
        assert url is None or "_include=ServiceRequest%3Asubject" in url
        pages += 1
    assert sorted(matches) == sorted(f"ServiceRequest/sr{n}" for n in range(1, 8))
    assert len(matches) == 7 and pages == 4


async def test_a_deleted_target_is_not_included(client: httpx.AsyncClient) -> None:
    await _referral_network(client, residents=1)
    assert (await client.delete("/Patient/p1")).status_code == 204
    bundle = (await client.get("/ServiceRequest?_include=ServiceRequest:subject")).json()
    assert _ids(bundle, "include") == []


async def test_bad_includes_are_400_or_warnings_when_lenient(client: httpx.AsyncClient) -> None:
    for value in [
        "Task",
        "Task:for",
        "Task:status",
        "Nope:subject",
        "Task:subject:Nope",
        "a:b:c:d",
    ]:
        response = await client.get(f"/Task?_include={value}")
        assert response.status_code == 400, value
        assert response.json()["resourceType"] == "OperationOutcome"
    response = await client.get("/Task?_include:deep=Task:subject")
    assert response.status_code == 400
    await _referral_network(client, residents=1)
    bundle = (
        await client.get(
            "/Task?_include=Task:nope&_include=Task:subject", headers={"Prefer": "handling=lenient"}
        )
    ).json()
    assert _ids(bundle, "include") == ["Patient/p1"]
    outcome = next(e for e in bundle["entry"] if e["search"]["mode"] == "outcome")
    assert "Task:nope" in outcome["resource"]["issue"][0]["diagnostics"]


async def test_the_include_cap_is_reported(clean_database: str) -> None:
    app = create_app(Settings(database_url=clean_database, base_url="http://test", max_count=3))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await _referral_network(client, residents=1)
            for n in range(2, 6):
                await _put(
                    client,
                    {
                        "resourceType": "Task",
                        "id": f"extra{n}",
                        "status": "requested",
                        "intent": "order",
                        "for": {"reference": "Patient/p1"},
                    },
                )
            bundle = (await client.get("/Patient?_id=p1&_revinclude=Task:subject")).json()
    assert len(_ids(bundle, "include")) == 3
    outcome = next(e for e in bundle["entry"] if e["search"]["mode"] == "outcome")
    assert "more than 3 resources are included" in outcome["resource"]["issue"][0]["diagnostics"]
