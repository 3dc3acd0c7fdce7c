"""An unexpected error is a 500 OperationOutcome that echoes nothing, and logs nothing sent."""

from __future__ import annotations

import logging

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from fhir_server.api.errors import CatchUnexpected


async def _failing_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("patient Jane Doe SSN 111-22-3333")


async def test_unexpected_error_is_a_safe_500(caplog: pytest.LogCaptureFixture) -> None:
    transport = httpx.ASGITransport(app=CatchUnexpected(_failing_app))
    with caplog.at_level(logging.DEBUG):
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/Patient?name=Jane")
    assert response.status_code == 500
    assert response.json()["resourceType"] == "OperationOutcome"
    assert "Jane" not in response.text and "111-22" not in response.text
    # The server's own log lines (the test's HTTP client logs its URL itself).
    server_log = " ".join(r.getMessage() for r in caplog.records if r.name.startswith("fhir_"))
    assert "RuntimeError" in server_log
    assert "Jane" not in server_log and "111-22" not in server_log


async def test_large_body_is_413(client: httpx.AsyncClient) -> None:
    big = b'{"resourceType":"Patient","name":[{"family":"' + b"x" * (17 * 1024 * 1024) + b'"}]}'
    response = await client.post("/Patient", content=big)
    assert response.status_code == 413
    assert response.json()["issue"][0]["code"] == "too-costly"
