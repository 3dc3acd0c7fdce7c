"""Create, read, vread, update, delete and their headers, over HTTP on real PostgreSQL."""

from __future__ import annotations

import httpx
import orjson

PATIENT = {
    "resourceType": "Patient",
    "identifier": [{"system": "https://kynect.ky.gov/fhir/sid/individual-id", "value": "KY123"}],
    "name": [{"family": "Doe", "given": ["Jane"]}],
    "birthDate": "1980-04-02",
}


async def test_create_read_round_trip(client: httpx.AsyncClient) -> None:
    created = await client.post("/Patient", json=PATIENT)
    assert created.status_code == 201
    body = created.json()
    assert body["resourceType"] == "Patient"
    assert body["meta"]["versionId"] == "1"
    assert created.headers["etag"] == 'W/"1"'
    assert created.headers["location"] == f"http://test/Patient/{body['id']}/_history/1"
    assert "last-modified" in created.headers

    read = await client.get(f"/Patient/{body['id']}")
    assert read.status_code == 200
    assert read.headers["content-type"].startswith("application/fhir+json")
    # Reads serve the stored bytes: the same text the create returned.
    assert read.content == created.content
    assert list(read.json())[:3] == ["resourceType", "id", "meta"]


async def test_update_versions_and_vread(client: httpx.AsyncClient) -> None:
    body = (await client.post("/Patient", json=PATIENT)).json()
    pid = body["id"]
    changed = {**body, "gender": "female"}
    updated = await client.put(f"/Patient/{pid}", json=changed)
    assert updated.status_code == 200
    assert updated.json()["meta"]["versionId"] == "2"
    assert updated.headers["etag"] == 'W/"2"'

    v1 = await client.get(f"/Patient/{pid}/_history/1")
    assert v1.status_code == 200 and "gender" not in v1.json()
    v2 = await client.get(f"/Patient/{pid}/_history/2")
    assert v2.json()["gender"] == "female"
    assert (await client.get(f"/Patient/{pid}/_history/3")).status_code == 404


async def test_update_that_changes_nothing_keeps_the_version(client: httpx.AsyncClient) -> None:
    body = (await client.post("/Patient", json=PATIENT)).json()
    again = await client.put(f"/Patient/{body['id']}", json=body)
    assert again.status_code == 200
    assert again.json()["meta"]["versionId"] == "1"


async def test_update_as_create_with_client_id(client: httpx.AsyncClient) -> None:
    response = await client.put("/Patient/kynect-1", json={**PATIENT, "id": "kynect-1"})
    assert response.status_code == 201
    assert response.json()["id"] == "kynect-1"
    assert (await client.get("/Patient/kynect-1")).status_code == 200


async def test_if_match_guards_against_lost_updates(client: httpx.AsyncClient) -> None:
    body = (await client.post("/Patient", json=PATIENT)).json()
    pid = body["id"]
    ok = await client.put(
        f"/Patient/{pid}", json={**body, "gender": "male"}, headers={"If-Match": 'W/"1"'}
    )
    assert ok.status_code == 200
    stale = await client.put(
        f"/Patient/{pid}", json={**body, "gender": "female"}, headers={"If-Match": 'W/"1"'}
    )
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    assert (await client.get(f"/Patient/{pid}")).json()["gender"] == "male"


async def test_delete_then_gone(client: httpx.AsyncClient) -> None:
    pid = (await client.post("/Patient", json=PATIENT)).json()["id"]
    deleted = await client.delete(f"/Patient/{pid}")
    assert deleted.status_code == 204
    gone = await client.get(f"/Patient/{pid}")
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"
    # Deleting again is harmless; the old version can still be read.
    assert (await client.delete(f"/Patient/{pid}")).status_code == 204
    assert (await client.get(f"/Patient/{pid}/_history/1")).status_code == 200
    assert (await client.get(f"/Patient/{pid}/_history/2")).status_code == 410
    # Updating a deleted resource brings it back as a new version.
    revived = await client.put(f"/Patient/{pid}", json={**PATIENT, "id": pid})
    assert revived.status_code == 201
    assert revived.json()["meta"]["versionId"] == "3"


async def test_conditional_read_headers(client: httpx.AsyncClient) -> None:
    created = await client.post("/Patient", json=PATIENT)
    pid = created.json()["id"]
    assert (
        await client.get(f"/Patient/{pid}", headers={"If-None-Match": 'W/"1"'})
    ).status_code == 304
    assert (
        await client.get(f"/Patient/{pid}", headers={"If-None-Match": 'W/"9"'})
    ).status_code == 200
    later = "Fri, 01 Jan 2100 00:00:00 GMT"
    assert (
        await client.get(f"/Patient/{pid}", headers={"If-Modified-Since": later})
    ).status_code == 304
    earlier = "Fri, 01 Jan 2000 00:00:00 GMT"
    assert (
        await client.get(f"/Patient/{pid}", headers={"If-Modified-Since": earlier})
    ).status_code == 200


async def test_prefer_return(client: httpx.AsyncClient) -> None:
    minimal = await client.post("/Patient", json=PATIENT, headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201 and minimal.content == b""
    assert "location" in minimal.headers
    outcome = await client.post(
        "/Patient", json=PATIENT, headers={"Prefer": "return=OperationOutcome"}
    )
    assert outcome.json()["resourceType"] == "OperationOutcome"


async def test_xml_in_and_out(client: httpx.AsyncClient) -> None:
    xml = (
        b'<Patient xmlns="http://hl7.org/fhir"><name><family value="Smith"/></name>'
        b'<birthDate value="1970-01-01"/></Patient>'
    )
    created = await client.post(
        "/Patient",
        content=xml,
        headers={"Content-Type": "application/fhir+xml", "Accept": "application/fhir+xml"},
    )
    assert created.status_code == 201
    assert created.headers["content-type"].startswith("application/fhir+xml")
    assert b'<family value="Smith"/>' in created.content
    pid = created.headers["location"].split("/")[-3]
    as_json = await client.get(f"/Patient/{pid}")
    assert as_json.json()["name"][0]["family"] == "Smith"
    as_xml = await client.get(f"/Patient/{pid}?_format=xml")
    assert as_xml.content.startswith(b"<?xml")
    pretty = await client.get(f"/Patient/{pid}?_pretty=true")
    assert b"\n  " in pretty.content


async def test_errors_are_operation_outcomes(client: httpx.AsyncClient) -> None:
    cases = [
        (await client.post("/Patient", content=b"{not json"), 400, "invalid"),
        (await client.post("/Patient", json={"resourceType": "Observation"}), 400, "invalid"),
        (
            await client.post("/Patient", json={**PATIENT, "birthDate": "yesterday"}),
            400,
            "structure",
        ),
        (
            await client.post("/Patient", json={**PATIENT, "favouriteColour": "red"}),
            400,
            "structure",
        ),
        (
            await client.post(
                "/Patient",
                content=b"a=b",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            ),
            415,
            "not-supported",
        ),
        (await client.get("/Spaceship/1"), 404, "not-found"),
        (await client.get("/Patient/nope"), 404, "not-found"),
        (await client.get("/Patient/bad$id"), 400, "invalid"),
        (await client.request("TRACE", "/Patient/1"), 405, "not-supported"),
        (await client.patch("/Patient/1", content=b"[]"), 400, "invalid"),
        (await client.put("/Patient/x", json={**PATIENT, "id": "y"}), 400, "invalid"),
        (
            await client.post(
                "/Patient",
                content=b'<?xml version="1.0"?><!DOCTYPE p '
                b'[<!ENTITY e SYSTEM "file:///etc/passwd">]><Patient '
                b'xmlns="http://hl7.org/fhir"><gender value="&e;"/></Patient>',
                headers={"Content-Type": "application/fhir+xml"},
            ),
            400,
            "invalid",
        ),
    ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == code


async def test_invalid_element_path_is_reported(client: httpx.AsyncClient) -> None:
    response = await client.post("/Patient", json={**PATIENT, "birthDate": "yesterday"})
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["Patient.birthDate"]
    # The offending value is not echoed back.
    assert "yesterday" not in orjson.dumps(response.json()).decode()


async def test_control_characters_are_refused_not_stored(client: httpx.AsyncClient) -> None:
    for bad in ["a\u0000b", "bell\u0007"]:
        response = await client.post("/Patient", json={**PATIENT, "name": [{"family": bad}]})
        assert response.status_code == 400, response.text
        assert response.json()["issue"][0]["expression"] == ["Patient.name[0].family"]
    ok = await client.post("/Patient", json={**PATIENT, "name": [{"text": "tab\there\r\n"}]})
    assert ok.status_code == 201
    search = await client.get("/Patient", params={"family": "a\u0000b"})
    assert search.status_code == 400


async def test_not_acceptable_write_stores_nothing(client: httpx.AsyncClient) -> None:
    response = await client.post("/Patient", json=PATIENT, headers={"Accept": "text/plain"})
    assert response.status_code == 406
    bundle = (await client.get("/Patient?_total=accurate")).json()
    assert bundle["total"] == 0


async def test_if_match_on_delete(client: httpx.AsyncClient) -> None:
    body = (await client.post("/Patient", json=PATIENT)).json()
    await client.put(f"/Patient/{body['id']}", json={**body, "gender": "male"})
    stale = await client.delete(f"/Patient/{body['id']}", headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert (await client.get(f"/Patient/{body['id']}")).status_code == 200
    ok = await client.delete(f"/Patient/{body['id']}", headers={"If-Match": 'W/"2"'})
    assert ok.status_code == 204


async def test_wrong_methods_on_fixed_paths(client: httpx.AsyncClient) -> None:
    for method in ["POST", "PUT", "DELETE"]:
        response = await client.request(method, "/metadata", json=PATIENT)
        assert response.status_code == 405, method
        assert response.json()["resourceType"] == "OperationOutcome"


async def test_ids_with_a_trailing_newline_are_refused(client: httpx.AsyncClient) -> None:
    response = await client.put("/Patient/abc%0A", json={**PATIENT, "id": "abc\n"})
    assert response.status_code == 400
    assert (await client.get("/Patient/abc%0A")).status_code == 400
