"""``POST /$import``: the Bulk Data style kick-off of an NDJSON load, and its status endpoint.

The request is answered at once with ``202 Accepted`` and a ``Content-Location`` to poll
(https://hl7.org/fhir/uv/bulkdata/export.html#bulk-data-kick-off-request shows the pattern). The
input is either the NDJSON itself (``Content-Type: application/fhir+ndjson``), spooled into the
database with the job so that any server process can run it, or a ``Parameters`` resource whose
``input`` parts give the ``url`` of each NDJSON file. Polling answers 202 with ``X-Progress``
while the job runs, then 200 with what was loaded and a link to the refused lines; ``DELETE``
cancels.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from fhir_server.api import rest
from fhir_server.api.errors import operation_outcome
from fhir_server.api.formats import read_body, render_resource
from fhir_server.api.jobs import JobFailed, cancel_job, job_of
from fhir_server.core.errors import (
    InvalidRequest,
    Issue,
    PayloadTooLarge,
)
from fhir_server.ingest.import_job import ERRORS
from fhir_server.storage.jobs import Job, Jobs

__all__ = ["routes"]

_NDJSON = {"application/fhir+ndjson", "application/ndjson", "application/x-ndjson"}
_PART_BYTES = 8 * 1024 * 1024


async def kick_off(request: Request) -> Response:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    state = rest._state(request)
    async with rest._writing(request) as repo:
        jobs = Jobs(repo.conn)
        if media in _NDJSON:
            job = await jobs.submit("import", {"urls": []})
            await _spool(request, jobs, job, state.settings.max_import_bytes)
        else:
            parameters = read_body(media, await rest._raw_body(request))
            urls = _input_urls(parameters, _allowed_hosts(state.settings.import_url_hosts))
            job = await jobs.submit("import", {"urls": urls})
    location = f"{rest._base(request)}/$import-poll-status/{job.id}"
    outcome = operation_outcome(
        (Issue("information", "informational", f"the import is queued; poll {location}"),)
    )
    return render_resource(request, outcome, status=202, headers={"Content-Location": location})


async def _spool(request: Request, jobs: Jobs, job: Job, limit: int) -> None:
    """Store the NDJSON body with the job, in parts, never all of it in memory."""
    part = 0
    size = 0
    buffer = bytearray()
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"the NDJSON body is larger than {limit} bytes; give input URLs instead"
            )
        buffer += chunk
        if len(buffer) >= _PART_BYTES:
            await jobs.add_input(job.id, part, bytes(buffer))
            part += 1
            buffer.clear()
    if buffer:
        await jobs.add_input(job.id, part, bytes(buffer))
    if size == 0:
        raise InvalidRequest("the request has no body")


def _allowed_hosts(setting: str) -> frozenset[str]:
    return frozenset(h.strip().lower() for h in setting.split(",") if h.strip())


def _input_urls(parameters: dict[str, Any], allowed: frozenset[str]) -> list[str]:
    if parameters.get("resourceType") != "Parameters":
        raise InvalidRequest(
            "POST /$import takes NDJSON (application/fhir+ndjson) or a Parameters resource"
            " with input urls"
        )
    urls = []
    for parameter in _list(parameters.get("parameter")):
        if not isinstance(parameter, dict) or parameter.get("name") != "input":
            continue
        for part in _list(parameter.get("part")):
            if isinstance(part, dict) and part.get("name") == "url":
                urls.append(_checked_url(part.get("valueUrl") or part.get("valueUri"), allowed))
    if not urls:
        raise InvalidRequest("the Parameters resource names no input url")
    return urls


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequest("Parameters.parameter and its part must be arrays")
    return value


def _checked_url(url: Any, allowed: frozenset[str]) -> str:
    """An input URL the server may fetch: http(s), on a host the operator allowed.

    The server makes the request from inside its network, so a URL is never taken on trust
    (server-side request forgery): only hosts listed in SDOH_FHIR_IMPORT_URL_HOSTS.
    """
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise InvalidRequest("each input url must be an http:// or https:// URL")
    host = (urlsplit(url).hostname or "").lower()
    if host not in allowed:
        raise InvalidRequest(
            "this server fetches input urls only from the hosts its operator allows"
            " (SDOH_FHIR_IMPORT_URL_HOSTS); post the NDJSON itself instead"
        )
    return url


async def _job(request: Request) -> tuple[Job, str]:
    job = await job_of(request, "import", "no such import")
    return job, f"{rest._base(request)}/$import-poll-status/{job.id}"


async def status(request: Request) -> Response:
    job, location = await _job(request)
    if job.state in {"queued", "running"}:
        progress = job.progress
        text = (
            f"{progress.get('loaded', 0):,} loaded, {progress.get('refused', 0):,} refused"
            if progress
            else job.state
        )
        return Response(status_code=202, headers={"X-Progress": text, "Retry-After": "2"})
    if job.state == "failed":
        raise JobFailed(f"the import failed: {job.error}")
    result = job.result or {}
    body = {
        "transactionTime": (job.finished_at or job.created_at).isoformat(),
        "request": f"{rest._base(request)}/$import",
        "requiresAccessToken": False,
        "output": [
            {
                "type": "Summary",
                "created": result.get("created", 0),
                "updated": result.get("updated", 0),
                "unchanged": result.get("unchanged", 0),
                "refused": result.get("refused", 0),
            }
        ],
        "error": (
            [{"type": "OperationOutcome", "url": f"{location}/{ERRORS}"}]
            if result.get("refused")
            else []
        ),
    }
    return Response(orjson.dumps(body), media_type="application/json")


async def errors(request: Request) -> Response:
    job, _ = await _job(request)
    state = rest._state(request)

    async def stream() -> Any:
        async with state.pool.connection() as conn:
            async for data in Jobs(conn).output(job.id, ERRORS):
                yield data

    return StreamingResponse(stream(), media_type="application/fhir+ndjson")


async def cancel(request: Request) -> Response:
    return await cancel_job(request, "import", "no such import")


routes = [
    Route("/$import", kick_off, methods=["POST"]),
    Route("/$import-poll-status/{id}", status, methods=["GET"]),
    Route("/$import-poll-status/{id}", cancel, methods=["DELETE"]),
    Route("/$import-poll-status/{id}/" + ERRORS, errors, methods=["GET"]),
]
