"""Race-free conditional writes and stable paging while others write."""

from __future__ import annotations

import asyncio

import httpx

PATIENT = {
    "resourceType": "Patient",
    "identifier": [{"system": "https://kynect.ky.gov/fhir/sid/individual-id", "value": "RACE-1"}],
    "name": [{"family": "Race"}],
}


async def test_twenty_concurrent_conditional_creates_make_one(client: httpx.AsyncClient) -> None:
    headers = {"If-None-Exist": "identifier=https://kynect.ky.gov/fhir/sid/individual-id|RACE-1"}
    responses = await asyncio.gather(
        *(client.post("/Patient", json=PATIENT, headers=headers) for _ in range(20))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 19 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    bundle = (await client.get("/Patient?identifier=RACE-1&_total=accurate")).json()
    assert bundle["total"] == 1


async def test_concurrent_conditional_updates_make_one(client: httpx.AsyncClient) -> None:
    query = "/Patient?identifier=https://kynect.ky.gov/fhir/sid/individual-id|RACE-1"
    responses = await asyncio.gather(
        *(client.put(query, json={**PATIENT, "gender": g}) for g in ["male", "female"] * 10)
    )
    assert sorted(r.status_code for r in responses).count(201) == 1
    assert all(r.status_code in {200, 201} for r in responses)
    bundle = (await client.get("/Patient?identifier=RACE-1&_total=accurate")).json()
    assert bundle["total"] == 1


async def test_conditional_create_with_several_matches_is_412(client: httpx.AsyncClient) -> None:
    for _ in range(2):
        assert (await client.post("/Patient", json=PATIENT)).status_code == 201
    response = await client.post(
        "/Patient", json=PATIENT, headers={"If-None-Exist": "identifier=RACE-1"}
    )
    assert response.status_code == 412
    assert response.json()["issue"][0]["code"] == "multiple-matches"


async def test_conditional_delete(client: httpx.AsyncClient) -> None:
    pid = (await client.post("/Patient", json=PATIENT)).json()["id"]
    assert (await client.delete("/Patient?identifier=RACE-1")).status_code == 204
    assert (await client.get(f"/Patient/{pid}")).status_code == 410
    assert (await client.delete("/Patient?identifier=RACE-1")).status_code == 204


async def test_paging_never_skips_or_repeats_under_concurrent_inserts(
    client: httpx.AsyncClient,
) -> None:
    for i in range(30):
        await client.put(
            f"/Patient/page-{i:02d}",
            json={"resourceType": "Patient", "id": f"page-{i:02d}", "name": [{"family": "Pager"}]},
        )
    before = {f"page-{i:02d}" for i in range(30)}
    seen: list[str] = []
    url = "/Patient?family=pager&_count=7"
    n = 0
    while url:
        page = (await client.get(url)).json()
        seen += [e["resource"]["id"] for e in page.get("entry", [])]
        # Others write between pages: new matches, and updates to ones already paged over.
        await client.post(
            "/Patient", json={"resourceType": "Patient", "name": [{"family": "Pager"}]}
        )
        await client.put(
            f"/Patient/page-{n:02d}",
            json={
                "resourceType": "Patient",
                "id": f"page-{n:02d}",
                "name": [{"family": "Pager", "given": [str(n)]}],
            },
        )
        n += 1
        links = [link["url"] for link in page["link"] if link["relation"] == "next"]
        url = links[0].removeprefix("http://test") if links else ""
    assert len(seen) == len(set(seen)), "a match was repeated"
    assert before <= set(seen), "a match that existed before paging was skipped"
