"""Patient/$everything and compartment search (the Patient compartment)."""

from __future__ import annotations

from typing import Any

import httpx


async def _put(client: httpx.AsyncClient, resource: dict[str, Any]) -> None:
    response = await client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
    assert response.status_code in {200, 201}, response.text


async def _resident(client: httpx.AsyncClient, n: int, screenings: int = 2) -> None:
    await _put(
        client,
        {
            "resourceType": "Patient",
            "id": f"p{n}",
            "managingOrganization": {"reference": "Organization/org-1"},
        },
    )
    for s in range(screenings):
        await _put(
            client,
            {
                "resourceType": "Observation",
                "id": f"obs-{n}-{s}",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "88122-7"}]},
                "subject": {"reference": f"Patient/p{n}"},
                "performer": [{"reference": "Practitioner/prac-1"}],
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
        },
    )


async def _network(client: httpx.AsyncClient) -> None:
    await _put(client, {"resourceType": "Organization", "id": "org-1", "name": "Clinic"})
    await _put(client, {"resourceType": "Practitioner", "id": "prac-1"})


def _ids(bundle: dict[str, Any], mode: str) -> list[str]:
    assert bundle["resourceType"] == "Bundle", bundle
    return sorted(
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e["search"]["mode"] == mode
    )


async def test_everything_for_one_patient(client: httpx.AsyncClient) -> None:
    await _network(client)
    await _resident(client, 1)
    await _resident(client, 2)
    bundle = (await client.get("/Patient/p1/$everything")).json()
    assert bundle["type"] == "searchset"
    assert _ids(bundle, "match") == [
        "Observation/obs-1-0",
        "Observation/obs-1-1",
        "Patient/p1",
        "ServiceRequest/sr1",
    ]
    # What the record refers to outside the compartment comes along, once.
    assert _ids(bundle, "include") == ["Organization/org-1", "Practitioner/prac-1"]


async def test_everything_filters_and_pages(client: httpx.AsyncClient) -> None:
    await _network(client)
    await _resident(client, 1, screenings=7)
    typed = (await client.get("/Patient/p1/$everything?_type=Observation,ServiceRequest")).json()
    assert len(_ids(typed, "match")) == 8
    seen: list[str] = []
    url: str | None = "/Patient/p1/$everything?_count=3&_type=Observation"
    while url:
        page = (await client.get(url)).json()
        seen += _ids(page, "match")
        url = next((lk["url"] for lk in page["link"] if lk["relation"] == "next"), None)
    assert sorted(seen) == [f"Observation/obs-1-{s}" for s in range(7)]
    later = (await client.get("/Patient/p1/$everything?_since=2999-01-01")).json()
    assert _ids(later, "match") == []


async def test_everything_for_all_patients(client: httpx.AsyncClient) -> None:
    await _network(client)
    await _resident(client, 1, screenings=1)
    await _resident(client, 2, screenings=1)
    bundle = (await client.get("/Patient/$everything?_type=Patient,ServiceRequest")).json()
    assert _ids(bundle, "match") == [
        "Patient/p1",
        "Patient/p2",
        "ServiceRequest/sr1",
        "ServiceRequest/sr2",
    ]


async def test_everything_errors(client: httpx.AsyncClient) -> None:
    await _network(client)
    await _resident(client, 1, screenings=0)
    assert (await client.get("/Patient/nobody/$everything")).status_code == 404
    assert (await client.get("/Patient/p1/$everything?_type=Spaceship")).status_code == 400
    assert (await client.get("/Patient/p1/$everything?start=2020-01-01")).status_code == 400
    assert (await client.get("/Patient/p1/$everything?_cursor=junk")).status_code == 400
    assert (await client.delete("/ServiceRequest/sr1")).status_code == 204
    assert (await client.delete("/Patient/p1")).status_code == 204
    assert (await client.get("/Patient/p1/$everything")).status_code == 410


async def test_compartment_search(client: httpx.AsyncClient) -> None:
    await _network(client)
    await _resident(client, 1, screenings=5)
    await _resident(client, 2, screenings=1)
    bundle = (await client.get("/Patient/p1/Observation?code=88122-7")).json()
    assert _ids(bundle, "match") == [f"Observation/obs-1-{s}" for s in range(5)]
    assert (await client.get("/Patient/p2/ServiceRequest")).json()["entry"][0]["resource"][
        "id"
    ] == "sr2"
    seen: list[str] = []
    url: str | None = "/Patient/p1/Observation?_count=2"
    while url:
        page = (await client.get(url)).json()
        seen += _ids(page, "match")
        url = next((lk["url"] for lk in page["link"] if lk["relation"] == "next"), None)
        assert url is None or "/Patient/p1/Observation?" in url
    assert sorted(seen) == [f"Observation/obs-1-{s}" for s in range(5)]
    everything = (await client.get("/Patient/p2/*")).json()
    assert _ids(everything, "match") == ["Observation/obs-2-0", "Patient/p2", "ServiceRequest/sr2"]
    assert _ids((await client.get("/Patient/nobody/Observation")).json(), "match") == []
    assert (await client.get("/Organization/org-1/Patient")).status_code == 400
    assert (await client.get("/Spaceship/1/Patient")).status_code == 404
    assert (await client.get("/Patient/p1/Spaceship")).status_code == 404
    assert (await client.get("/Patient/p1/*?code=x")).status_code == 400


async def test_everything_leaves_out_other_patients(client: httpx.AsyncClient) -> None:
    await _network(client)
    await _resident(client, 1, screenings=0)
    await _resident(client, 2, screenings=0)
    await _put(
        client,
        {
            "resourceType": "Group",
            "id": "household",
            "type": "person",
            "actual": True,
            "member": [
                {"entity": {"reference": "Patient/p1"}},
                {"entity": {"reference": "Patient/p2"}},
            ],
        },
    )
    bundle = (await client.get("/Patient/p1/$everything")).json()
    assert "Group/household" in _ids(bundle, "match")
    assert "Patient/p2" not in _ids(bundle, "include") + _ids(bundle, "match")


async def test_odd_cursors_and_zero_counts(client: httpx.AsyncClient) -> None:
    await _network(client)
    await _resident(client, 1, screenings=2)
    assert (await client.get("/Patient/p1/*?_cursor=Patient~²")).status_code == 400
    assert (await client.get("/Patient/p1/$everything?_cursor=Patient~²")).status_code == 400
    for path in ("/Patient/p1/*?_count=0", "/Patient/p1/$everything?_count=0"):
        response = await client.get(path)
        assert response.status_code == 200, response.text
        assert _ids(response.json(), "match") == []
