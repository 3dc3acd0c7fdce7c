"""The terminology operations, over the bundled code systems, value sets and concept maps and those
posted to the server (http://hl7.org/fhir/R4/terminology-service.html).

- ``CodeSystem/$lookup``, ``CodeSystem/$validate-code``, ``CodeSystem/$subsumes``
- ``ValueSet/$expand`` (``filter``, ``offset``, ``count``), ``ValueSet/$validate-code``
- ``ConceptMap/$translate`` (``dependency``, ``reverse``)

Each at type level (the definition named by ``url``/``system``, or given inline in a POST) and at
instance level (``CodeSystem/{id}/$lookup``: a stored resource, or a bundled one by its id).
Parameters come from the query string or a ``Parameters`` body. An unknown code system, value set
or concept map is a 404; a value set too large to expand without paging is a 422 ``too-costly``
that says to page.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fhir_server.api import rest
from fhir_server.api.formats import render_resource
from fhir_server.api.parameters import OperationParameters
from fhir_server.core.errors import Gone, InvalidRequest, NotFound, TooCostly
from terminology import (
    Coding,
    Dependency,
    ExpansionTooLarge,
    Terminology,
    TerminologyError,
    UnknownCode,
    UnknownCodeSystem,
    UnknownConceptMap,
    UnknownValueSet,
)
from terminology.service import load_bundled_resources

__all__ = ["routes"]

# Largest expansion answered without paging (count): larger ones say to page.
MAX_EXPANSION = 10_000
# The url given to a definition passed inline without one (never shown to the client).
_INLINE = "urn:uuid:inline-"


# -- CodeSystem ----------------------------------------------------------------------------------


async def lookup(request: Request) -> Response:
    parameters, terminology, url = await _context(request, "CodeSystem", "codeSystem")
    system, code, version = _coded(parameters, "system", url)
    found = _run(lambda: terminology.lookup(system, code, version))
    if found is None:
        raise NotFound(f"the code {code!r} is not in the code system {system}")
    output: list[dict[str, Any]] = [{"name": "name", "valueString": found.name or system}]
    if found.version:
        output.append({"name": "version", "valueString": found.version})
    output.append({"name": "display", "valueString": found.display or code})
    for designation in found.designations:
        parts: list[dict[str, Any]] = []
        if designation.language:
            parts.append({"name": "language", "valueCode": designation.language})
        if designation.use:
            parts.append({"name": "use", "valueCoding": _coding(designation.use)})
        parts.append({"name": "value", "valueString": designation.value})
        output.append({"name": "designation", "part": parts})
    properties = [
        (p.code, {f"value{p.type[0].upper()}{p.type[1:]}": _value(p.value)})
        for p in found.properties
        if p.code not in ("parent", "child")
    ]
    properties += [("parent", {"valueCode": c}) for c in found.parents]
    properties += [("child", {"valueCode": c}) for c in found.children]
    for name, value in properties:
        output.append(
            {
                "name": "property",
                "part": [{"name": "code", "valueCode": name}, {"name": "value", **value}],
            }
        )
    return _parameters(request, output)


async def validate_code_system(request: Request) -> Response:
    parameters, terminology, url = await _context(request, "CodeSystem", "codeSystem")
    system, code, version = _coded(parameters, "url", url)
    system, bar, embedded = system.partition("|")
    version = version or (embedded if bar else None)
    display = parameters.string("display")
    result = _run(
        lambda: terminology.validate_code(
            url=system, system=system, code=code, display=display, version=version
        )
    )
    return _validation(request, result)


async def subsumes(request: Request) -> Response:
    parameters, terminology, url = await _context(request, "CodeSystem", "codeSystem")
    coding_a, coding_b = parameters.complex("codingA"), parameters.complex("codingB")
    system = url or parameters.string("system")
    code_a = parameters.string("codeA") or _code_of(coding_a, "codingA")
    code_b = parameters.string("codeB") or _code_of(coding_b, "codingB")
    for coding in (coding_a, coding_b):
        if coding is not None and isinstance(coding.get("system"), str):
            if system is not None and coding["system"] != system:
                raise InvalidRequest("codingA and codingB must be of the code system asked about")
            system = coding["system"]
    if not system or not code_a or not code_b:
        raise InvalidRequest("$subsumes needs a system and two codes (codeA/codeB or codings)")
    version = parameters.string("version")
    outcome = _run(lambda: terminology.subsumes(system, code_a, code_b, version))
    return _parameters(request, [{"name": "outcome", "valueCode": outcome}])


# -- ValueSet ------------------------------------------------------------------------------------


async def expand(request: Request) -> Response:
    parameters, terminology, url = await _context(request, "ValueSet", "valueSet")
    url = url or parameters.string("url")
    if not url:
        raise InvalidRequest("$expand needs the value set: url, an instance, or valueSet")
    version = parameters.string("valueSetVersion")
    text = parameters.string("filter")
    offset = parameters.integer("offset") or 0
    count = parameters.integer("count")
    expansion = _run(
        lambda: terminology.expand(
            url,
            version=version,
            filter=text,
            offset=offset,
            count=count,
            limit=MAX_EXPANSION,
            # Filters over a code system held in part (ICD-10-CM Z55-Z65) list the codes held.
            held_only=True,
        )
    )
    definition = terminology.value_set(url, version) or {}
    used: list[dict[str, Any]] = [{"name": "offset", "valueInteger": offset}]
    if count is not None:
        used.append({"name": "count", "valueInteger": count})
    if text:
        used.append({"name": "filter", "valueString": text})
    contains = []
    for concept in expansion.contains:
        entry: dict[str, Any] = {"system": concept.system}
        if concept.version:
            entry["version"] = concept.version
        entry["code"] = concept.code
        if concept.display:
            entry["display"] = concept.display
        contains.append(entry)
    result: dict[str, Any] = {"resourceType": "ValueSet"}
    for key in ("id", "url", "version", "name", "title", "status"):
        if key in definition and not (key == "url" and str(definition[key]).startswith(_INLINE)):
            result[key] = definition[key]
    result.setdefault("status", "active")
    result["expansion"] = {
        "identifier": f"urn:uuid:{uuid.uuid4()}",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "total": expansion.total,
        "offset": offset,
        "parameter": used,
        **({"contains": contains} if contains else {}),
    }
    return render_resource(request, result)


async def validate_value_set_code(request: Request) -> Response:
    parameters, terminology, url = await _context(request, "ValueSet", "valueSet")
    url = url or parameters.string("url")
    if not url:
        raise InvalidRequest("$validate-code needs the value set: url, an instance, or valueSet")
    value_set_version = parameters.string("valueSetVersion")
    display = parameters.string("display")
    concept = parameters.complex("codeableConcept")
    codings = concept.get("coding") if concept is not None else None
    if isinstance(codings, list) and len(codings) > 1 and parameters.string("code") is None:
        # A CodeableConcept is valid when any of its codings is (valueset-operation-validate-code).
        results = []
        for coding in codings:
            if not isinstance(coding, dict) or not isinstance(coding.get("code"), str):
                raise InvalidRequest("each coding of codeableConcept needs a code")
            given = coding.get("system")
            system = given if isinstance(given, str) else ""
            check = functools.partial(
                terminology.validate_code,
                value_set=url,
                system=system,
                code=coding["code"],
                value_set_version=value_set_version,
            )
            results.append(_run(check))
        best = next((r for r in results if r.result), results[0])
        return _validation(request, best)
    system, code, version = _coded(parameters, "system", None)
    result = _run(
        lambda: terminology.validate_code(
            value_set=url,
            system=system,
            code=code,
            display=display,
            version=version,
            value_set_version=value_set_version,
        )
    )
    return _validation(request, result)


# -- ConceptMap ----------------------------------------------------------------------------------


async def translate(request: Request) -> Response:
    parameters, terminology, url = await _context(request, "ConceptMap", "conceptMap")
    url = url or parameters.string("url")
    system, code, _ = _coded(parameters, "system", None)
    dependencies = []
    for part in parameters.parts("dependency"):
        element = part.string("element")
        concept = part.complex("concept")
        codings = concept.get("coding") if concept is not None else None
        if not isinstance(codings, list) or not codings:
            raise InvalidRequest("each dependency needs a concept (a CodeableConcept with codings)")
        for coding in codings:
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                dependencies.append(Dependency(element or "", coding["code"], coding.get("system")))
    reverse = parameters.boolean("reverse") or False
    matches = _run(
        lambda: terminology.translate(
            system=system,
            code=code,
            url=url,
            source=parameters.string("source"),
            target=parameters.string("target"),
            target_system=parameters.string("targetsystem"),
            dependencies=dependencies,
            reverse=reverse,
            concept_map_version=parameters.string("conceptMapVersion"),
        )
    )
    found = [m for m in matches if m.equivalence not in ("unmatched", "disjoint")]
    output: list[dict[str, Any]] = [{"name": "result", "valueBoolean": bool(found)}]
    if not found:
        output.append({"name": "message", "valueString": f"no mapping found for {system}|{code}"})
    for match in matches:
        coding = _coding(Coding(match.system, match.code, match.display))
        parts: list[dict[str, Any]] = [{"name": "equivalence", "valueCode": match.equivalence}]
        if coding:
            parts.append({"name": "concept", "valueCoding": coding})
        parts.append({"name": "source", "valueUri": match.concept_map})
        output.append({"name": "match", "part": parts})
    return _parameters(request, output)


# -- shared --------------------------------------------------------------------------------------


async def _context(
    request: Request, resource_type: str, inline: str
) -> tuple[OperationParameters, Terminology, str | None]:
    """The parameters, the terminology to answer from, and the url of the definition named by
    the instance (``/{type}/{id}/$op``) or given inline (a resource parameter), if any."""
    parameters = await OperationParameters.of(request)
    state = rest._state(request)
    terminology = state.conformance.terminology
    url: str | None = None
    if "id" in request.path_params:
        definition = await _instance(request, resource_type, terminology)
        url = definition.get("url") if isinstance(definition.get("url"), str) else None
        if url is None:
            raise InvalidRequest(f"{resource_type}/{request.path_params['id']} has no url")
        if isinstance(definition.get("version"), str):
            url = f"{url}|{definition['version']}"  # this instance, not the newest of its url
        if _definition(terminology, resource_type, url) is None:
            terminology = _run(lambda: terminology.extended([definition]))  # bundled by id
    given = parameters.complex(inline)
    if given is not None:
        if given.get("resourceType") != resource_type:
            raise InvalidRequest(f"the parameter {inline!r} must be a {resource_type}")
        if not isinstance(given.get("url"), str):
            given = {**given, "url": f"{_INLINE}{uuid.uuid4()}"}
        terminology = _run(lambda: terminology.extended([given]))
        url = given["url"]
    elif url is None and state.refresh_conformance is not None:
        named = parameters.string("url")
        if resource_type == "CodeSystem":
            named = named or parameters.string("system")
        if named and _definition(terminology, resource_type, named) is None:
            # Posted a moment ago through another server process, perhaps.
            terminology = (await state.refresh_conformance(None, [named])).terminology
    return parameters, terminology, url


async def _instance(
    request: Request, resource_type: str, terminology: Terminology
) -> Mapping[str, Any]:
    id = request.path_params["id"]
    async with rest._autocommit(request) as repo:
        try:
            stored = await repo.read(resource_type, id)
        except NotFound:
            stored = None
        except Gone:
            raise NotFound(f"{resource_type}/{id} is deleted") from None
    if stored is not None and stored.body is not None:
        body: Mapping[str, Any] = orjson.loads(stored.body)
        return body
    bundled = _bundled_by_id().get((resource_type, id))
    if bundled is None:
        raise NotFound(f"{resource_type}/{id} is not known")
    return bundled


def _definition(terminology: Terminology, resource_type: str, url: str) -> Mapping[str, Any] | None:
    if resource_type == "CodeSystem":
        return terminology.code_system(url)
    if resource_type == "ValueSet":
        return terminology.value_set(url)
    return terminology.concept_map(url)


@functools.cache
def _bundled_by_id() -> dict[tuple[str, str], Mapping[str, Any]]:
    """The bundled definitions by type and id: what ``/CodeSystem/{id}/$lookup`` may name
    besides the stored ones."""
    return {
        (r["resourceType"], r["id"]): r
        for r in load_bundled_resources()
        if isinstance(r.get("id"), str)
    }


def _coded(
    parameters: OperationParameters, system_name: str, system: str | None
) -> tuple[str, str, str | None]:
    """(system, code, version) from ``code`` + ``system``/``url``, or ``coding``, or
    ``codeableConcept`` (its first coding)."""
    code = parameters.string("code")
    system = system or parameters.string(system_name)
    version = parameters.string("version") or parameters.string("systemVersion")
    coding = parameters.complex("coding")
    concept = parameters.complex("codeableConcept")
    if coding is None and concept is not None:
        codings = concept.get("coding")
        coding = codings[0] if isinstance(codings, list) and codings else None
        if coding is None:
            raise InvalidRequest("codeableConcept has no coding")
    if coding is not None:
        if not isinstance(coding, dict) or not isinstance(coding.get("code"), str):
            raise InvalidRequest("the coding needs a code")
        code = code or coding["code"]
        if isinstance(coding.get("system"), str):
            system = system or coding["system"]
        if isinstance(coding.get("version"), str):
            version = version or coding["version"]
    if not code:
        raise InvalidRequest("a code is needed (code, coding or codeableConcept)")
    if not system:
        raise InvalidRequest(f"a code system is needed ({system_name}, or a coding with a system)")
    return system, code, version


def _code_of(coding: dict[str, Any] | None, name: str) -> str | None:
    if coding is None:
        return None
    if not isinstance(coding.get("code"), str):
        raise InvalidRequest(f"{name} needs a code")
    code: str = coding["code"]
    return code


def _run(call: Callable[[], Any]) -> Any:
    """Call the terminology; its errors become the client errors they are."""
    try:
        return call()
    except (UnknownCodeSystem, UnknownValueSet, UnknownConceptMap, UnknownCode) as exc:
        raise NotFound(str(exc)) from None
    except ExpansionTooLarge as exc:
        raise TooCostly(str(exc)) from None
    except TerminologyError as exc:
        raise InvalidRequest(str(exc)) from None


def _validation(request: Request, result: Any) -> Response:
    output: list[dict[str, Any]] = [{"name": "result", "valueBoolean": bool(result.result)}]
    if result.message:
        output.append({"name": "message", "valueString": result.message})
    if result.display:
        output.append({"name": "display", "valueString": result.display})
    return _parameters(request, output)


def _coding(coding: Coding) -> dict[str, Any]:
    return {
        key: value
        for key, value in (
            ("system", coding.system),
            ("code", coding.code),
            ("display", coding.display),
        )
        if value is not None
    }


def _value(value: Any) -> Any:
    return _coding(value) if isinstance(value, Coding) else value


def _parameters(request: Request, parameters: list[dict[str, Any]]) -> Response:
    return render_resource(request, {"resourceType": "Parameters", "parameter": parameters})


def _both(path: str, endpoint: Callable[[Request], Awaitable[Response]]) -> list[Route]:
    return [
        Route(path, endpoint, methods=["GET", "POST"]),
        Route(path.replace("/$", "/{id}/$"), endpoint, methods=["GET", "POST"]),
    ]


routes = [
    *_both("/CodeSystem/$lookup", lookup),
    *_both("/CodeSystem/$validate-code", validate_code_system),
    *_both("/CodeSystem/$subsumes", subsumes),
    *_both("/ValueSet/$expand", expand),
    *_both("/ValueSet/$validate-code", validate_value_set_code),
    *_both("/ConceptMap/$translate", translate),
]
