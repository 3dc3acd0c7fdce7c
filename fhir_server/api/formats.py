"""Content negotiation and bodies: FHIR JSON and XML in and out (http://hl7.org/fhir/R4/http.html#mime-type)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from fhir_server.core.errors import (
    InvalidRequest,
    InvalidResource,
    Issue,
    NotAcceptable,
    UnsupportedMediaType,
)
from profiles.models import InvalidXml, ResourceInvalid, build_xml, parse_xml

__all__ = ["JSON", "XML", "output_format", "read_body", "render_bytes", "render_resource"]

JSON = "application/fhir+json"
XML = "application/fhir+xml"
_FORMAT_ALIASES = {
    "json": JSON,
    "application/json": JSON,
    "application/fhir+json": JSON,
    "xml": XML,
    "text/xml": XML,
    "application/xml": XML,
    "application/fhir+xml": XML,
}
_JSON_TYPES = {"application/fhir+json", "application/json", "application/json+fhir"}
_XML_TYPES = {"application/fhir+xml", "application/xml", "text/xml", "application/xml+fhir"}


def output_format(request: Request) -> str:
    """JSON or XML, from ``_format`` first, then the Accept header (by q-value); JSON otherwise."""
    fmt = request.query_params.get("_format")
    if fmt is not None:
        chosen = _FORMAT_ALIASES.get(fmt.split(";")[0].strip().lower())
        if chosen is None:
            raise NotAcceptable(f"_format {fmt!r} is not supported; use json or xml")
        return chosen
    accept = request.headers.get("accept")
    if not accept:
        return JSON
    best, best_q = JSON, -1.0
    any_supported = False
    for part in accept.split(","):
        media, _, params = part.strip().partition(";")
        media = media.strip().lower()
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        kind = (
            JSON
            if media in _JSON_TYPES or media in {"*/*", "application/*"}
            else (XML if media in _XML_TYPES else None)
        )
        if kind is None:
            continue
        any_supported = True
        if q > best_q:
            best, best_q = kind, q
    if not any_supported and "html" not in accept:
        raise NotAcceptable("the server answers application/fhir+json or application/fhir+xml")
    return best


def _pretty(request: Request) -> bool:
    return request.query_params.get("_pretty") == "true"


def render_bytes(
    request: Request, body: bytes, *, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A stored JSON text as the response, converted only when XML or _pretty is asked for."""
    fmt = output_format(request)
    if fmt == XML:
        body = build_xml(orjson.loads(body), pretty=_pretty(request))
    elif _pretty(request):
        body = orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2)
    return Response(body, status_code=status, headers=headers, media_type=f"{fmt}; charset=utf-8")


def render_resource(
    request: Request,
    resource: dict[str, Any],
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    try:
        fmt = output_format(request)
    except NotAcceptable:
        fmt = JSON
    if fmt == XML:
        body = build_xml(resource, pretty=_pretty(request))
    else:
        body = orjson.dumps(resource, option=orjson.OPT_INDENT_2 if _pretty(request) else 0)
    return Response(body, status_code=status, headers=headers, media_type=f"{fmt}; charset=utf-8")


def read_body(content_type: str | None, raw: bytes) -> dict[str, Any]:
    """The request body as a JSON-form resource; XML is converted, anything else refused."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media in _XML_TYPES:
        try:
            return parse_xml(raw)
        except InvalidXml as exc:
            raise InvalidRequest(str(exc)) from None
        except ResourceInvalid as exc:
            raise InvalidResource(
                str(exc),
                issues=tuple(
                    Issue("error", "structure", i.message, (i.expression,)) for i in exc.issues
                ),
            ) from None
    if media not in _JSON_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {media or '(none)'!r} is not supported; "
            "send application/fhir+json or application/fhir+xml"
        )
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"the body is not valid JSON: {exc.msg} at position {exc.pos}"
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object (a FHIR resource)")
    return data
