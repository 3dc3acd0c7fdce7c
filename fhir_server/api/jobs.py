"""What the status endpoints of async operations share: the job a poll URL names; cancel."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response

from fhir_server.api import rest
from fhir_server.core.errors import FhirError, NotFound
from fhir_server.storage.jobs import Job, Jobs

__all__ = ["JobFailed", "cancel_job", "job_of"]

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class JobFailed(FhirError):
    """A polled job that failed: its status answers with the reason."""

    status = 400
    code = "processing"


async def job_of(request: Request, kind: str, missing: str) -> Job:
    """The job of ``kind`` the path's ``{id}`` names; NotFound(``missing``) if none or cancelled."""
    id = request.path_params["id"]
    if not _UUID.fullmatch(id):
        raise NotFound(missing)
    async with rest._autocommit(request) as repo:
        job = await Jobs(repo.conn).get(id)
    if job is None or job.kind != kind or job.state == "cancelled":
        raise NotFound(missing)
    return job


async def cancel_job(request: Request, kind: str, missing: str) -> Response:
    """``DELETE`` on a status URL: the job is cancelled (a running one stops at its next step)."""
    job = await job_of(request, kind, missing)
    async with rest._autocommit(request) as repo:
        await Jobs(repo.conn).cancel(job.id)
    return Response(status_code=202)
