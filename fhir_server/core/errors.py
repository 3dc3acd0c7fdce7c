"""Errors a client can see, each with its HTTP status and OperationOutcome issue code.

FhirError
├── InvalidRequest        400 invalid       (malformed body, bad search value, id mismatch)
│   └── InvalidResource   400 structure     (breaks R4 base rules; carries element paths)
├── NotFound              404 not-found     (unknown type or id)
├── Gone                  410 deleted
├── MethodNotAllowed      405 not-supported
├── PreconditionFailed    412 conflict      (If-Match on a stale version)
├── Conflict              409 conflict
├── NotAcceptable         406 not-supported
├── PayloadTooLarge       413 too-costly
├── UnsupportedMediaType  415 not-supported
├── MultipleMatches       412 multiple-matches (conditional interaction matched several)
├── UnprocessableEntity   422 processing
├── TooCostly             422 too-costly    (an answer too large to give at once: page it)
└── ServiceUnavailable    503 transient     (no connection in time; retry)

Rendered as an OperationOutcome only by ``fhir_server.api.errors``
(http://hl7.org/fhir/R4/operationoutcome.html).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Conflict",
    "FhirError",
    "Gone",
    "Issue",
    "InvalidRequest",
    "InvalidResource",
    "MethodNotAllowed",
    "MultipleMatches",
    "NotAcceptable",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "ServiceUnavailable",
    "TooCostly",
    "UnprocessableEntity",
    "UnsupportedMediaType",
]


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome issue."""

    severity: str
    code: str
    diagnostics: str
    expression: tuple[str, ...] = ()


class FhirError(Exception):
    status = 500
    code = "exception"

    def __init__(self, message: str, *, issues: tuple[Issue, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.issues = issues or (Issue("error", self.code, message),)


class InvalidRequest(FhirError):
    status = 400
    code = "invalid"


class InvalidResource(InvalidRequest):
    code = "structure"


class NotFound(FhirError):
    status = 404
    code = "not-found"


class Gone(FhirError):
    status = 410
    code = "deleted"


class MethodNotAllowed(FhirError):
    status = 405
    code = "not-supported"


class PreconditionFailed(FhirError):
    status = 412
    code = "conflict"


class Conflict(FhirError):
    status = 409
    code = "conflict"


class NotAcceptable(FhirError):
    status = 406
    code = "not-supported"


class PayloadTooLarge(FhirError):
    status = 413
    code = "too-costly"


class UnsupportedMediaType(FhirError):
    status = 415
    code = "not-supported"


class MultipleMatches(FhirError):
    status = 412
    code = "multiple-matches"


class UnprocessableEntity(FhirError):
    status = 422
    code = "processing"


class TooCostly(FhirError):
    status = 422
    code = "too-costly"


class ServiceUnavailable(FhirError):
    status = 503
    code = "transient"
