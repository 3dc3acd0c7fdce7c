"""The FHIR RESTful API: one small function per interaction (http://hl7.org/fhir/R4/http.html)."""

from __future__ import annotations

import email.utils
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
import psycopg
from psycopg_pool import PoolTimeout
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fhir_server.api.formats import output_format, read_body, render_bytes, render_resource
from fhir_server.api.state import AppState
from fhir_server.core.errors import (
    Conflict,
    InvalidRequest,
    Issue,
    MethodNotAllowed,
    MultipleMatches,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    ServiceUnavailable,
    UnprocessableEntity,
    UnsupportedMediaType,
)
from fhir_server.operations.patch import apply_fhirpath_patch, apply_json_patch
from fhir_server.search.include import Include, InvalidInclude, parse_includes, split_includes
from fhir_server.search.parse import (
    InvalidSearch,
    NearValue,
    SearchRequest,
    parse_count,
    parse_search,
)
from fhir_server.search.sql import Cursor, encode_cursor, great_circle_km
from fhir_server.search.values import InvalidValue, parse_date_range
from fhir_server.storage.compartment import CompartmentPage, compartment_page
from fhir_server.storage.includes import Included, fetch_included
from fhir_server.storage.repository import (
    HistoryPage,
    Repository,
    SearchPage,
    StoredResource,
    WriteOutcome,
    format_instant,
)
from profiles.models import mandatory_elements, summary_elements

_log = logging.getLogger(__name__)

__all__ = ["routes"]

_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_ETAG = re.compile(r'^(?:W/)?"([0-9]{1,9})"$')
_VERSION = re.compile(r"[0-9]{1,9}")
_SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
}


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.fhir
    return state


@asynccontextmanager
async def _writing(request: Request) -> AsyncIterator[Repository]:
    """A repository in a transaction that commits when the interaction succeeds."""
    state = _state(request)
    async with _connection(state) as conn, conn.transaction():
        repo = Repository(conn, state.indexer, state.conformance, state.refresh_conformance)
        yield repo
    if repo.wrote_definitions:
        await definitions_written(state)


async def definitions_written(state: AppState) -> None:
    """After a write of a profile or terminology resource, this process uses it at once (the
    others within moments: a trigger notifies them). The write is committed: a failure here
    is logged, never the client's answer (a retry would write it twice)."""
    if state.stored_conformance is None:
        return
    try:
        await state.stored_conformance.refresh()
    except Exception as exc:
        _log.warning("conformance: reload after a write failed: %s", type(exc).__name__)


class _autocommit:  # noqa: N801 - used as a function: ``async with _autocommit(request)``
    """A repository without a transaction: for reads, and for writes of one statement.

    A class rather than stacked generator context managers: it is on the path of every read and
    search, where each generator layer cost about 10 µs. The pool rolls back and discards a
    connection returned in a bad state, as ``pool.connection()`` would.
    """

    __slots__ = ("_conn", "_repo", "_state")

    def __init__(self, request: Request) -> None:
        self._state = _state(request)
        self._conn: Any = None
        self._repo: Repository | None = None

    async def __aenter__(self) -> Repository:
        try:
            self._conn = await self._state.pool.getconn()
        except BaseException as exc:
            _translate(exc)
            raise
        state = self._state
        self._repo = Repository(
            self._conn, state.indexer, state.conformance, state.refresh_conformance
        )
        return self._repo

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        await self._state.pool.putconn(self._conn)
        if exc is not None:
            _translate(exc)
        elif self._repo is not None and self._repo.wrote_definitions:
            await definitions_written(self._state)


@asynccontextmanager
async def _connection(state: AppState) -> AsyncIterator[Any]:
    """A pooled connection; no connection in time, or a lost database, is a 503 to retry."""
    try:
        async with state.pool.connection() as conn:
            yield conn
    except BaseException as exc:
        _translate(exc)
        raise


def _translate(exc: BaseException) -> None:
    """Raise the client-facing error of a pool or database failure; return for any other."""
    if isinstance(exc, PoolTimeout):
        raise ServiceUnavailable("the server is busy; retry shortly") from None
    if isinstance(exc, psycopg.errors.DeadlockDetected):
        raise Conflict("the request collided with another write; retry it") from None
    if isinstance(exc, psycopg.OperationalError):
        raise ServiceUnavailable("the database is unavailable; retry shortly") from None


# -- helpers ---------------------------------------------------------------------------------


def _base(request: Request) -> str:
    configured = _state(request).settings.base_url
    if configured:
        return configured.rstrip("/")
    # The base depends only on these; Starlette's base_url copies the scope and builds a URL.
    scope = request.scope
    key = (
        scope.get("scheme"),
        scope.get("server"),
        scope.get("app_root_path", scope.get("root_path")),
        request.headers.get("host"),
    )
    base = _BASES.get(key)
    if base is None:
        if len(_BASES) >= 64:  # the Host header is the client's: keep the cache small
            _BASES.clear()
        base = _BASES[key] = str(request.base_url).rstrip("/")
    return base


_BASES: dict[tuple[Any, ...], str] = {}


def _path_type(request: Request) -> str:
    resource_type: str = request.path_params["resource_type"]
    if resource_type in {"metadata", "_history"}:
        raise MethodNotAllowed(f"the method {request.method} is not allowed on /{resource_type}")
    if resource_type not in _state(request).resource_types:
        raise NotFound(f"{resource_type!r} is not a resource type this server knows")
    return resource_type


def _path_id(request: Request) -> str:
    id: str = request.path_params["id"]
    if not _ID.fullmatch(id):
        raise InvalidRequest("a resource id is 1-64 characters: letters, digits, '-' and '.'")
    return id


def _prefer(request: Request, key: str) -> str | None:
    for part in request.headers.get("prefer", "").split(","):
        name, _, value = part.strip().partition("=")
        if name.strip() == key:
            return value.strip().strip('"')
    return None


def _if_match(request: Request) -> int | None:
    value = request.headers.get("if-match")
    if value is None:
        return None
    match = _ETAG.fullmatch(value.strip())
    if not match:
        raise InvalidRequest('If-Match must be an ETag such as W/"3"')
    return int(match.group(1))


def _resource_headers(request: Request, stored: StoredResource) -> dict[str, str]:
    return {
        "ETag": stored.etag,
        "Last-Modified": email.utils.format_datetime(
            stored.last_updated.astimezone(UTC), usegmt=True
        ),
    }


def _search_items(request: Request) -> list[tuple[str, str]]:
    return [(k, v) for k, v in request.query_params.multi_items()]


def _parse(
    request: Request,
    resource_type: str,
    items: list[tuple[str, str]],
    compartment: tuple[str, str] | None = None,
) -> SearchRequest:
    state = _state(request)
    return parse_search(
        resource_type,
        items,
        state.registry,
        lenient=_prefer(request, "handling") == "lenient",
        default_count=state.settings.default_count,
        max_count=state.settings.max_count,
        base_url=_base(request),
        compartment=compartment,
        terminology=state.conformance.terminology,
    )


def _criteria(request: Request, resource_type: str, text: str | None = None) -> SearchRequest:
    """Search criteria of a conditional interaction: strict, and never empty."""
    items = (
        parse_qsl(text, keep_blank_values=True)
        if text is not None
        else [(k, v) for k, v in _search_items(request) if k not in {"_format", "_pretty"}]
    )
    if not items:
        raise InvalidRequest("a conditional interaction needs search criteria")
    state = _state(request)
    criteria = parse_search(
        resource_type,
        items,
        state.registry,
        lenient=False,
        base_url=_base(request),
        terminology=state.conformance.terminology,
    )
    if not criteria.clauses:
        raise InvalidRequest("the conditional criteria select no search parameter")
    return criteria


async def _body(request: Request) -> dict[str, Any]:
    raw = await _raw_body(request)
    if not raw:
        raise InvalidRequest("the request has no body")
    return read_body(request.headers.get("content-type"), raw)


async def _raw_body(request: Request) -> bytes:
    """The request body, refused with 413 as soon as it passes the configured limit."""
    limit = _state(request).settings.max_body_bytes
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"the body is larger than {limit} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
    return bytes(raw)


def _write_response(request: Request, outcome: WriteOutcome) -> Response:
    stored = outcome.resource
    headers = _resource_headers(request, stored)
    location = f"{_base(request)}/{stored.resource_type}/{stored.id}/_history/{stored.version_id}"
    headers["Location" if outcome.created else "Content-Location"] = location
    status = 201 if outcome.created else 200
    prefer = _prefer(request, "return")
    if prefer == "minimal":
        return Response(status_code=status, headers=headers)
    if prefer == "OperationOutcome":
        from fhir_server.api.errors import operation_outcome

        message = "created" if outcome.created else "done"
        return render_resource(
            request,
            operation_outcome(
                (
                    Issue(
                        "information",
                        "informational",
                        f"{stored.resource_type}/{stored.id} {message}",
                    ),
                )
            ),
            status=status,
            headers=headers,
        )
    assert stored.body is not None
    return render_bytes(request, stored.body, status=status, headers=headers)


def _parse_instant(value: str, name: str) -> datetime:
    try:
        return parse_date_range(value)[0]
    except InvalidValue:
        raise InvalidRequest(f"{name} must be a FHIR instant or date") from None


# -- whole system ----------------------------------------------------------------------------


async def capabilities(request: Request) -> Response:
    """http://hl7.org/fhir/R4/http.html#capabilities"""
    return render_bytes(request, _state(request).capability_statement)


async def history_system(request: Request) -> Response:
    """http://hl7.org/fhir/R4/http.html#history (whole system)."""
    async with _autocommit(request) as repo:
        return await _history(request, repo, None, None)


# -- type level ------------------------------------------------------------------------------


async def history_type(request: Request) -> Response:
    """http://hl7.org/fhir/R4/http.html#history (type)."""
    resource_type = _path_type(request)
    async with _autocommit(request) as repo:
        return await _history(request, repo, resource_type, None)


async def search_post(request: Request) -> Response:
    """http://hl7.org/fhir/R4/http.html#search with the parameters in a form body."""
    resource_type = _path_type(request)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    items = _search_items(request)
    if media == "application/x-www-form-urlencoded":
        raw = await _raw_body(request)
        try:
            items += parse_qsl(raw.decode(), keep_blank_values=True)
        except UnicodeDecodeError:
            raise InvalidRequest("the form body is not UTF-8") from None
    elif media:
        raise UnsupportedMediaType("POST _search takes application/x-www-form-urlencoded")
    async with _autocommit(request) as repo:
        return await _search(request, repo, resource_type, items)


async def search_type(request: Request) -> Response:
    """http://hl7.org/fhir/R4/http.html#search"""
    resource_type = _path_type(request)
    async with _autocommit(request) as repo:
        return await _search(request, repo, resource_type, _search_items(request))


async def search_compartment(request: Request) -> Response:
    """http://hl7.org/fhir/R4/http.html#vsearch in a compartment: ``GET /Patient/1/Observation``.

    ``GET /Patient/1/*`` lists every resource in the compartment (``_count`` and paging only).
    The Patient compartment is the one this server indexes.
    """
    compartment_type = request.path_params["compartment_type"]
    if compartment_type not in _state(request).resource_types:
        raise NotFound(f"{compartment_type!r} is not a resource type this server knows")
    if compartment_type != "Patient":
        raise InvalidRequest(f"only the Patient compartment is searchable, not {compartment_type}")
    id = _path_id(request)
    resource_type = request.path_params["resource_type"]
    if resource_type == "*":
        return await _whole_compartment(request, id)
    if resource_type not in _state(request).resource_types:
        raise NotFound(f"{resource_type!r} is not a resource type this server knows")
    async with _autocommit(request) as repo:
        return await _search(request, repo, resource_type, _search_items(request), ("Patient", id))


async def _whole_compartment(request: Request, id: str) -> Response:
    params = request.query_params
    for name in params:
        if name not in {"_count", "_cursor", "_format", "_pretty"}:
            raise InvalidRequest(f"a search of every type in a compartment does not take {name}")
    state = _state(request)
    count_text = params.get("_count")
    count = (
        parse_count(count_text, state.settings.max_count)
        if count_text is not None
        else state.settings.default_count
    )
    async with _autocommit(request) as repo:
        page = await compartment_page(repo.conn, id, count=count, cursor=params.get("_cursor"))
    body = _everything_bundle(request, id, page, Included((), ()), f"Patient/{id}/*")
    return render_bytes(request, body)


async def create(request: Request) -> Response:
    """http://hl7.org/fhir/R4/http.html#create and #ccreate (If-None-Exist)."""
    resource_type = _path_type(request)
    output_format(request)  # a 406 must come before anything is written
    body = await _body(request)
    condition = request.headers.get("if-none-exist")
    criteria = _criteria(request, resource_type, condition) if condition else None
    body.pop("id", None)  # the server assigns the id of a created resource
    if criteria is None:
        # A plain create is one statement, atomic on its own: BEGIN and COMMIT would only add
        # two round trips.
        async with _autocommit(request) as repo:
            outcome = await repo.create(resource_type, body)
    else:
        async with _writing(request) as repo:
            outcome = await repo.create(resource_type, body, if_none_exist=criteria)
    return _write_response(request, outcome)


async def conditional_update(request: Request) -> Response:
    """http://hl7.org/fhir/R4/http.html#cond-update"""
    resource_type = _path_type(request)
    output_format(request)
    criteria = _criteria(request, resource_type)
    body = await _body(request)
    async with _writing(request) as repo:
        outcome = await repo.conditional_update(criteria, body, if_match=_if_match(request))
    return _write_response(request, outcome)


async def conditional_delete(request: Request) -> Response:
    """http://hl7.org/fhir/R4/http.html#cdelete"""
    resource_type = _path_type(request)
    criteria = _criteria(request, resource_type)
    async with _writing(request) as repo:
        deleted = await repo.conditional_delete(criteria, if_match=_if_match(request))
    headers = {"ETag": deleted.etag} if deleted is not None else None
    return Response(status_code=204, headers=headers)


# -- instance level --------------------------------------------------------------------------


async def vread(request: Request) -> Response:
    """http://hl7.org/fhir/R4/http.html#vread"""
    resource_type, id = _path_type(request), _path_id(request)
    version_id = request.path_params["version_id"]
    if not _VERSION.fullmatch(version_id):
        raise NotFound(f"{resource_type}/{id} has no version {version_id!r}")
    async with _autocommit(request) as repo:
        stored = await repo.vread(resource_type, id, int(version_id))
    assert stored.body is not None
    return render_bytes(request, stored.body, headers=_resource_headers(request, stored))


async def history_instance(request: Request) -> Response:
    """http://hl7.org/fhir/R4/http.html#history (instance)."""
    resource_type, id = _path_type(request), _path_id(request)
    async with _autocommit(request) as repo:
        return await _history(request, repo, resource_type, id)


async def read(request: Request) -> Response:
    """http://hl7.org/fhir/R4/http.html#read, with If-None-Match and If-Modified-Since."""
    resource_type, id = _path_type(request), _path_id(request)
    async with _autocommit(request) as repo:
        stored = await repo.read(resource_type, id)
    headers = _resource_headers(request, stored)
    none_match = request.headers.get("if-none-match")
    if none_match is not None:
        tags = {t.strip() for t in none_match.split(",")}
        if "*" in tags or stored.etag in tags or f'"{stored.version_id}"' in tags:
            return Response(status_code=304, headers=headers)
    modified_since = request.headers.get("if-modified-since")
    if modified_since is not None and none_match is None:
        try:
            since = email.utils.parsedate_to_datetime(modified_since)
        except (TypeError, ValueError):
            since = None
        if (
            since is not None
            and since.tzinfo is not None
            and stored.last_updated.replace(microsecond=0) <= since
        ):
            return Response(status_code=304, headers=headers)
    assert stored.body is not None
    return render_bytes(request, stored.body, headers=headers)


async def update(request: Request) -> Response:
    """http://hl7.org/fhir/R4/http.html#update (update-as-create when the id is new)."""
    resource_type, id = _path_type(request), _path_id(request)
    output_format(request)
    body = await _body(request)
    async with _writing(request) as repo:
        outcome = await repo.update(resource_type, id, body, if_match=_if_match(request))
    return _write_response(request, outcome)


async def patch(request: Request) -> Response:
    """http://hl7.org/fhir/R4/http.html#patch: JSON Patch or FHIRPath Patch, with If-Match."""
    resource_type, id = _path_type(request), _path_id(request)
    output_format(request)
    change = await _patch_document(request)
    async with _writing(request) as repo:
        outcome = await patch_resource(repo, resource_type, id, change, _if_match(request))
    return _write_response(request, outcome)


async def conditional_patch(request: Request) -> Response:
    """http://hl7.org/fhir/R4/http.html#patch on search criteria: the single match is patched."""
    resource_type = _path_type(request)
    output_format(request)
    criteria = _criteria(request, resource_type)
    change = await _patch_document(request)
    async with _writing(request) as repo:
        found = await repo.find(criteria)
        if len(found) > 1:
            raise MultipleMatches("the criteria match more than one resource")
        if not found:
            raise NotFound("the criteria match no resource")
        outcome = await patch_resource(repo, resource_type, found[0], change, _if_match(request))
    return _write_response(request, outcome)


_JSON_PATCH = "application/json-patch+json"


async def _patch_document(request: Request) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The change a PATCH body describes, as a function of the current resource."""
    raw = await _raw_body(request)
    if not raw:
        raise InvalidRequest("the request has no body")
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == _JSON_PATCH:
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InvalidRequest("the JSON Patch document is not valid JSON") from None
        return lambda resource: apply_json_patch(resource, document)
    parameters = read_body(media, raw)
    if parameters.get("resourceType") != "Parameters":
        raise InvalidRequest(f"PATCH takes {_JSON_PATCH} or a FHIRPath Patch Parameters resource")
    return lambda resource: apply_fhirpath_patch(resource, parameters)


async def patch_resource(
    repo: Repository,
    resource_type: str,
    id: str,
    change: Callable[[dict[str, Any]], dict[str, Any]],
    if_match: int | None,
) -> WriteOutcome:
    """Apply ``change`` to the current version and store the result as the next one.

    Runs inside the caller's transaction, holding the resource's write lock from the read to
    the update, so no other write lands in between and none is lost.
    """
    await repo.lock_resource(resource_type, id)
    current = await repo.read(resource_type, id)
    if if_match is not None and if_match != current.version_id:
        raise PreconditionFailed(
            f"version conflict: {resource_type}/{id} is at version {current.version_id}, "
            f"not {if_match}"
        )
    assert current.body is not None
    patched = change(orjson.loads(current.body))
    if patched.get("resourceType") != resource_type or patched.get("id") != id:
        raise UnprocessableEntity("a patch may not change the resource type or id")
    return await repo.update(resource_type, id, patched, if_match=current.version_id)


async def everything(request: Request) -> Response:
    """http://hl7.org/fhir/R4/patient-operation-everything.html, for one Patient or all.

    The Patient's compartment (the Patient first), then what those resources refer to outside
    it (organizations, practitioners, locations) as included resources. ``_since``, ``_type``
    and ``_count`` with paging; ``start`` and ``end`` (care dates) are refused.
    """
    id = request.path_params.get("id")
    if id is not None:
        id = _path_id(request)
    params = request.query_params
    for name in params:
        if name not in {"_since", "_type", "_count", "_cursor", "_format", "_pretty"}:
            raise InvalidRequest(f"$everything does not support the parameter {name}")
    state = _state(request)
    types = [t.strip() for t in params.get("_type", "").split(",") if t.strip()]
    unknown = [t for t in types if t not in state.resource_types]
    if unknown:
        raise InvalidRequest(f"_type names no resource type this server knows: {unknown[0]!r}")
    count_text = params.get("_count")
    count = (
        parse_count(count_text, state.settings.max_count)
        if count_text is not None
        else state.settings.default_count
    )
    since = _parse_instant(params["_since"], "_since") if "_since" in params else None
    async with _autocommit(request) as repo:
        if id is not None:
            await repo.read("Patient", id)  # 404 or 410 for a Patient that is not here
        async with repo.conn.transaction():
            await repo.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            page = await compartment_page(
                repo.conn,
                id,
                types=types,
                since=since,
                count=count,
                cursor=params.get("_cursor"),
            )
            referenced = _referenced(state, page.resources)
            included = await fetch_included(
                repo.conn, referenced, page.resources, state.settings.max_count
            )
            if id is not None:
                # A Group or a link names other Patients: their records are not this one's.
                others = tuple(r for r in included.resources if r.resource_type != "Patient")
                included = Included(others, included.warnings)
    where = f"Patient/{id}/$everything" if id is not None else "Patient/$everything"
    return render_bytes(request, _everything_bundle(request, id, page, included, where))


def _referenced(state: AppState, resources: tuple[StoredResource, ...]) -> tuple[Include, ...]:
    """Includes of every reference of the types on the page."""
    includes = []
    for resource_type in sorted({r.resource_type for r in resources}):
        codes = tuple(
            code
            for code, param in state.registry.for_type(resource_type).items()
            if param.type == "reference" and param.expression and param.pending is None
        )
        if codes:
            includes.append(Include(resource_type, codes, None, False, False, f"{resource_type}:*"))
    return tuple(includes)


def _everything_bundle(
    request: Request, id: str | None, page: CompartmentPage, included: Included, path: str
) -> bytes:
    base = _base(request)
    path = f"{base}/{path}"
    links = [{"relation": "self", "url": str(request.url)}]
    if page.next_cursor is not None:
        kept = [(k, v) for k, v in request.query_params.multi_items() if k != "_cursor"]
        links.append(
            {
                "relation": "next",
                "url": f"{path}?" + urlencode([*kept, ("_cursor", page.next_cursor)]),
            }
        )
    head = orjson.dumps(
        {
            "resourceType": "Bundle",
            "meta": {"lastUpdated": format_instant(datetime.now(UTC))},
            "type": "searchset",
            "link": links,
        }
    )
    entries = [
        b'{"fullUrl":'
        + orjson.dumps(f"{base}/{stored.resource_type}/{stored.id}")
        + b',"resource":'
        + (stored.body or b"{}")
        + (b',"search":{"mode":"%s"}}' % mode)
        for resources, mode in ((page.resources, b"match"), (included.resources, b"include"))
        for stored in resources
    ]
    if included.warnings:
        from fhir_server.api.errors import operation_outcome

        outcome = operation_outcome(
            tuple(Issue("warning", "too-costly", message) for message in included.warnings)
        )
        entries.append(b'{"resource":' + orjson.dumps(outcome) + b',"search":{"mode":"outcome"}}')
    if not entries:
        return head
    return head[:-1] + b',"entry":[' + b",".join(entries) + b"]}"


async def delete(request: Request) -> Response:
    """http://hl7.org/fhir/R4/http.html#delete"""
    resource_type, id = _path_type(request), _path_id(request)
    async with _writing(request) as repo:
        deleted = await repo.delete(resource_type, id, if_match=_if_match(request))
    headers = {"ETag": deleted.etag} if deleted is not None else None
    return Response(status_code=204, headers=headers)


# Specific paths before the general ones: /Patient/_history is not a read of id "_history".
# The hot GETs (search, read) come as early as that allows: each route tried costs a regex match.
routes = [
    Route("/metadata", capabilities, methods=["GET"]),
    Route("/_history", history_system, methods=["GET"]),
    Route("/{resource_type}", search_type, methods=["GET"]),
    Route("/{resource_type}/_history", history_type, methods=["GET"]),
    Route("/Patient/$everything", everything, methods=["GET"]),
    Route("/{resource_type}/{id}", read, methods=["GET"]),
    Route("/Patient/{id}/$everything", everything, methods=["GET"]),
    Route("/{resource_type}/_search", search_post, methods=["POST"]),
    Route("/{resource_type}/{id}/_history/{version_id}", vread, methods=["GET"]),
    Route("/{resource_type}/{id}/_history", history_instance, methods=["GET"]),
    Route("/{compartment_type}/{id}/{resource_type}", search_compartment, methods=["GET"]),
    Route("/{resource_type}/{id}", update, methods=["PUT"]),
    Route("/{resource_type}/{id}", delete, methods=["DELETE"]),
    Route("/{resource_type}/{id}", patch, methods=["PATCH"]),
    Route("/{resource_type}", create, methods=["POST"]),
    Route("/{resource_type}", conditional_update, methods=["PUT"]),
    Route("/{resource_type}", conditional_delete, methods=["DELETE"]),
    Route("/{resource_type}", conditional_patch, methods=["PATCH"]),
]


# -- bundles ---------------------------------------------------------------------------------


async def _search(
    request: Request,
    repo: Repository,
    resource_type: str,
    items: list[tuple[str, str]],
    compartment: tuple[str, str] | None = None,
) -> Response:
    include_items, items = split_includes(items)
    search = _parse(request, resource_type, items, compartment)
    includes, warnings = _includes(request, resource_type, include_items)
    included = None
    if includes and search.summary != "count":
        # The page and what it includes are read from one snapshot.
        async with repo.conn.transaction():
            await repo.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            page = await repo.search(search)
            limit = _state(request).settings.max_count
            included = await fetch_included(repo.conn, includes, page.resources, limit)
    else:
        page = await repo.search(search)
    kept = [(k, v) for k, v in request.query_params.multi_items() if k in {"_format", "_pretty"}]
    body = searchset(
        _base(request), str(request.url), search, page, [*include_items, *kept], included, warnings
    )
    return render_bytes(request, body)


def _includes(
    request: Request, resource_type: str, items: list[tuple[str, str]]
) -> tuple[tuple[Include, ...], tuple[str, ...]]:
    """The _include and _revinclude of a search; under lenient handling, bad ones are ignored."""
    registry = _state(request).registry
    try:
        return parse_includes(resource_type, items, registry), ()
    except InvalidInclude as exc:
        if _prefer(request, "handling") != "lenient":
            raise InvalidSearch(str(exc)) from None
    kept: list[Include] = []
    ignored: list[str] = []
    for item in items:
        try:
            kept.extend(parse_includes(resource_type, [item], registry))
        except InvalidInclude as exc:
            ignored.append(f"{item[0]}={item[1]} was ignored: {exc}")
    return tuple(kept), tuple(ignored)


def _page_link(
    base: str, search: SearchRequest, cursor: Cursor | None, kept: list[tuple[str, str]]
) -> str:
    items = [*search.query, *kept]
    if cursor is not None:
        items.append(("_cursor", encode_cursor(cursor)))
    query = urlencode(items)
    path = search.resource_type
    if search.compartment is not None:
        path = "/".join((*search.compartment, search.resource_type))
    return f"{base}/{path}" + (f"?{query}" if query else "")


def searchset(
    base: str,
    self_url: str,
    search: SearchRequest,
    page: SearchPage,
    kept: list[tuple[str, str]] | None = None,
    included: Included | None = None,
    warnings: tuple[str, ...] = (),
) -> bytes:
    """The searchset Bundle, with stored bodies spliced in as they are.

    ``kept`` are parameters that page links carry besides the search (``_format``, ``_pretty``,
    the includes); ``included`` resources follow the matches as ``search.mode`` include.
    """
    kept = kept or []
    links = [{"relation": "self", "url": self_url}]
    if page.next_cursor is not None:
        links.append({"relation": "next", "url": _page_link(base, search, page.next_cursor, kept)})
    if page.previous_cursor is not None:
        links.append(
            {"relation": "previous", "url": _page_link(base, search, page.previous_cursor, kept)}
        )
    head: dict[str, Any] = {
        "resourceType": "Bundle",
        "meta": {"lastUpdated": format_instant(datetime.now(UTC))},
        "type": "searchset",
    }
    if page.total is not None:
        head["total"] = page.total
    head["link"] = links
    near = _distance_point(search)
    entries = [
        b'{"fullUrl":'
        + orjson.dumps(f"{base}/{search.resource_type}/{stored.id}")
        + b',"resource":'
        + _shaped(search, stored.body or b"{}")
        + b',"search":{"mode":"match"'
        + (_distance_extension(near, stored.body, page, i) if near is not None else b"")
        + b"}}"
        for i, stored in enumerate(page.resources)
    ]
    if included is not None:
        entries += [
            b'{"fullUrl":'
            + orjson.dumps(f"{base}/{stored.resource_type}/{stored.id}")
            + b',"resource":'
            + _shaped(search, stored.body or b"{}")
            + b',"search":{"mode":"include"}}'
            for stored in included.resources
        ]
        warnings = (*warnings, *included.warnings)
    notes = (*search.ignored, *warnings)
    if notes:
        from fhir_server.api.errors import operation_outcome

        outcome = operation_outcome(
            tuple(Issue("warning", "not-supported", message) for message in notes)
        )
        entries.append(b'{"resource":' + orjson.dumps(outcome) + b',"search":{"mode":"outcome"}}')
    head_bytes = orjson.dumps(head)
    if not entries:
        return head_bytes
    return head_bytes[:-1] + b',"entry":[' + b",".join(entries) + b"]}"


_LOCATION_DISTANCE = "http://hl7.org/fhir/StructureDefinition/location-distance"
# UCUM code -> the unit as people write it (Distance.unit).
_UNIT_NAMES = {"km": "km", "m": "m", "[mi_i]": "mi"}
_KM_PER_UNIT = {"km": 1.0, "m": 0.001, "[mi_i]": 1.609344}


def _distance_point(search: SearchRequest) -> tuple[int, NearValue] | None:
    """The sort key (its position) and point a near search measures from, else None.

    Directly (``Location?near``) the distance is the resource's own; through a chain
    (``HealthcareService?location.near``) it is that of its nearest matching Location, as
    the search sorted by it.
    """
    for position, key in enumerate(search.sort):
        if key.kind == "near" and key.point is not None:
            return position, key.point
    return None


def _distance_extension(
    near: tuple[int, NearValue], body: bytes | None, page: SearchPage, row: int
) -> bytes:
    """``,"extension":[location-distance]`` for Bundle.entry.search, in the unit the near asked.

    http://hl7.org/fhir/R4/extension-location-distance.html; empty when there is no distance
    (a resource without a position).
    """
    position, point = near
    km: float | None = None
    if row < len(page.sort_values) and position < len(page.sort_values[row]):
        value = page.sort_values[row][position]
        km = float(value) if isinstance(value, int | float | Decimal) else None
    if km is None:
        found = orjson.loads(body or b"{}").get("position") or {}
        latitude, longitude = found.get("latitude"), found.get("longitude")
        if not isinstance(latitude, int | float) or not isinstance(longitude, int | float):
            return b""
        km = great_circle_km(point, latitude, longitude)
    value = km / _KM_PER_UNIT.get(point.unit, 1.0)
    distance = {
        "value": round(value, 3),
        "unit": _UNIT_NAMES.get(point.unit, point.unit),
        "system": "http://unitsofmeasure.org",
        "code": point.unit,
    }
    return b',"extension":' + orjson.dumps([{"url": _LOCATION_DISTANCE, "valueDistance": distance}])


_SUMMARY_KEEP = {"resourceType", "id", "meta", "implicitRules"}


def _shaped(search: SearchRequest, body: bytes) -> bytes:
    """Apply _elements and _summary=true|text|data; the stored bytes pass through otherwise.

    http://hl7.org/fhir/R4/search.html#summary and #elements; a subsetted resource is tagged.
    """
    if not search.elements and search.summary not in {"true", "text", "data"}:
        return body
    resource = orjson.loads(body)
    if search.elements:
        keep = _SUMMARY_KEEP | mandatory_elements(resource["resourceType"]) | set(search.elements)
        resource = {k: v for k, v in resource.items() if k in keep}
    elif search.summary == "true":
        summary = summary_elements(resource["resourceType"])
        resource = {k: v for k, v in resource.items() if k in summary}
    elif search.summary == "text":
        keep = _SUMMARY_KEEP | mandatory_elements(resource["resourceType"]) | {"text"}
        resource = {k: v for k, v in resource.items() if k in keep}
    else:
        resource.pop("text", None)
    meta = resource.setdefault("meta", {})
    meta["tag"] = [*meta.get("tag", []), _SUBSETTED]
    return orjson.dumps(resource)


async def _history(
    request: Request, repo: Repository, resource_type: str | None, id: str | None
) -> Response:
    params = request.query_params
    state = _state(request)
    count_text = params.get("_count")
    count = (
        parse_count(count_text, state.settings.max_count)
        if count_text is not None
        else state.settings.default_count
    )
    since = _parse_instant(params["_since"], "_since") if "_since" in params else None
    at = None
    if "_at" in params:
        try:
            at = parse_date_range(params["_at"])
        except InvalidValue:
            raise InvalidRequest("_at must be a FHIR date or instant") from None
    if id is not None:
        await _exists(repo, resource_type, id)
    page = await repo.history(
        resource_type, id, since=since, at=at, count=count, cursor=params.get("_cursor")
    )
    return render_bytes(request, _history_bundle(request, resource_type, id, page))


async def _exists(repo: Repository, resource_type: str | None, id: str) -> None:
    assert resource_type is not None
    page = await repo.history(resource_type, id, count=1)
    if not page.entries:
        raise NotFound(f"{resource_type}/{id} is not known")


def _history_bundle(
    request: Request, resource_type: str | None, id: str | None, page: HistoryPage
) -> bytes:
    base = _base(request)
    path = "/".join(p for p in (resource_type, id) if p)
    links = [{"relation": "self", "url": str(request.url)}]
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "_cursor"]
    prefix = f"{base}/{path + '/' if path else ''}_history?"
    for relation, position in (("next", page.next_cursor), ("previous", page.previous_cursor)):
        if position is not None:
            links.append(
                {"relation": relation, "url": prefix + urlencode([*kept, ("_cursor", position)])}
            )
    head = orjson.dumps(
        {
            "resourceType": "Bundle",
            "meta": {"lastUpdated": format_instant(datetime.now(UTC))},
            "type": "history",
            "link": links,
        }
    )
    entries = []
    for entry in page.entries:
        stored = entry.resource
        url = f"{stored.resource_type}/{stored.id}"
        status = {"POST": "201 Created", "DELETE": "204 No Content"}.get(entry.method, "200 OK")
        tail = orjson.dumps(
            {
                "request": {
                    "method": entry.method,
                    "url": stored.resource_type if entry.method == "POST" else url,
                },
                "response": {
                    "status": status,
                    "etag": stored.etag,
                    "lastModified": format_instant(stored.last_updated),
                },
            }
        )
        full_url = b'{"fullUrl":' + orjson.dumps(f"{base}/{url}")
        if stored.body is not None:
            entries.append(full_url + b',"resource":' + stored.body + b"," + tail[1:])
        else:
            entries.append(full_url + b"," + tail[1:])
    if not entries:
        return head
    return head[:-1] + b',"entry":[' + b",".join(entries) + b"]}"
