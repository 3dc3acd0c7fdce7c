"""Batch and transaction Bundles posted to the base: http://hl7.org/fhir/R4/http.html#transaction.

A transaction is one database transaction. Its entries run in the order the specification sets
(DELETE, POST, PUT and PATCH, then GET and HEAD), after the server has given every created
resource its id and rewritten the bundle's references: ``urn:uuid:`` and other ``fullUrl``s of
its own entries, and conditional references such as ``Patient?identifier=...``. Creates are
validated as their entries come and written together, one COPY per table
(``storage/batch.py``), before any other entry reads or writes. Any failure rolls
the whole bundle back and answers with the failing entry's OperationOutcome. The advisory locks
of conditional entries are taken in one sorted pass before any write, so two identical
transactions arriving together serialize instead of deadlocking, and the second finds what the
first made.

A batch runs each entry on its own, in its own transaction, and reports each entry's outcome.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
import psycopg
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fhir_server.api import rest
from fhir_server.api.errors import operation_outcome
from fhir_server.api.formats import output_format, read_body, render_bytes
from fhir_server.core.errors import (
    Conflict,
    FhirError,
    InvalidRequest,
    Issue,
    MultipleMatches,
    NotFound,
    PreconditionFailed,
)
from fhir_server.operations.patch import apply_fhirpath_patch, apply_json_patch
from fhir_server.search.parse import SearchRequest, parse_search
from fhir_server.storage.batch import CreateBatch
from fhir_server.storage.conformance import CONFORMANCE_TYPES
from fhir_server.storage.repository import (
    Repository,
    StoredResource,
    format_instant,
    normalize_criteria,
)

__all__ = ["routes", "transaction_or_batch"]

# http://hl7.org/fhir/R4/http.html#trules: the order a transaction's entries are processed in.
_PHASE = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_STATUS_TEXT = {
    200: "200 OK",
    201: "201 Created",
    204: "204 No Content",
    304: "304 Not Modified",
}
_LOCKS = "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) FROM unnest(%s::text[]) AS k"
_VERSION = re.compile(r"[0-9]{1,9}")
# Deepest nesting of objects and arrays a resource may have: the stored JSON text must be
# writable (orjson refuses more than 254 levels), and no FHIR resource comes near it.
_DEPTH_MAX = 200


@dataclass(slots=True)
class _Entry:
    """One entry of the request bundle, its request parsed."""

    index: int
    method: str
    resource_type: str | None
    id: str | None
    version: str | None
    query: str | None
    full_url: str | None
    resource: dict[str, Any] | None
    if_none_exist: str | None
    if_match: int | None
    if_none_match: str | None
    if_modified_since: str | None
    # Set while a transaction is planned: the id a POST or conditional PUT writes to, and
    # whether a conditional create found an existing resource instead.
    target_id: str | None = None
    matched: bool = False
    # Whether the resource holds a conditional reference (``Patient?identifier=...``) to
    # resolve before it is written; None until ``_rewrite`` has looked.
    conditional: bool | None = None
    # The parsed ifNoneExist (POST) or url criteria (PUT, DELETE, PATCH), once parsed.
    criteria: SearchRequest | None = None

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.index}]"


@dataclass(slots=True)
class _Result:
    """What one entry answered: the ``response`` element and an optional resource body."""

    status: int
    stored: StoredResource | None = None
    body: bytes | None = None
    outcome: dict[str, Any] | None = None
    location: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class _EntryError(FhirError):
    """An error of one entry, its messages prefixed with where the entry is."""

    def __init__(self, entry: _Entry, error: FhirError) -> None:
        issues = tuple(
            Issue(
                i.severity,
                i.code,
                f"{entry.where}: {i.diagnostics}",
                i.expression or (entry.where,),
            )
            for i in error.issues
        )
        super().__init__(f"{entry.where}: {error.message}", issues=issues)
        self.status = error.status
        self.code = error.code


async def transaction_or_batch(request: Request) -> Response:
    """``POST [base]`` with a Bundle of type transaction or batch."""
    output_format(request)
    raw = await rest._raw_body(request)
    if not raw:
        raise InvalidRequest("the request has no body")
    bundle = read_body(request.headers.get("content-type"), raw)
    if bundle.get("resourceType") != "Bundle":
        raise InvalidRequest("POST to the base takes a Bundle of type transaction or batch")
    kind = bundle.get("type")
    if kind not in {"transaction", "batch"}:
        raise InvalidRequest(
            f"a Bundle posted to the base must be of type transaction or batch, not {kind!r}"
        )
    base = rest._base(request)
    raw_entries = bundle.get("entry", [])
    if not isinstance(raw_entries, list):
        raise InvalidRequest("Bundle.entry must be an array")
    state = rest._state(request)
    context = _Context(request, base, state.resource_types)
    if kind == "transaction":
        entries = [_parse_entry(i, e, context) for i, e in enumerate(raw_entries)]
        results = await _transaction(context, entries)
        parsed: list[_Entry | FhirError] = list(entries)
    else:
        parsed = []
        for i, e in enumerate(raw_entries):
            try:
                parsed.append(_parse_entry(i, e, context))
            except FhirError as error:
                parsed.append(error)
        results = await _batch(context, parsed)
    if any(isinstance(e, _Entry) and e.resource_type in CONFORMANCE_TYPES for e in parsed):
        await rest.definitions_written(state)  # profiles or terminology written: used at once
    return render_bytes(request, _response_bundle(context, f"{kind}-response", parsed, results))


@dataclass(slots=True)
class _Context:
    request: Request
    base: str
    resource_types: frozenset[str]

    @property
    def prefer_return(self) -> str | None:
        return rest._prefer(self.request, "return")


# -- parsing ---------------------------------------------------------------------------------


def _parse_entry(index: int, raw: Any, context: _Context) -> _Entry:
    where = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{where} must be an object")
    req = raw.get("request")
    if not isinstance(req, dict):
        raise InvalidRequest(f"{where} has no request (method and url)")
    method, url = req.get("method"), req.get("url")
    if method not in _PHASE:
        raise InvalidRequest(f"{where}.request.method must be one of {', '.join(_PHASE)}")
    if not isinstance(url, str) or not url:
        raise InvalidRequest(f"{where}.request.url must be a non-empty string")
    resource = raw.get("resource")
    if resource is not None and not isinstance(resource, dict):
        raise InvalidRequest(f"{where}.resource must be a resource")
    full_url = raw.get("fullUrl")
    if full_url is not None and not isinstance(full_url, str):
        raise InvalidRequest(f"{where}.fullUrl must be a string")
    if url.startswith(context.base + "/"):
        url = url[len(context.base) + 1 :]
    elif "://" in url.split("?")[0]:
        raise InvalidRequest(f"{where}.request.url must be relative to this server")
    path, _, query = url.lstrip("/").partition("?")
    parts = path.split("/") if path else []
    resource_type = id = version = None
    if parts:
        resource_type = parts[0]
        if resource_type not in context.resource_types:
            raise NotFound(f"{where}: {resource_type!r} is not a resource type this server knows")
    if len(parts) >= 2:
        id = parts[1]
        if not rest._ID.fullmatch(id):
            raise InvalidRequest(f"{where}: {id!r} is not a valid resource id")
    if len(parts) == 4 and parts[2] == "_history":
        version = parts[3]
    elif len(parts) > 2 or not parts:
        raise InvalidRequest(f"{where}.request.url {url!r} is not supported in a bundle")
    if method in {"POST", "PUT", "PATCH"} and resource is None:
        raise InvalidRequest(f"{where}: a {method} entry needs a resource")
    if method == "POST" and (id is not None or query):
        raise InvalidRequest(f"{where}: POST takes a type URL such as 'Patient'")
    if method in {"PUT", "DELETE", "PATCH"} and id is None and not query:
        raise InvalidRequest(f"{where}: {method} needs an id or search criteria in the url")
    if method in {"PUT", "DELETE", "PATCH"} and version is not None:
        raise InvalidRequest(f"{where}: {method} cannot name a version")
    if resource is not None and method in {"POST", "PUT"}:
        if resource.get("resourceType") != resource_type:
            raise InvalidRequest(
                f"{where}: the resource is a {resource.get('resourceType')!r}, "
                f"the url is for {resource_type!r}"
            )
    if_match = None
    if isinstance(req.get("ifMatch"), str):
        match = rest._ETAG.fullmatch(req["ifMatch"].strip())
        if not match:
            raise InvalidRequest(f'{where}.request.ifMatch must be an ETag such as W/"3"')
        if_match = int(match.group(1))
    return _Entry(
        index=index,
        method=method,
        resource_type=resource_type,
        id=id,
        version=version,
        query=query or None,
        full_url=full_url,
        resource=resource,
        if_none_exist=_text(req.get("ifNoneExist")),
        if_match=if_match,
        if_none_match=_text(req.get("ifNoneMatch")),
        if_modified_since=_text(req.get("ifModifiedSince")),
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _condition(context: _Context, entry: _Entry) -> SearchRequest:
    """The entry's conditional criteria: its ifNoneExist if a POST, else its url's query."""
    if entry.criteria is None:
        text = entry.if_none_exist if entry.method == "POST" else entry.query
        assert entry.resource_type is not None and text is not None
        entry.criteria = _criteria(context, entry.resource_type, text)
    return entry.criteria


def _criteria(context: _Context, resource_type: str, text: str) -> SearchRequest:
    items = parse_qsl(text, keep_blank_values=True)
    if not items:
        raise InvalidRequest("a conditional interaction needs search criteria")
    state = rest._state(context.request)
    criteria = parse_search(
        resource_type,
        items,
        state.registry,
        lenient=False,
        base_url=context.base,
        terminology=state.conformance.terminology,
    )
    if not criteria.clauses:
        raise InvalidRequest("the conditional criteria select no search parameter")
    return criteria


# -- transaction -----------------------------------------------------------------------------


async def _transaction(context: _Context, entries: list[_Entry]) -> dict[int, _Result]:
    full_urls = [
        e.full_url.lower() if e.full_url.startswith("urn:") else e.full_url
        for e in entries
        if e.full_url
    ]
    if len(full_urls) != len(set(full_urls)):
        raise InvalidRequest("two entries of the transaction have the same fullUrl")
    state = rest._state(context.request)
    try:
        async with rest._connection(state) as conn, conn.transaction():
            repo = Repository(conn, state.indexer, state.conformance, state.refresh_conformance)
            await _lock_conditions(context, repo, entries)
            references = await _plan(context, repo, entries)
            _refuse_overlaps(entries)
            for entry in entries:
                if entry.resource is not None:
                    entry.resource = _rewrite(entry, entry.resource, references)
            results: dict[int, _Result] = {}
            # Plain creates are gathered and written together (storage/batch.py), before any
            # other entry touches the database, so each entry still sees every earlier one.
            creates = CreateBatch(repo)
            waiting: list[_Entry] = []
            for entry in sorted(entries, key=lambda e: (_PHASE[e.method], e.index)):
                try:
                    if _plain_create(entry):
                        assert entry.resource_type is not None and entry.target_id is not None
                        assert entry.resource is not None
                        creates.add(entry.resource_type, entry.target_id, entry.resource)
                        waiting.append(entry)
                        continue
                    if not (entry.method == "POST" and entry.matched):
                        await _write_creates(context, creates, waiting, results)
                    results[entry.index] = await _execute(context, repo, entry)
                except FhirError as error:
                    raise _EntryError(entry, error) from None
            await _write_creates(context, creates, waiting, results)
            return results
    except psycopg.errors.DeadlockDetected:
        raise Conflict("the transaction collided with another one; retry it") from None


def _plain_create(entry: _Entry) -> bool:
    """A POST the plan gave a new id, whose resource holds no conditional reference."""
    return (
        entry.method == "POST"
        and entry.target_id is not None
        and not entry.matched
        and entry.conditional is False
    )


async def _write_creates(
    context: _Context, creates: CreateBatch, waiting: list[_Entry], results: dict[int, _Result]
) -> None:
    """Write the gathered creates and give each of their entries its result."""
    if not waiting:
        return
    for entry, stored in zip(waiting, await creates.write(), strict=True):
        results[entry.index] = _written(context, stored, True)
    waiting.clear()


async def _lock_conditions(context: _Context, repo: Repository, entries: list[_Entry]) -> None:
    """Take every conditional entry's criteria lock up front, in one sorted order."""
    keys = set()
    for entry in entries:
        if entry.id is not None and entry.method in {"PUT", "DELETE", "PATCH"}:
            assert entry.resource_type is not None
            keys.add(f"{entry.resource_type}/{entry.id}")
        text = entry.if_none_exist if entry.method == "POST" else entry.query
        if text and entry.method in {"POST", "PUT", "DELETE", "PATCH"}:
            assert entry.resource_type is not None
            try:
                criteria = _condition(context, entry)
            except FhirError as error:
                raise _EntryError(entry, error) from None
            keys.add(normalize_criteria(entry.resource_type, criteria.query))
    if keys:
        # One statement, the locks taken in the array's (sorted) order.
        await repo.conn.execute(_LOCKS, (sorted(keys),))


async def _plan(context: _Context, repo: Repository, entries: list[_Entry]) -> dict[str, str]:
    """Give each created resource its id; the map of fullUrl to ``Type/id`` for rewriting."""
    references: dict[str, str] = {}
    for entry in entries:
        try:
            await _plan_entry(context, repo, entry)
        except FhirError as error:
            raise _EntryError(entry, error) from None
        if entry.full_url and entry.resource_type:
            target = entry.target_id or entry.id
            if target is not None and entry.method in {"POST", "PUT", "PATCH"}:
                new = f"{entry.resource_type}/{target}"
                references[entry.full_url] = new
                if entry.full_url.startswith(context.base + "/"):
                    # References relative to this server name the entry as Type/id too.
                    references[entry.full_url[len(context.base) + 1 :]] = new
    return references


def _refuse_overlaps(entries: list[_Entry]) -> None:
    """http://hl7.org/fhir/R4/http.html#trules: no two entries may write the same resource."""
    seen: dict[tuple[str, str], _Entry] = {}
    for entry in entries:
        if entry.method == "GET" or entry.method == "HEAD" or entry.matched:
            continue
        target = entry.id or entry.target_id
        if target is None or entry.resource_type is None:
            continue
        key = (entry.resource_type, target)
        if key in seen:
            raise _EntryError(
                entry,
                InvalidRequest(
                    f"{seen[key].where} and this entry both write {entry.resource_type}/{target}"
                ),
            )
        seen[key] = entry


async def _plan_entry(context: _Context, repo: Repository, entry: _Entry) -> None:
    assert entry.resource_type is not None
    if entry.method == "POST":
        if entry.if_none_exist:
            criteria = _condition(context, entry)
            found = await repo.find(criteria)
            if len(found) > 1:
                raise MultipleMatches("the ifNoneExist criteria match more than one resource")
            if found:
                entry.target_id, entry.matched = found[0], True
                return
        entry.target_id = str(uuid.uuid4())
    elif entry.method in {"PUT", "PATCH"} and entry.id is None:
        assert entry.query is not None
        criteria = _condition(context, entry)
        found = await repo.find(criteria)
        if len(found) > 1:
            raise MultipleMatches("the criteria match more than one resource")
        if found:
            body_id = (entry.resource or {}).get("id")
            if entry.method == "PUT" and body_id is not None and body_id != found[0]:
                raise InvalidRequest("the resource id does not match the resource found")
            entry.target_id = found[0]
        elif entry.method == "PATCH":
            raise NotFound("the conditional patch criteria match no resource")
        else:
            body_id = (entry.resource or {}).get("id")
            entry.target_id = body_id if isinstance(body_id, str) else str(uuid.uuid4())


def _rewrite(entry: _Entry, resource: dict[str, Any], references: dict[str, str]) -> dict[str, Any]:
    """The resource with references to other entries resolved, in place.

    Every ``reference`` naming an entry's fullUrl, every other element whose whole value is an
    entry's ``urn:``, and the entries' ``urn:``s in the narrative become ``Type/id``. It notes on
    the entry whether a conditional reference (``Type?criteria``) is left to resolve.
    """
    conditional = False

    def visit_dict(value: dict[str, Any], depth: int) -> None:
        nonlocal conditional
        if depth > _DEPTH_MAX:
            raise RecursionError
        for key, item in value.items():
            kind = type(item)
            if kind is str:
                if key == "reference":
                    found = references.get(item)
                    if found is not None:
                        value[key] = found
                    elif item.startswith("urn:uuid:") or item.startswith("urn:oid:"):
                        raise _EntryError(
                            entry,
                            InvalidRequest(f"the reference {item} is not the fullUrl of any entry"),
                        )
                    elif not conditional and _is_conditional(item):
                        conditional = True
                elif key == "div":
                    if "urn:" in item:
                        for urn, target in references.items():
                            if urn.startswith("urn:"):  # links in the narrative name entries too
                                item = item.replace(urn, target)
                        value[key] = item
                elif item.startswith("urn:") and item in references:
                    value[key] = references[item]  # a uri element naming an entry
            elif kind is dict:
                visit_dict(item, depth + 1)
            elif kind is list:
                visit_list(item, depth + 1)

    def visit_list(value: list[Any], depth: int) -> None:
        for item in value:
            kind = type(item)
            if kind is dict:
                visit_dict(item, depth + 1)
            elif kind is list:
                visit_list(item, depth + 1)

    try:
        visit_dict(resource, 1)
    except RecursionError:
        raise _EntryError(entry, InvalidRequest("the resource is nested too deeply")) from None
    entry.conditional = conditional
    return resource


async def _resolve_conditional_references(
    context: _Context, repo: Repository, entry: _Entry, cache: dict[str, str]
) -> None:
    """Rewrite ``Type?criteria`` references to the single resource they match."""
    if entry.resource is None or entry.conditional is False:
        return
    pending: list[str] = []

    def collect(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "reference" and isinstance(item, str) and _is_conditional(item):
                    pending.append(item)
                else:
                    collect(item)
        elif isinstance(value, list):
            for v in value:
                collect(v)

    try:
        collect(entry.resource)
    except RecursionError:
        raise InvalidRequest("the resource is nested too deeply") from None
    for reference in pending:
        if reference in cache:
            continue
        resource_type, _, text = reference.partition("?")
        if resource_type not in context.resource_types:
            raise InvalidRequest(f"the conditional reference {reference!r} names no known type")
        found = await repo.find(_criteria(context, resource_type, text))
        if len(found) > 1:
            raise MultipleMatches(f"the conditional reference {reference!r} matches several")
        if not found:
            raise PreconditionFailed(f"the conditional reference {reference!r} matches nothing")
        cache[reference] = f"{resource_type}/{found[0]}"
    if pending:
        entry.resource = _replace_references(entry.resource, cache.__getitem__, _is_conditional)


def _is_conditional(reference: str) -> bool:
    head, sep, _ = reference.partition("?")
    return bool(sep) and "/" not in head and ":" not in head


def _replace_references(
    resource: dict[str, Any], resolve: Callable[[str], str], applies: Callable[[str], bool]
) -> dict[str, Any]:
    def visit(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: resolve(v)
                if k == "reference" and isinstance(v, str) and applies(v)
                else visit(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [visit(v) for v in value]
        return value

    return visit(resource)


# -- entries ---------------------------------------------------------------------------------


async def _execute(context: _Context, repo: Repository, entry: _Entry) -> _Result:
    """Run one entry on ``repo``, inside whatever transaction the caller holds."""
    assert entry.resource_type is not None
    resource_type = entry.resource_type
    if entry.method in {"POST", "PUT", "PATCH"}:
        await _resolve_conditional_references(context, repo, entry, {})
    if entry.method == "DELETE":
        if entry.id is not None:
            await repo.delete(resource_type, entry.id, if_match=entry.if_match)
        else:
            assert entry.query is not None
            criteria = _condition(context, entry)
            await repo.conditional_delete(criteria, if_match=entry.if_match)
        return _Result(204)
    if entry.method == "POST":
        assert entry.resource is not None
        if entry.target_id is None:  # a batch entry: nothing was planned
            condition = _condition(context, entry) if entry.if_none_exist else None
            outcome = await repo.create(
                resource_type, dict(entry.resource), if_none_exist=condition
            )
            return _written(context, outcome.resource, outcome.created)
        if entry.matched:
            return _written(context, await repo.read(resource_type, entry.target_id), False)
        outcome = await repo.create(resource_type, dict(entry.resource), id=entry.target_id)
        return _written(context, outcome.resource, True)
    if entry.method == "PUT":
        assert entry.resource is not None
        if entry.id is not None:
            outcome = await repo.update(
                resource_type, entry.id, entry.resource, if_match=entry.if_match
            )
        elif entry.target_id is not None:
            body = {**entry.resource, "id": entry.target_id}
            outcome = await repo.update(
                resource_type, entry.target_id, body, if_match=entry.if_match
            )
        else:
            assert entry.query is not None
            criteria = _condition(context, entry)
            outcome = await repo.conditional_update(
                criteria, entry.resource, if_match=entry.if_match
            )
        return _written(context, outcome.resource, outcome.created)
    if entry.method == "PATCH":
        target = entry.id or entry.target_id
        if target is None:  # a conditional patch in a batch: nothing was planned
            assert entry.query is not None
            found = await repo.find(_condition(context, entry))
            if len(found) != 1:
                raise (MultipleMatches if found else NotFound)(
                    "the conditional patch criteria must match exactly one resource"
                )
            target = found[0]
        outcome = await rest.patch_resource(
            repo, resource_type, target, _patch_change(entry), entry.if_match
        )
        return _written(context, outcome.resource, False)
    return await _read_entry(context, repo, entry)


def _patch_change(entry: _Entry) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A PATCH entry's change: FHIRPath Patch Parameters, or JSON Patch in a Binary."""
    resource = entry.resource or {}
    if resource.get("resourceType") == "Parameters":
        return lambda current: apply_fhirpath_patch(current, resource)
    content_type, data = resource.get("contentType"), resource.get("data")
    if (
        resource.get("resourceType") == "Binary"
        and isinstance(content_type, str)
        and content_type.startswith("application/json-patch+json")
        and isinstance(data, str)
    ):
        try:
            document = orjson.loads(base64.b64decode(data, validate=True))
        except (ValueError, orjson.JSONDecodeError):
            raise InvalidRequest("the Binary does not hold a JSON Patch document") from None
        return lambda current: apply_json_patch(current, document)
    raise InvalidRequest(
        "a PATCH entry holds a FHIRPath Patch Parameters resource or a JSON Patch Binary"
    )


def _written(context: _Context, stored: StoredResource, created: bool) -> _Result:
    location = f"{stored.resource_type}/{stored.id}/_history/{stored.version_id}"
    return _Result(201 if created else 200, stored=stored, body=stored.body, location=location)


async def _read_entry(context: _Context, repo: Repository, entry: _Entry) -> _Result:
    """GET and HEAD entries: read, vread and search."""
    assert entry.resource_type is not None
    if entry.id is None:
        items = parse_qsl(entry.query or "", keep_blank_values=True)
        state = rest._state(context.request)
        search = parse_search(
            entry.resource_type,
            items,
            state.registry,
            lenient=rest._prefer(context.request, "handling") == "lenient",
            default_count=state.settings.default_count,
            max_count=state.settings.max_count,
            base_url=context.base,
            terminology=state.conformance.terminology,
        )
        page = await repo.search(search)
        self_url = f"{context.base}/{entry.resource_type}" + (
            f"?{entry.query}" if entry.query else ""
        )
        body = rest.searchset(context.base, self_url, search, page)
        return _Result(200, body=None if entry.method == "HEAD" else body)
    if entry.version is not None:
        if not _VERSION.fullmatch(entry.version):
            raise NotFound(f"{entry.resource_type}/{entry.id} has no version {entry.version!r}")
        stored = await repo.vread(entry.resource_type, entry.id, int(entry.version))
    else:
        stored = await repo.read(entry.resource_type, entry.id)
    if entry.if_none_match is not None:
        tags = {t.strip() for t in entry.if_none_match.split(",")}
        if "*" in tags or stored.etag in tags or f'"{stored.version_id}"' in tags:
            return _Result(304, stored=stored)
    if entry.if_modified_since is not None:
        since = _instant(entry.if_modified_since)
        if since is not None and stored.last_updated.replace(microsecond=0) <= since:
            return _Result(304, stored=stored)
    return _Result(200, stored=stored, body=None if entry.method == "HEAD" else stored.body)


def _instant(text: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest("ifModifiedSince must be an instant") from None
    return value if value.tzinfo is not None else None


# -- batch -----------------------------------------------------------------------------------


async def _batch(context: _Context, entries: list[_Entry | FhirError]) -> dict[int, _Result]:
    """Each entry on its own: a failure is that entry's answer, not the bundle's."""
    state = rest._state(context.request)
    results: dict[int, _Result] = {}
    async with rest._connection(state) as conn:
        repo = Repository(conn, state.indexer, state.conformance, state.refresh_conformance)
        for index, entry in enumerate(entries):
            if isinstance(entry, FhirError):
                results[index] = _failed(entry)
                continue
            try:
                if entry.resource is not None:
                    # Entries of a batch cannot refer to each other (http.html#brules).
                    entry.resource = _rewrite(entry, entry.resource, {})
                async with conn.transaction():
                    results[index] = await _execute(context, repo, entry)
            except FhirError as error:
                results[index] = _failed(error)
            except psycopg.errors.DeadlockDetected:
                results[index] = _failed(Conflict("the entry collided with another write; retry"))
    return results


def _failed(error: FhirError) -> _Result:
    return _Result(error.status, outcome=operation_outcome(error.issues))


# -- the response ----------------------------------------------------------------------------


def _response_bundle(
    context: _Context,
    kind: str,
    entries: list[_Entry | FhirError],
    results: dict[int, _Result],
) -> bytes:
    head = orjson.dumps(
        {
            "resourceType": "Bundle",
            "id": str(uuid.uuid4()),
            "meta": {"lastUpdated": format_instant(datetime.now(UTC))},
            "type": kind,
        }
    )
    prefer = context.prefer_return
    parts = []
    for index, entry in enumerate(entries):
        result = results[index]
        response: dict[str, Any] = {"status": _STATUS_TEXT.get(result.status, str(result.status))}
        stored = result.stored
        if result.location is not None:
            response["location"] = result.location
        if stored is not None:
            response["etag"] = stored.etag
            response["lastModified"] = format_instant(stored.last_updated)
        if result.outcome is not None:
            response["outcome"] = result.outcome
        elif prefer == "OperationOutcome" and stored is not None and isinstance(entry, _Entry):
            response["outcome"] = operation_outcome(
                (
                    Issue(
                        "information",
                        "informational",
                        f"{stored.resource_type}/{stored.id}: {result.status}",
                    ),
                )
            )
        piece = b"{"
        if stored is not None:
            full_url = f"{context.base}/{stored.resource_type}/{stored.id}"
            piece += b'"fullUrl":' + orjson.dumps(full_url) + b","
        if result.body is not None and not (_is_write(entry) and prefer in _NO_BODY):
            piece += b'"resource":' + result.body + b","
        piece += b'"response":' + orjson.dumps(response) + b"}"
        parts.append(piece)
    if not parts:
        return head
    return head[:-1] + b',"entry":[' + b",".join(parts) + b"]}"


_NO_BODY = {"minimal", "OperationOutcome"}


def _is_write(entry: _Entry | FhirError) -> bool:
    return isinstance(entry, _Entry) and entry.method in {"POST", "PUT", "PATCH"}


routes = [Route("/", transaction_or_batch, methods=["POST"])]
