"""``$reindex``: index stored resources anew, as a background job whose progress can be polled.

``POST [base]/$reindex`` reindexes every type (a ``Parameters`` body with ``type`` parts narrows
it), ``POST [base]/[type]/$reindex`` one type. Both answer ``202 Accepted`` with a
``Content-Location`` to poll, as ``$import`` does. Writing a SearchParameter queues the same job
for its base types by itself (operations/search_parameters.py); a search with that parameter
names the job to poll until it is done.

Polling answers 202 with ``X-Progress`` while the job runs, 200 with a ``Parameters`` resource
saying how many resources of each type were reindexed once it is done; ``DELETE`` cancels.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fhir_server.api import rest
from fhir_server.api.errors import operation_outcome
from fhir_server.api.formats import read_body, render_resource
from fhir_server.api.jobs import JobFailed, cancel_job, job_of
from fhir_server.core.errors import InvalidRequest, Issue, NotFound
from fhir_server.storage.jobs import Job, Jobs
from fhir_server.storage.search_parameters import status_path

__all__ = ["routes"]


async def reindex_all(request: Request) -> Response:
    state = rest._state(request)
    body = await rest._raw_body(request)
    types = sorted(state.resource_types)
    if body.strip():
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        types = _named_types(read_body(media, body), state.resource_types)
    return await _kick_off(request, types)


async def reindex_type(request: Request) -> Response:
    resource_type = request.path_params["type"]
    if resource_type not in rest._state(request).resource_types:
        raise NotFound(f"{resource_type!r} is not a resource type this server serves")
    return await _kick_off(request, [resource_type])


def _named_types(parameters: Any, known: frozenset[str]) -> list[str]:
    if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
        raise InvalidRequest("POST /$reindex takes no body, or a Parameters resource")
    given = parameters.get("parameter") or []
    if not isinstance(given, list):
        raise InvalidRequest("Parameters.parameter must be an array")
    types = []
    for parameter in given:
        if isinstance(parameter, dict) and parameter.get("name") == "type":
            value = parameter.get("valueCode") or parameter.get("valueString")
            if not isinstance(value, str) or value not in known:
                raise InvalidRequest(f"type {value!r} is not a resource type this server serves")
            types.append(value)
    if not types:
        raise InvalidRequest("the Parameters resource names no type to reindex")
    return sorted(set(types))


async def _kick_off(request: Request, types: list[str]) -> Response:
    async with rest._autocommit(request) as repo:
        job = await Jobs(repo.conn).submit("reindex", {"types": types})
    location = f"{rest._base(request)}/{status_path(job.id)}"
    outcome = operation_outcome(
        (Issue("information", "informational", f"the reindex is queued; poll {location}"),)
    )
    return render_resource(request, outcome, status=202, headers={"Content-Location": location})


async def _job(request: Request) -> Job:
    return await job_of(request, "reindex", "no such reindex job")


async def status(request: Request) -> Response:
    job = await _job(request)
    if job.state in {"queued", "running"}:
        return Response(status_code=202, headers={"X-Progress": _progress(job), "Retry-After": "2"})
    if job.state == "failed":
        raise JobFailed(f"the reindex failed: {job.error}")
    result = job.result or {}
    parameters: list[dict[str, Any]] = [{"name": "job", "valueString": job.id}]
    if "searchParameter" in job.params:
        parameters.append(
            {
                "name": "searchParameter",
                "valueReference": {"reference": f"SearchParameter/{job.params['searchParameter']}"},
            }
        )
    parameters += [
        {
            "name": "indexed",
            "part": [
                {"name": "type", "valueCode": resource_type},
                {"name": "count", "valueInteger": count},
            ],
        }
        for resource_type, count in sorted(result.get("indexed", {}).items())
    ]
    if note := result.get("note"):
        parameters.append({"name": "note", "valueString": note})
    return render_resource(request, {"resourceType": "Parameters", "parameter": parameters})


def _progress(job: Job) -> str:
    progress = job.progress
    if "type" not in progress:
        return job.state
    finished = len(progress.get("finished", ()))
    return (
        f"{progress['type']}: {progress.get('done', 0):,} of {progress.get('total', 0):,}"
        f" ({finished} types done)"
    )


async def cancel(request: Request) -> Response:
    return await cancel_job(request, "reindex", "no such reindex job")


routes = [
    Route("/$reindex", reindex_all, methods=["POST"]),
    Route("/$reindex-poll-status/{id}", status, methods=["GET"]),
    Route("/$reindex-poll-status/{id}", cancel, methods=["DELETE"]),
    Route("/{type}/$reindex", reindex_type, methods=["POST"]),
]
