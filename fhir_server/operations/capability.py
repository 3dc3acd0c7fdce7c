"""The CapabilityStatement, generated from what the server really implements.

http://hl7.org/fhir/R4/capabilitystatement.html
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Any

from fhir_server.search.extract import composite_indexable
from fhir_server.search.parse import SUPPORTED_PARAM_TYPES
from fhir_server.search.registry import SearchParam, SearchRegistry

__all__ = ["build_capability_statement"]

_INTERACTIONS = [
    "read",
    "vread",
    "update",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
]


# Parameters of every resource type that no expression defines (search.html#text, #list).
_EVERY_TYPE = [
    {
        "name": "_text",
        "definition": "http://hl7.org/fhir/SearchParameter/DomainResource-text",
        "type": "string",
    },
    {
        "name": "_content",
        "definition": "http://hl7.org/fhir/SearchParameter/Resource-content",
        "type": "string",
    },
    {
        "name": "_list",
        "definition": "http://hl7.org/fhir/SearchParameter/Resource-list",
        "type": "token",
    },
]


def _searchable(registry: SearchRegistry, param: SearchParam) -> bool:
    """Whether a search on ``param`` is answered: what the CapabilityStatement may list."""
    if not param.expression or param.pending is not None:
        return False
    if param.type in SUPPORTED_PARAM_TYPES:
        return True
    if param.type == "composite":
        components = registry.components(param)
        return components is not None and composite_indexable(param, components)
    return param.type == "special" and param.code == "near"


# What a search parameter does here beyond its definition (searchParam.documentation).
_DOCUMENTATION = {
    ("HealthcareService", "active"): (
        "Without an active parameter (any modifier) or _id, a HealthcareService search returns"
        " only services that are not inactive: active true, or active absent (counted as"
        " active). Ask active=false, or active:missing, to see the others. Conditional"
        " interactions and _include/_revinclude are not filtered."
    ),
    ("Location", "near"): (
        "latitude|longitude|distance|units (km, m, mi or [mi_i]; 50 km when no distance is"
        " given), great-circle. Without _sort, results are ordered nearest first, and so are"
        " searches that reach near through a chain (HealthcareService?location.near=...), by"
        " their nearest Location; _sort=near / -near name that distance. Each match carries"
        " the location-distance extension on Bundle.entry.search, in the unit asked."
    ),
}


def _search_param(param: SearchParam) -> dict[str, str]:
    entry = {"name": param.code, "definition": param.url, "type": param.type}
    documentation = _DOCUMENTATION.get((param.resource_type, param.code))
    if documentation is not None:
        entry["documentation"] = documentation
    return entry


def _operation(name: str, definition: str) -> dict[str, str]:
    return {"name": name, "definition": f"http://hl7.org/fhir/OperationDefinition/{definition}"}


# Operations of one resource type, besides $validate (every type).
_OPERATIONS = {
    "Patient": [_operation("everything", "Patient-everything")],
    "CodeSystem": [
        _operation("lookup", "CodeSystem-lookup"),
        _operation("validate-code", "CodeSystem-validate-code"),
        _operation("subsumes", "CodeSystem-subsumes"),
    ],
    "ValueSet": [
        _operation("expand", "ValueSet-expand"),
        _operation("validate-code", "ValueSet-validate-code"),
    ],
    "ConceptMap": [_operation("translate", "ConceptMap-translate")],
}
_VALIDATE = _operation("validate", "Resource-validate")
# Operations at the server root: the state feeds pushed over HTTP (this server's own).
_SYSTEM_OPERATIONS = [
    {
        "name": "load-hsds",
        "definition": "https://sdoh-fhir.org/OperationDefinition/load-hsds",
        "documentation": "A 211 resource directory in Open Referral HSDS (a JSON document, or"
        " a zip of a feed): Organizations, Locations and HealthcareServices upserted by the"
        " feed's ids; `feed` names the source, `mode=full` makes inactive what it no longer"
        " lists.",
    },
    {
        "name": "load-iees",
        "definition": "https://sdoh-fhir.org/OperationDefinition/load-iees",
        "documentation": "The state eligibility feed: HL7 v2.5.1 ADT A28/A31/A40"
        " (x-application/hl7-v2+er7, answered with the ACKs) or an NDJSON snapshot.",
    },
]


def build_capability_statement(
    registry: SearchRegistry,
    resource_types: Iterable[str],
    *,
    base_url: str | None,
    version: str,
    profiles: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """``profiles``: the canonical URLs of the profiles the server validates, by resource type
    (``supportedProfile``)."""
    served = sorted(resource_types)
    reverse: dict[str, list[str]] = {t: [] for t in served}
    for source in served:
        for code, p in sorted(registry.for_type(source).items()):
            if p.type == "reference" and p.expression and p.pending is None:
                for target in p.targets:
                    if target in reverse:
                        reverse[target].append(f"{source}:{code}")
    resources = []
    for resource_type in served:
        params = [
            _search_param(p)
            for code, p in sorted(registry.for_type(resource_type).items())
            if _searchable(registry, p) and code not in {"_id", "_lastUpdated"}
        ]
        params += _EVERY_TYPE
        params[:0] = [
            {
                "name": "_id",
                "definition": "http://hl7.org/fhir/SearchParameter/Resource-id",
                "type": "token",
            },
            {
                "name": "_lastUpdated",
                "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated",
                "type": "date",
            },
        ]
        resources.append(
            {
                "type": resource_type,
                "interaction": [{"code": code} for code in _INTERACTIONS],
                "versioning": "versioned-update",
                "readHistory": True,
                "updateCreate": True,
                "conditionalCreate": True,
                "conditionalRead": "full-support",
                "conditionalUpdate": True,
                "conditionalDelete": "single",
                "searchInclude": [
                    "*",
                    *(
                        f"{resource_type}:{code}"
                        for code, p in sorted(registry.for_type(resource_type).items())
                        if p.type == "reference" and p.expression and p.pending is None
                    ),
                ],
                "searchRevInclude": reverse[resource_type],
                "searchParam": params,
                "operation": [*_OPERATIONS.get(resource_type, ()), _VALIDATE],
            }
        )
        supported = sorted((profiles or {}).get(resource_type, ()))
        if supported:
            resources[-1]["supportedProfile"] = supported
    statement: dict[str, Any] = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date.today().isoformat(),
        "publisher": "sdoh-fhir",
        "kind": "instance",
        "software": {"name": "sdoh-fhir", "version": version},
        "implementation": {"description": "sdoh-fhir FHIR R4 server"},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "application/fhir+xml"],
        "rest": [
            {
                "mode": "server",
                "resource": resources,
                "interaction": [
                    {"code": "transaction"},
                    {"code": "batch"},
                    {"code": "history-system"},
                ],
                "operation": _SYSTEM_OPERATIONS,
            }
        ],
    }
    if base_url:
        statement["implementation"]["url"] = base_url
    return statement
