"""Custom search parameters: SearchParameter resources posted to the server.

http://hl7.org/fhir/R4/searchparameter.html. A definition gives one :class:`SearchParam` per
``base`` type, with the part of the expression that applies to that type, and is usable only
when this server can index it: a type it searches (``special`` parameters need code of their
own), an expression that compiles, composite components it knows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from fhir_server.search.extract import IndexExtractor, composite_indexable
from fhir_server.search.registry import (
    Component,
    SearchParam,
    SearchRegistry,
    expression_root,
    split_union,
)
from profiles.fhirpath_syntax import FhirPathSyntaxError
from profiles.fhirpath_syntax import check_syntax as check_fhirpath

__all__ = ["InvalidDefinition", "check_syntax", "params_from_definition"]

_TYPES = frozenset(
    {"number", "date", "string", "token", "reference", "composite", "quantity", "uri"}
)
_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-_]{0,63}")
_ABSTRACT = ("Resource", "DomainResource")


class InvalidDefinition(ValueError):
    """A SearchParameter this server cannot index; the message says why."""

    @property
    def message(self) -> str:
        return str(self)


def params_from_definition(
    definition: Mapping[str, Any], registry: SearchRegistry
) -> tuple[SearchParam, ...]:
    """The parameters a SearchParameter resource defines, one per base type.

    ``registry`` knows the resource types and resolves composite components. Raises
    :class:`InvalidDefinition` when the definition cannot be indexed.
    """
    code = definition.get("code")
    if not isinstance(code, str) or not _CODE.fullmatch(code):
        raise InvalidDefinition(
            "SearchParameter.code must be letters, digits, '-' or '_', not starting with '_'"
        )
    kind = definition.get("type")
    if not isinstance(kind, str) or kind not in _TYPES:
        raise InvalidDefinition(
            f"SearchParameter.type {kind!r} cannot be indexed; this server indexes"
            f" {', '.join(sorted(_TYPES))}"
        )
    expression = definition.get("expression")
    if not isinstance(expression, str) or not expression.strip():
        raise InvalidDefinition("SearchParameter.expression is required to index a parameter")
    bases = definition.get("base")
    if not isinstance(bases, list) or not bases:
        raise InvalidDefinition("SearchParameter.base names no resource type")
    known = registry.all_resource_types()
    params = []
    for base in bases:
        if not isinstance(base, str) or base not in known or base in _ABSTRACT:
            raise InvalidDefinition(f"SearchParameter.base {base!r} is not a resource type")
        existing = registry.get(base, code)
        if existing is not None and existing.url != definition.get("url", ""):
            raise InvalidDefinition(
                f"{base} already has a search parameter {code!r} ({existing.url or 'another'}):"
                " a custom one needs a code of its own"
            )
        param = SearchParam(
            code=code,
            resource_type=base,
            type=kind,
            expression=_part_for(expression, base),
            url=url if isinstance(url := definition.get("url"), str) else "",
            targets=_strings(definition.get("target")),
            modifiers=_strings(definition.get("modifier")),
            comparators=_strings(definition.get("comparator")),
            components=_components(definition.get("component"), kind),
        )
        params.append(param)
    for param in params:
        _check_compiles(param, registry.with_params(params))
    return tuple(params)


def _part_for(expression: str, base: str) -> str:
    """The union parts of ``expression`` rooted at ``base`` (or at Resource/DomainResource)."""
    parts = [p for p in split_union(expression) if expression_root(p) in {base, *_ABSTRACT}]
    if not parts:
        raise InvalidDefinition(
            f"SearchParameter.expression has no part that starts at {base} ({base}.element...)"
        )
    return " | ".join(parts)


def _strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidDefinition("SearchParameter target, modifier and comparator are code lists")
    return tuple(value)


def _components(value: Any, kind: str) -> tuple[Component, ...]:
    if kind != "composite":
        return ()
    if not isinstance(value, list) or len(value) < 2:
        raise InvalidDefinition("a composite SearchParameter needs two components or more")
    components = []
    for item in value:
        definition = item.get("definition") if isinstance(item, dict) else None
        expression = item.get("expression") if isinstance(item, dict) else None
        if not isinstance(definition, str) or not isinstance(expression, str):
            raise InvalidDefinition("each component needs a definition and an expression")
        components.append(Component(definition=definition, expression=expression))
    return tuple(components)


def check_syntax(expression: str) -> None:
    """Raise InvalidDefinition unless ``expression`` is FHIRPath, every character of it."""
    try:
        check_fhirpath(expression)
    except FhirPathSyntaxError as exc:
        raise InvalidDefinition(f"SearchParameter.expression is {exc}") from None


def _check_compiles(param: SearchParam, registry: SearchRegistry) -> None:
    for part in split_union(param.expression or ""):
        check_syntax(part)
    if param.type == "composite":
        components = registry.components(param)
        if components is None or not composite_indexable(param, components):
            raise InvalidDefinition(
                "a component's definition is not the canonical URL of a token, reference,"
                " string, date, number, quantity or uri parameter this server knows, with an"
                " expression relative to the composite's element"
            )
        extractor = IndexExtractor([param], registry=registry)
    else:
        try:
            extractor = IndexExtractor([param])
        except ValueError:
            raise InvalidDefinition(
                f"SearchParameter.expression is not FHIRPath this server can evaluate:"
                f" {param.expression}"
            ) from None
    try:
        extractor.extract({"resourceType": param.resource_type})
    except Exception as exc:  # a compiled expression that still cannot run
        raise InvalidDefinition(
            f"SearchParameter.expression cannot be evaluated on a {param.resource_type}"
        ) from exc
