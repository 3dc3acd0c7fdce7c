"""POST /$import: kick-off, polling, the load in the background, refused lines, cancel."""

from __future__ import annotations

import asyncio
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from fhir_server.api.app import create_app
from fhir_server.settings import Settings

NDJSON = {"Content-Type": "application/fhir+ndjson"}


def _lines(n: int, prefix: str = "imp") -> bytes:
    return b"".join(
        orjson.dumps(
            {"resourceType": "Patient", "id": f"{prefix}-{i}", "name": [{"family": f"Imported{i}"}]}
        )
        + b"\n"
        for i in range(n)
    )


async def _finish(client: httpx.AsyncClient, location: str) -> httpx.Response:
    path = location.removeprefix("http://test")
    for _ in range(600):
        response = await client.get(path)
        if response.status_code != 202:
            return response
        assert "X-Progress" in response.headers
        await asyncio.sleep(0.1)
    raise AssertionError("the import did not finish")


async def test_import_ndjson_body(client: httpx.AsyncClient) -> None:
    body = _lines(30) + b'{"resourceType":"Patient","birthDate":"someday"}\n' + b"not json\n"
    kick = await client.post("/$import", content=body, headers=NDJSON)
    assert kick.status_code == 202, kick.text
    location = kick.headers["Content-Location"]
    assert "/$import-poll-status/" in location
    done = await _finish(client, location)
    assert done.status_code == 200, done.text
    report = done.json()
    summary = report["output"][0]
    assert (summary["created"], summary["refused"]) == (30, 2)
    errors = await client.get(report["error"][0]["url"].removeprefix("http://test"))
    assert errors.status_code == 200
    records = [orjson.loads(line) for line in errors.content.splitlines()]
    assert sorted(r["line"] for r in records) == [31, 32]
    assert all(r["outcome"]["resourceType"] == "OperationOutcome" for r in records)
    assert b"someday" not in errors.content  # the refused text is not echoed
    # Loaded like any write: readable and searchable, ids kept.
    assert (await client.get("/Patient/imp-7")).json()["name"][0]["family"] == "Imported7"
    found = (await client.get("/Patient?family=Imported1&_total=accurate")).json()
    assert found["total"] == 11  # Imported1 and Imported10..19


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[str]:
    """A real HTTP server on a local port serving tmp_path."""
    handler = functools.partial(_Quiet, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_import_from_urls(clean_database: str, file_server: str, tmp_path: Path) -> None:
    import gzip

    (tmp_path / "a.ndjson").write_bytes(_lines(5, "url-a"))
    (tmp_path / "b.ndjson.gz").write_bytes(gzip.compress(_lines(4, "url-b")))
    parameters = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "inputFormat", "valueCode": "application/fhir+ndjson"},
            {"name": "input", "part": [{"name": "url", "valueUrl": f"{file_server}/a.ndjson"}]},
            {"name": "input", "part": [{"name": "url", "valueUrl": f"{file_server}/b.ndjson.gz"}]},
        ],
    }
    settings = Settings(
        database_url=clean_database, base_url="http://test", import_url_hosts="127.0.0.1"
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            kick = await client.post(
                "/$import", json=parameters, headers={"Prefer": "respond-async"}
            )
            assert kick.status_code == 202, kick.text
            done = await _finish(client, kick.headers["Content-Location"])
            assert done.status_code == 200, done.text
            assert done.json()["output"][0]["created"] == 9
            assert done.json()["error"] == []
            assert (await client.get("/Patient/url-b-3")).status_code == 200

            missing = {
                "resourceType": "Parameters",
                "parameter": [
                    {
                        "name": "input",
                        "part": [{"name": "url", "valueUrl": f"{file_server}/none.ndjson"}],
                    }
                ],
            }
            kick = await client.post("/$import", json=missing)
            failed = await _finish(client, kick.headers["Content-Location"])
            assert failed.status_code == 400
            assert "could not be read" in failed.json()["issue"][0]["diagnostics"]
            assert "none.ndjson" not in failed.text


async def test_input_urls_only_from_allowed_hosts(
    client: httpx.AsyncClient, file_server: str
) -> None:
    """The server fetches input URLs itself: by default from no host at all (no SSRF)."""
    for url in (f"{file_server}/a.ndjson", "http://169.254.169.254/latest", "http://10.0.0.1/"):
        parameters = {
            "resourceType": "Parameters",
            "parameter": [{"name": "input", "part": [{"name": "url", "valueUrl": url}]}],
        }
        response = await client.post("/$import", json=parameters)
        assert response.status_code == 400, url
        assert "SDOH_FHIR_IMPORT_URL_HOSTS" in response.text


async def test_kick_off_errors(client: httpx.AsyncClient) -> None:
    assert (await client.post("/$import", content=b"", headers=NDJSON)).status_code == 400
    assert (await client.post("/$import", json={"resourceType": "Patient"})).status_code == 400
    no_urls = {"resourceType": "Parameters", "parameter": [{"name": "input", "part": []}]}
    assert (await client.post("/$import", json=no_urls)).status_code == 400
    file_url = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "input", "part": [{"name": "url", "valueUrl": "file:///etc/passwd"}]}
        ],
    }
    assert (await client.post("/$import", json=file_url)).status_code == 400
    wrong = await client.post("/$import", content=b"x", headers={"Content-Type": "text/plain"})
    assert wrong.status_code == 415
    for odd in (
        {"resourceType": "Parameters", "parameter": 5},
        {"resourceType": "Parameters", "parameter": [{"name": "input", "part": 5}]},
    ):
        assert (await client.post("/$import", json=odd)).status_code == 400
    assert (await client.get("/$import-poll-status/not-a-job")).status_code == 404
    braced = "/$import-poll-status/urn:uuid:00000000-0000-4000-8000-000000000000"
    assert (await client.get(braced)).status_code == 404
    unknown = "/$import-poll-status/00000000-0000-4000-8000-000000000000"
    assert (await client.get(unknown)).status_code == 404


async def test_cancel(client: httpx.AsyncClient) -> None:
    kick = await client.post("/$import", content=_lines(3, "cancel"), headers=NDJSON)
    path = kick.headers["Content-Location"].removeprefix("http://test")
    assert (await client.delete(path)).status_code == 202
    assert (await client.get(path)).status_code == 404
