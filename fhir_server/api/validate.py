"""``$validate`` (http://hl7.org/fhir/R4/resource-operation-validate.html).

``POST [base]/[type]/$validate`` with the resource (or a ``Parameters`` with ``resource``,
``mode``, ``profile``); ``POST|GET [base]/[type]/[id]/$validate`` for an update of that resource,
or the stored one when no resource is given; ``mode=delete`` asks whether it may be deleted.

The answer is 200 with an OperationOutcome listing every issue, errors included: the operation
worked, whatever it found. It checks what a write would check (the R4 base rules, then the
profiles the resource claims or the operator requires, or the ``profile`` asked for) and also
reports, as information, must-support elements that are absent.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fhir_server.api import rest
from fhir_server.api.errors import operation_outcome
from fhir_server.api.formats import read_body, render_resource
from fhir_server.api.parameters import OperationParameters
from fhir_server.core.errors import FhirError, Gone, InvalidRequest, Issue, NotFound
from fhir_server.storage.repository import check_resource

__all__ = ["routes"]

_MODES = ("create", "update", "delete", "profile")


async def validate_type(request: Request) -> Response:
    resource_type = _served(request)
    resource, mode, profile = await _input(request)
    if resource is None:
        raise InvalidRequest("$validate needs the resource to validate")
    return await _answer(request, resource_type, None, resource, mode, profile)


async def validate_instance(request: Request) -> Response:
    resource_type = _served(request)
    id = request.path_params["id"]
    resource, mode, profile = await _input(request)
    if mode == "delete" or resource is None:
        async with rest._autocommit(request) as repo:
            try:
                stored = await repo.read(resource_type, id)
            except Gone:
                raise NotFound(f"{resource_type}/{id} is deleted") from None
        if mode == "delete":
            issue = Issue(
                "information",
                "informational",
                f"{resource_type}/{id} may be deleted: no rule of this server prevents it",
            )
            return render_resource(request, operation_outcome((issue,)))
        assert stored.body is not None
        resource = orjson.loads(stored.body)
    return await _answer(request, resource_type, id, resource, mode or "update", profile)


def _served(request: Request) -> str:
    resource_type: str = request.path_params["type"]
    if resource_type not in rest._state(request).resource_types:
        raise NotFound(f"{resource_type!r} is not a resource type this server serves")
    return resource_type


async def _input(request: Request) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """The resource to validate (None: none given), the mode and the profile asked for."""
    body: dict[str, Any] | None = None
    if request.method == "POST":
        raw = await rest._raw_body(request)
        if raw.strip():
            body = read_body(request.headers.get("content-type"), raw)
    resource = body
    parameters = OperationParameters.from_query(request)
    if body is not None and body.get("resourceType") == "Parameters":
        parameters = parameters.merged(OperationParameters.from_resource(body))
        resource = parameters.complex("resource")
    mode = parameters.string("mode")
    if mode is not None and mode not in _MODES:
        raise InvalidRequest(f"mode must be one of {', '.join(_MODES)}")
    return resource, mode, parameters.string("profile")


async def _answer(
    request: Request,
    resource_type: str,
    id: str | None,
    resource: dict[str, Any],
    mode: str | None,
    profile: str | None,
) -> Response:
    issues: list[Issue] = []
    if mode == "update":
        if "id" not in resource:
            issues.append(
                Issue("error", "required", "an update needs Resource.id", (f"{resource_type}.id",))
            )
        elif id is not None and resource["id"] != id:
            issues.append(
                Issue(
                    "error",
                    "invalid",
                    "Resource.id does not match the id in the URL",
                    (f"{resource_type}.id",),
                )
            )
    try:
        check_resource(resource_type, resource)
    except FhirError as exc:
        issues.extend(exc.issues)
    else:
        state = rest._state(request)
        conformance = state.conformance
        missing = conformance.unknown_claims(resource_type, resource)
        if profile and not conformance.profiles.known(profile):
            missing.append(profile)
        if missing and state.refresh_conformance is not None:
            conformance = await state.refresh_conformance(None, missing)
        issues.extend(
            conformance.validate(resource_type, resource, profile=profile, must_support=True)
        )
    if not any(issue.severity in ("fatal", "error", "warning") for issue in issues):
        issues.insert(0, Issue("information", "informational", "no errors or warnings found"))
    return render_resource(request, operation_outcome(tuple(issues)))


routes = [
    Route("/{type}/$validate", validate_type, methods=["POST"]),
    Route("/{type}/{id}/$validate", validate_instance, methods=["GET", "POST"]),
]
