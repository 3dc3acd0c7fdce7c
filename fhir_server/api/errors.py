"""The one place that renders errors as OperationOutcomes (http://hl7.org/fhir/R4/operationoutcome.html)."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhir_server.core.errors import FhirError, Issue

__all__ = ["CatchUnexpected", "install_error_handlers", "operation_outcome"]

_log = logging.getLogger("fhir_server.api")


def operation_outcome(issues: tuple[Issue, ...]) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": issue.severity,
                "code": issue.code,
                "diagnostics": issue.diagnostics,
                **({"expression": list(issue.expression)} if issue.expression else {}),
            }
            for issue in issues
        ],
    }


def _render(
    request: Request, status: int, issues: tuple[Issue, ...], headers: dict[str, str] | None = None
) -> Response:
    from fhir_server.api.formats import render_resource

    return render_resource(request, operation_outcome(issues), status=status, headers=headers)


async def _fhir_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FhirError)
    headers = {}
    stored = getattr(exc, "resource", None)
    if stored is not None:
        headers["ETag"] = stored.etag
    return _render(request, exc.status, exc.issues, headers)


_HTTP_CODES = {404: "not-found", 405: "not-supported", 413: "too-costly", 415: "not-supported"}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "processing")
    message = {
        404: "no such endpoint",
        405: f"the method {request.method} is not allowed here",
    }.get(exc.status_code, str(exc.detail))
    return _render(
        request, exc.status_code, (Issue("error", code, message),), dict(exc.headers or {})
    )


async def _validation_error(request: Request, exc: Exception) -> Response:
    return _render(request, 400, (Issue("error", "invalid", "the request is not valid"),))


class CatchUnexpected:
    """Outermost ASGI layer: an unexpected error becomes a 500 OperationOutcome, logged safely.

    Starlette's own server-error layer re-raises after answering, so the server would log the
    full traceback, whose messages may hold what a client sent. Here the log line carries the
    method, the route template and the error's type only; the response echoes nothing.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - this is the last line of defence
            route = getattr(scope.get("endpoint"), "__name__", "?")
            _log.error("unhandled %s on %s %s", type(exc).__name__, scope.get("method"), route)
            if started:
                return
            body = orjson.dumps(
                operation_outcome(
                    (
                        Issue(
                            "fatal",
                            "exception",
                            "internal server error; the request was not completed",
                        ),
                    )
                )
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/fhir+json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(FhirError, _fhir_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(CatchUnexpected)
