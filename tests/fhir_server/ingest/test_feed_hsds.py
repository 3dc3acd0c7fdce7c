"""Loading a 211 directory (HSDS) into the server, read back over HTTP: what the mapping says is
stored field by field; reloads are idempotent; changes version; what a full load no longer
lists turns inactive; the partner tag survives; each load leaves Provenance; the directory
searches a resident or kynector runs work on it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from fhir_server.ingest.hsds import PARTNER_TAG, FeedError, load_hsds
from fhir_server.storage.database import libpq_url
from mappers.hsds import Feed, map_directory

ROOT = Path(__file__).resolve().parents[3]
KY = ROOT.parent / "shared" / "feeds" / "hsds" / "ky-authored-hsds-3.1"
SDOHCC = "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"

pytestmark = pytest.mark.skipif(
    not KY.is_dir(), reason="../shared/feeds/hsds is not beside the checkout"
)


def copy_feed(tmp_path: Path) -> Path:
    target = tmp_path / "feed"
    shutil.copytree(KY, target, ignore=shutil.ignore_patterns("csv"))
    return target


def services(folder: Path) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((folder / "service_list_full.json").read_text())[
        "contents"
    ]
    return data


def save_services(folder: Path, items: list[dict[str, Any]]) -> None:
    page = json.loads((folder / "service_list_full.json").read_text())
    page["contents"] = items
    page["total_items"] = len(items)
    (folder / "service_list_full.json").write_text(json.dumps(page))


async def read(client: httpx.AsyncClient, reference: str) -> dict[str, Any]:
    response = await client.get(f"/{reference}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def search(client: httpx.AsyncClient, query: str) -> list[dict[str, Any]]:
    response = await client.get(query)
    assert response.status_code == 200, response.text
    return [
        e["resource"] for e in response.json().get("entry", []) if e["search"]["mode"] == "match"
    ]


async def test_stored_resources_are_the_mapped_ones(
    client: httpx.AsyncClient, clean_database: str
) -> None:
    summary = load_hsds(libpq_url(clean_database), KY, feed="ky-211")
    mapped = map_directory(KY, feed=Feed("ky-211"))
    assert (summary.created, summary.updated, summary.unchanged) == (46, 0, 0)
    assert summary.problems == {"no-coordinates": 1, "possible-duplicate": 1}
    for item in mapped.resources:
        stored = await read(client, f"{item.resource_type}/{item.id}")
        assert stored["meta"]["versionId"] == "1"
        del stored["meta"]["versionId"], stored["meta"]["lastUpdated"]
        assert stored == {**item.resource, "meta": stored["meta"]}
        assert stored["meta"] == item.resource.get("meta", {})
    # Field by field on one record of each type, as a user sees them.
    pantry = next(i.resource for i in mapped.resources if i.resource.get("name") == "Food Pantry")
    stored = await read(client, f"HealthcareService/{pantry['id']}")
    assert {
        c["code"] for cat in stored["category"] for c in cat["coding"] if c["system"] == SDOHCC
    } == {"food-insecurity"}
    location = await read(client, stored["location"][0]["reference"])
    assert location["address"]["city"] == "Lexington"
    assert location["position"] == {"longitude": -84.5037, "latitude": 38.0406}
    organization = await read(client, stored["providedBy"]["reference"])
    assert organization["active"] is True


async def test_a_reload_changes_nothing(client: httpx.AsyncClient, clean_database: str) -> None:
    url = libpq_url(clean_database)
    load_hsds(url, KY, feed="ky-211")
    again = load_hsds(url, KY, feed="ky-211")
    assert (again.created, again.updated, again.unchanged, again.inactivated) == (0, 0, 46, 0)
    assert again.provenance == []  # nothing written, nothing to trace
    # The CSV package of the same feed is the same feed: nothing changes either.
    csv = load_hsds(url, KY / "csv", feed="ky-211")
    assert (csv.created, csv.updated, csv.unchanged) == (0, 0, 46)
    with psycopg.connect(url) as conn:
        versions = conn.execute(
            "SELECT count(*) FROM resource_history WHERE resource_type <> 'Provenance'"
        ).fetchone()
    assert versions == (46,)


async def test_changed_versioned_missing_inactive_and_back(
    client: httpx.AsyncClient, clean_database: str, tmp_path: Path
) -> None:
    url = libpq_url(clean_database)
    folder = copy_feed(tmp_path)
    first = load_hsds(url, folder, feed="ky-211")
    ids = {i.feed_id: i.id for i in map_directory(folder, feed=Feed("ky-211")).resources}
    items = services(folder)
    items[0]["name"] = "Food Pantry (Saturdays too)"
    dropped = items.pop()
    save_services(folder, items)
    second = load_hsds(url, folder, feed="ky-211")
    assert (second.created, second.updated, second.inactivated) == (0, 1, 1)
    assert second.unchanged == first.created - 2
    renamed = await read(client, f"HealthcareService/{ids[items[0]['id']]}")
    assert (renamed["name"], renamed["meta"]["versionId"]) == ("Food Pantry (Saturdays too)", "2")
    gone = await read(client, f"HealthcareService/{ids[dropped['id']]}")
    assert (gone["active"], gone["meta"]["versionId"]) == (False, "2")
    # Inactive services leave the directory search, and come back when listed again.
    found = await search(client, f"/HealthcareService?_id={ids[dropped['id']]}")
    assert [r["active"] for r in found] == [False]  # asked by id: still there, inactive
    save_services(folder, [*items, dropped])
    third = load_hsds(url, folder, feed="ky-211")
    assert (third.updated, third.inactivated) == (1, 0)
    back = await read(client, f"HealthcareService/{ids[dropped['id']]}")
    assert (back["active"], back["meta"]["versionId"]) == (True, "3")
    # A partial load never inactivates.
    save_services(folder, items[:3])
    partial = load_hsds(url, folder, feed="ky-211", full=False)
    assert partial.inactivated == 0


async def test_the_partner_tag_survives_reloads(
    client: httpx.AsyncClient, clean_database: str, tmp_path: Path
) -> None:
    url = libpq_url(clean_database)
    folder = copy_feed(tmp_path)
    load_hsds(url, folder, feed="ky-211")
    (org_id,) = [
        i.id
        for i in map_directory(folder, feed=Feed("ky-211")).resources
        if i.resource_type == "Organization" and "Food Bank" in i.resource["name"]
    ][:1]
    organization = await read(client, f"Organization/{org_id}")
    organization["meta"] = {**organization["meta"], "tag": [PARTNER_TAG]}
    response = await client.put(f"/Organization/{org_id}", json=organization)
    assert response.status_code == 200, response.text
    # Unchanged reload: the tagged version is what the feed wrote last plus the tag: kept.
    load_hsds(url, folder, feed="ky-211")
    # A change to the organization in the feed: a new version, the tag still there.
    for name in ("organization_list_full.json", "service_list_full.json"):  # nested copies too
        text = (folder / name).read_text()
        (folder / name).write_text(
            text.replace('"Bluegrass Example Food Bank"', '"Bluegrass Example Food Bank Inc."')
        )
    load_hsds(url, folder, feed="ky-211")
    stored = await read(client, f"Organization/{org_id}")
    assert stored["name"].endswith("Food Bank Inc.")
    assert stored["meta"]["versionId"] == "3"
    assert stored["meta"]["tag"] == [PARTNER_TAG]
    tagged = await search(
        client, f"/Organization?_tag={PARTNER_TAG['system']}|{PARTNER_TAG['code']}"
    )
    assert [r["id"] for r in tagged] == [org_id]


async def test_each_load_that_writes_leaves_provenance(
    client: httpx.AsyncClient, clean_database: str
) -> None:
    summary = load_hsds(libpq_url(clean_database), KY, feed="ky-211")
    (reference,) = summary.provenance
    provenance = await read(client, reference)
    assert len(provenance["target"]) == 46
    assert all(t["reference"].endswith("/_history/1") for t in provenance["target"])
    (entity,) = provenance["entity"]
    assert entity["what"]["identifier"]["value"] == f"hsds:ky-211/run/{summary.run_id}"
    some = provenance["target"][0]["reference"].rsplit("/_history/", 1)[0]
    found = await search(client, f"/Provenance?target={some}")
    assert [r["id"] for r in found] == [reference.split("/")[1]]


async def test_directory_searches(client: httpx.AsyncClient, clean_database: str) -> None:
    load_hsds(libpq_url(clean_database), KY, feed="ky-211")
    food = await search(client, f"/HealthcareService?service-category={SDOHCC}|food-insecurity")
    assert {r["name"] for r in food} >= {"Food Pantry", "Community Kitchen Hot Meals"}
    assert all(
        any(c["code"] == "food-insecurity" for cat in r["category"] for c in cat["coding"])
        for r in food
    )
    pantry = await search(client, "/HealthcareService?name:contains=pantry")
    assert {r["name"] for r in pantry} == {"Food Pantry", "Mobile Pantry"}
    # Near Lexington's food bank (38.0406, -84.5037), nearest first.
    near = await search(client, "/HealthcareService?location.near=38.04|-84.50|10|mi")
    assert near and "Food Pantry" in {r["name"] for r in near}
    lexington = await search(client, "/Organization?address-city=Lexington")
    assert lexington
    named = await search(client, "/Organization?name:contains=example")
    assert len(named) == 12


def test_an_unreadable_feed_is_refused(clean_database: str, tmp_path: Path) -> None:
    (tmp_path / "feed.json").write_text("{not json")
    with pytest.raises(FeedError):
        load_hsds(libpq_url(clean_database), tmp_path / "feed.json", feed="broken")


def test_the_command_prints_a_summary_without_names(clean_database: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fhir_server", "load", "hsds", str(KY), "--feed", "ky-211"],
        env={**os.environ, "SDOH_FHIR_DATABASE_URL": clean_database},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "feed ky-211: 46 created, 0 updated, 0 unchanged, 0 inactivated, 0 rejected" in (
        result.stdout
    )
    assert "no-coordinates" in result.stdout
    for item in services(KY):
        assert item["name"] not in result.stdout + result.stderr


async def test_load_hsds_over_http(client: httpx.AsyncClient, clean_database: str) -> None:
    body = (KY / "service_list_full.json").read_bytes()
    response = await client.post(
        "/$load-hsds?feed=ky-211", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    counts = {p["name"]: p.get("valueInteger") for p in response.json()["parameter"]}
    assert counts["created"] > 21 and counts["inactivated"] == 0
    again = await client.post(
        "/$load-hsds?feed=ky-211", content=body, headers={"Content-Type": "application/json"}
    )
    counts = {p["name"]: p.get("valueInteger") for p in again.json()["parameter"]}
    assert counts["created"] == counts["updated"] == 0
    missing = await client.post(
        "/$load-hsds", content=body, headers={"Content-Type": "application/json"}
    )
    assert missing.status_code == 400
    assert missing.json()["resourceType"] == "OperationOutcome"
    wrong = await client.post(
        "/$load-hsds?feed=x", content=b"<xml/>", headers={"Content-Type": "application/xml"}
    )
    assert wrong.status_code == 415
    bad = await client.post(
        "/$load-hsds?feed=x", content=b"{oops", headers={"Content-Type": "application/json"}
    )
    assert bad.status_code == 422
    assert orjson.loads(bad.content)["resourceType"] == "OperationOutcome"
