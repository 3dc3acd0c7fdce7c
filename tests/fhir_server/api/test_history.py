"""History at instance, type and system level, with _since, _at, _count and paging."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx


async def test_history_levels(client: httpx.AsyncClient) -> None:
    body = (await client.post("/Patient", json={"resourceType": "Patient"})).json()
    pid = body["id"]
    await client.put(f"/Patient/{pid}", json={**body, "gender": "male"})
    await client.delete(f"/Patient/{pid}")
    await client.post("/Organization", json={"resourceType": "Organization", "name": "Food Bank"})

    instance = (await client.get(f"/Patient/{pid}/_history")).json()
    assert instance["type"] == "history"
    methods = [e["request"]["method"] for e in instance["entry"]]
    assert methods == ["DELETE", "PUT", "POST"]
    assert "resource" not in instance["entry"][0]
    assert instance["entry"][1]["resource"]["gender"] == "male"
    assert instance["entry"][2]["response"]["status"] == "201 Created"

    type_level = (await client.get("/Patient/_history")).json()
    assert len(type_level["entry"]) == 3
    system = (await client.get("/_history")).json()
    assert len(system["entry"]) == 4
    assert system["entry"][0]["resource"]["resourceType"] == "Organization"
    assert (await client.get("/Patient/unknown/_history")).status_code == 404


async def test_history_since_at_and_paging(client: httpx.AsyncClient) -> None:
    body = (await client.post("/Patient", json={"resourceType": "Patient"})).json()
    pid = body["id"]
    await asyncio.sleep(0.01)
    middle = datetime.now(UTC).isoformat()
    await asyncio.sleep(0.01)
    for gender in ["male", "female", "other"]:
        await client.put(f"/Patient/{pid}", json={**body, "gender": gender})

    since = (await client.get(f"/Patient/{pid}/_history", params={"_since": middle})).json()
    assert [e["resource"]["meta"]["versionId"] for e in since["entry"]] == ["4", "3", "2"]
    at = (await client.get(f"/Patient/{pid}/_history", params={"_at": middle})).json()
    assert [e["resource"]["meta"]["versionId"] for e in at["entry"]] == ["1"]

    versions = []
    url = f"/Patient/{pid}/_history?_count=3"
    while url:
        page = (await client.get(url)).json()
        versions += [e["resource"]["meta"]["versionId"] for e in page["entry"]]
        links = [link["url"] for link in page["link"] if link["relation"] == "next"]
        url = links[0].removeprefix("http://test") if links else ""
    assert versions == ["4", "3", "2", "1"]
    assert (await client.get("/_history?_since=notadate")).status_code == 400


async def test_history_pages_back_with_previous_links(client: httpx.AsyncClient) -> None:
    body = (await client.post("/Patient", json={"resourceType": "Patient"})).json()
    for i in range(6):
        await client.put(f"/Patient/{body['id']}", json={**body, "birthDate": f"200{i}-01-01"})

    def versions(page: dict) -> list[str]:
        return [e["resource"]["meta"]["versionId"] for e in page["entry"]]

    def link(page: dict, relation: str) -> str | None:
        urls = [x["url"] for x in page["link"] if x["relation"] == relation]
        return urls[0].removeprefix("http://test") if urls else None

    first = (await client.get(f"/Patient/{body['id']}/_history?_count=3")).json()
    assert versions(first) == ["7", "6", "5"] and link(first, "previous") is None
    second = (await client.get(link(first, "next") or "")).json()
    assert versions(second) == ["4", "3", "2"]
    back = (await client.get(link(second, "previous") or "")).json()
    assert versions(back) == ["7", "6", "5"]
    assert link(back, "previous") is None
    assert (await client.get(f"/Patient/{body['id']}/_history?_cursor=x~y~z")).status_code == 400
