"""Parse a FHIR search query (repeated keys = AND, commas = OR) into a typed SearchRequest.

http://hl7.org/fhir/R4/search.html. Pure: no SQL here; ``sql.py`` builds predicates from the result.

A key may chain through references (search.html#chaining: ``subject:Patient.name=smith``, to
any depth up to MAX_CHAIN_DEPTH links) and reverse-chain (search.html#has:
``_has:Observation:subject:code=x``, nested too); both parse into a Clause whose ``nested``
clauses apply to the resources at the other end of the reference. Without ``:Type``, a chain
applies to every target type of the reference that has the next parameter; target types whose
clauses are the same are grouped, so ``Task?focus.name=x`` is one predicate, not one per type.
Composite values (search.html#composite, ``code-value-quantity=loinc|8480-6$gt140``) parse into
one typed value per component.

Special parameters: ``near`` (Location.position, location.html#search), ``_text`` and
``_content`` (full text over the narrative and over every string of the resource,
search.html#text) and ``_list`` (members of a List, search.html#list).

A search with a ``near`` clause, on the resource itself or through a chain
(``HealthcareService?location.near=...``), and no ``_sort`` is ordered nearest first: a
resource's distance is that of its nearest position (through the chain: of its nearest
Location). ``_sort=near`` / ``-near`` name that same distance, whichever way the near is reached.

Server defaults (``SearchRequest.defaults``): a HealthcareService search that names no ``active``
parameter and no ``_id`` finds only services that are not inactive (``active`` true or absent):
a directory should not send a resident to a closed service.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol, TypeAlias

from fhir_server.core.errors import InvalidRequest, Issue
from fhir_server.search.extract import composite_indexable
from fhir_server.search.registry import SearchParam, SearchRegistry
from fhir_server.search.values import (
    InvalidValue,
    normalize_string,
    parse_date_range,
    parse_number_range,
)
from terminology import TerminologyError

__all__ = [
    "DISTANCE_UNITS",
    "MAX_CHAIN_DEPTH",
    "Clause",
    "CompositeValue",
    "DateValue",
    "InvalidSearch",
    "MissingValue",
    "NearValue",
    "NumberValue",
    "QuantityValue",
    "ReferenceValue",
    "SUPPORTED_PARAM_TYPES",
    "SearchRequest",
    "SortKey",
    "StringValue",
    "TextValue",
    "TokenValue",
    "UriValue",
    "near_route",
    "parse_count",
    "parse_search",
    "split_escaped",
]

PREFIXES = frozenset({"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"})
SUMMARY_MODES = frozenset({"true", "false", "text", "data", "count"})
TOTAL_MODES = frozenset({"none", "estimate", "accurate"})
# Result parameters this server implements; each is read by parse_search below.
_RESULT_PARAMS = frozenset(
    {"_count", "_sort", "_total", "_summary", "_elements", "_cursor", "_format", "_pretty"}
)
# Result and special parameters that exist in FHIR but are later work here.
_NOT_YET = frozenset(
    {
        "_include",
        "_revinclude",
        "_query",
        "_filter",
        "_type",
    }
)
# Search of contained resources (search.html#contained): refused, whatever the leniency says
# about unknown parameters, since ignoring it would return the containers instead.
_CONTAINED = frozenset({"_contained", "_containedType"})
# Full-text parameters: on every resource type (search.html#text); a resource with no narrative
# never matches _text.
_FULL_TEXT = frozenset({"_text", "_content"})
_MODIFIERS: dict[str, frozenset[str]] = {
    "string": frozenset({"exact", "contains", "missing"}),
    "token": frozenset({"not", "text", "missing", "of-type", "in", "not-in", "above", "below"}),
    "reference": frozenset({"missing", "identifier"}),
    "date": frozenset({"missing"}),
    "number": frozenset({"missing"}),
    "quantity": frozenset({"missing"}),
    "uri": frozenset({"below", "above", "missing"}),
}
# Parameter types the CapabilityStatement lists (special is later work). Composites are searched
# too, but only those whose components index on the fast path (extract.composite_indexable), so
# they are left out of this list rather than listed wholesale.
SUPPORTED_PARAM_TYPES = frozenset(_MODIFIERS)


class CodeSets(Protocol):
    """What search asks of the terminology service (``terminology.service.Terminology``)."""

    def codes_in(self, value_set: str, *, held_only: bool = False) -> Any: ...

    def descendants(self, system: str, code: str) -> frozenset[str]: ...

    def ancestors(self, system: str, code: str) -> frozenset[str]: ...

    def case_sensitive(self, system: str) -> bool: ...


# Token modifiers answered by the terminology service.
_TERMINOLOGY_MODIFIERS = frozenset({"in", "not-in", "above", "below"})
# Links (chained references and _has) in one key; more is refused as too complex.
MAX_CHAIN_DEPTH = 4
# Resource types one key may visit while its chains fan out over untyped references.
_MAX_FAN_OUT = 2000
_DIGITS = re.compile(r"[0-9]{1,9}")
_TYPE_NAME = re.compile(r"^[A-Z][A-Za-z]+$")
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
# Kilometres per unit of a near distance: UCUM codes, and "mi" as clients write it.
_DISTANCE_UNITS = {"km": 1.0, "m": 0.001, "[mi_i]": 1.609344, "mi": 1.609344}
# The UCUM code of each unit a client may write (http://unitsofmeasure.org).
DISTANCE_UNITS = {"km": "km", "m": "m", "[mi_i]": "[mi_i]", "mi": "[mi_i]"}
# How far is "near" when the client does not say (location.html#search leaves it to the server).
NEAR_DEFAULT_KM = 50.0


class InvalidSearch(InvalidRequest):
    """A search the server cannot run as asked (unknown parameter, bad value, bad modifier)."""


class _Unsupported(Exception):
    """A parameter or modifier this server does not know: refused, or ignored when lenient."""


class _TooComplex(InvalidSearch):
    """A chain too deep or too wide: always refused, whatever one type of a fan-out says."""


@dataclass(frozen=True, slots=True)
class StringValue:
    norm: str
    raw: str


@dataclass(frozen=True, slots=True)
class TokenValue:
    """``system`` None matches any system; "" matches no system. ``code`` None matches any code."""

    system: str | None
    code: str | None
    type_system: str | None = None
    type_code: str | None = None
    # For :text, the normalized text to match against displays and CodeableConcept.text.
    text: str | None = None
    # For :in, :not-in, :above and :below, the codes the terminology service gave: any code of
    # ``systems``, or one of the (system, code) ``pairs``, but none of ``excluded``.
    pairs: tuple[tuple[str, str], ...] | None = None
    systems: tuple[str, ...] = ()
    excluded: tuple[tuple[str, str], ...] = ()
    # Systems whose codes compare without regard to case (CodeSystem.caseSensitive false).
    folded: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DateValue:
    prefix: str
    low: datetime
    high: datetime


@dataclass(frozen=True, slots=True)
class NumberValue:
    prefix: str
    value: Decimal
    low: Decimal
    high: Decimal


@dataclass(frozen=True, slots=True)
class QuantityValue:
    prefix: str
    value: Decimal
    low: Decimal
    high: Decimal
    system: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class ReferenceValue:
    type: str | None
    id: str | None
    url: str | None = None
    identifier_system: str | None = None
    identifier_value: str | None = None


@dataclass(frozen=True, slots=True)
class UriValue:
    value: str


@dataclass(frozen=True, slots=True)
class NearValue:
    """A point (WGS84 degrees) and a great-circle distance from it in kilometres.

    ``unit`` is the UCUM code of the unit the client wrote the distance in, so that distances
    given back (the location-distance extension) are in the unit asked.
    """

    latitude: float
    longitude: float
    distance_km: float
    unit: str = field(default="km", compare=False)


@dataclass(frozen=True, slots=True)
class TextValue:
    """Words for a full-text search (``_text``, ``_content``), as the client typed them."""

    text: str


@dataclass(frozen=True, slots=True)
class MissingValue:
    missing: bool


@dataclass(frozen=True, slots=True)
class CompositeValue:
    """One ``a$b`` value of a composite: per component, its parameter type and typed value."""

    parts: tuple[tuple[str, Value], ...]


Value: TypeAlias = (
    StringValue
    | TokenValue
    | DateValue
    | NumberValue
    | QuantityValue
    | ReferenceValue
    | UriValue
    | MissingValue
    | CompositeValue
    | NearValue
    | TextValue
)


@dataclass(frozen=True, slots=True)
class Clause:
    """One query key: its values are ORed; clauses are ANDed.

    ``kind`` is the parameter type, or "id" / "lastUpdated" for the columns of the resource table,
    or one of:

    - "chain": ``param`` is a reference parameter; the resource matches when it refers to a
      resource of one of the types of a ``nested`` entry that matches that entry's clause.
    - "has": ``param`` is a reference parameter of another type (``param.resource_type``); the
      resource matches when a resource of that type refers to it through ``param`` and matches
      the one ``nested`` clause.
    - "composite": ``values`` are CompositeValues (or one MissingValue).
    - "near": ``values`` are NearValues; the resource has a position within one's distance.
    - "text": ``code`` is ``_text`` or ``_content``, ``values`` are TextValues.
    - "list": ``values`` are ReferenceValues of Lists; the resource is an item of one.
    """

    code: str
    kind: str
    param: SearchParam | None
    modifier: str | None
    values: tuple[Value, ...]
    # For "chain" and "has": (resource types, the clause that applies to them).
    nested: tuple[tuple[tuple[str, ...], Clause], ...] = ()


@dataclass(frozen=True, slots=True)
class SortKey:
    """One key of the order. For kind "near", ``point`` is where distances are measured from and
    ``via`` the chain to the positions: (reference parameter, target types) per link, empty for
    the resource's own position (``Location?near``)."""

    code: str
    kind: str
    param: SearchParam | None
    descending: bool
    point: NearValue | None = None
    via: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class SearchRequest:
    resource_type: str
    clauses: tuple[Clause, ...] = ()
    sort: tuple[SortKey, ...] = ()
    count: int = 20
    total: str = "none"
    summary: str | None = None
    elements: tuple[str, ...] = ()
    cursor: str | None = None
    # What a lenient search ignored, one message each.
    ignored: tuple[str, ...] = ()
    # The query as given, less paging, for building self/next links.
    query: tuple[tuple[str, str], ...] = field(default=())
    # (compartment type, id): only members of that compartment match (search.html#compartment).
    compartment: tuple[str, str] | None = None
    # Clauses the server adds because the client did not ask otherwise (active HealthcareServices
    # only). They narrow searches (pages and totals), not conditional interactions: a
    # conditional update that could not see an inactive service would create a duplicate.
    defaults: tuple[Clause, ...] = ()


def split_escaped(text: str, separator: str) -> list[str]:
    r"""Split on ``separator`` where not escaped with ``\``; escapes are kept for the caller."""
    if "\\" not in text:
        return text.split(separator)
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    return re.sub(r"\\([,|$\\])", r"\1", text)


def parse_search(
    resource_type: str,
    items: Iterable[tuple[str, str]],
    registry: SearchRegistry,
    *,
    lenient: bool = False,
    default_count: int = 20,
    max_count: int = 1000,
    base_url: str | None = None,
    compartment: tuple[str, str] | None = None,
    terminology: CodeSets | None = None,
) -> SearchRequest:
    """Parse query items (in order, repeated keys kept) for a search on ``resource_type``.

    ``base_url`` is this server's base: a reference given as an absolute URL under it means
    the same as the relative ``Type/id`` (search.html#reference). ``compartment`` is the
    (type, id) of a compartment search, ``GET /Patient/1/Observation?...`` giving
    ``("Patient", "1")`` (http://hl7.org/fhir/R4/compartmentdefinition.html): only resources
    in that compartment match. ``terminology`` answers the token modifiers :in, :not-in, :above
    and :below (without it they are refused).
    """
    params = registry.for_type(resource_type)
    clauses: list[Clause] = []
    ignored: list[str] = []
    sort: tuple[SortKey, ...] = ()
    count = default_count
    total = "none"
    summary: str | None = None
    elements: tuple[str, ...] = ()
    cursor: str | None = None
    query: list[tuple[str, str]] = []

    keys = _KeyParser(registry, base_url, terminology)

    def refuse(message: str) -> None:
        if not lenient:
            raise InvalidSearch(message, issues=(Issue("error", "not-supported", message),))
        ignored.append(message)

    for key, value in items:
        if "\x00" in key or "\x00" in value:
            raise InvalidSearch("search parameters cannot contain NUL characters")
        if key not in {"_cursor", "_format", "_pretty"}:
            query.append((key, value))
        name = key.partition(":")[0]
        if name in _RESULT_PARAMS:
            if name == "_count":
                count = parse_count(value, max_count)
            elif name == "_sort":
                sort = _parse_sort(value, params)
            elif name == "_total":
                if value not in TOTAL_MODES:
                    raise InvalidSearch(f"_total must be one of {', '.join(sorted(TOTAL_MODES))}")
                total = value
            elif name == "_summary":
                if value not in SUMMARY_MODES:
                    raise InvalidSearch(
                        f"_summary must be one of {', '.join(sorted(SUMMARY_MODES))}"
                    )
                summary = value
            elif name == "_elements":
                elements = tuple(e.strip() for e in value.split(",") if e.strip())
            elif name == "_cursor":
                cursor = value
            continue
        if name in _CONTAINED:
            raise InvalidSearch(
                f"{name} is not supported: this server does not search inside contained"
                " resources (http://hl7.org/fhir/R4/search.html#contained)",
                issues=(Issue("error", "not-supported", f"{name} is not supported"),),
            )
        if name in _NOT_YET:
            refuse(f"the search parameter {name} is not supported yet")
            continue
        try:
            clauses.append(keys.parse(resource_type, key, value))
        except _Unsupported as exc:
            refuse(str(exc))
    sort = _near_sort(sort, clauses)
    return SearchRequest(
        resource_type=resource_type,
        clauses=tuple(clauses),
        sort=sort,
        count=count,
        total=total,
        summary=summary,
        elements=elements,
        cursor=cursor,
        ignored=tuple(ignored),
        query=tuple(query),
        compartment=compartment,
        defaults=_defaults(resource_type, clauses, registry),
    )


def _near_sort(sort: tuple[SortKey, ...], clauses: list[Clause]) -> tuple[SortKey, ...]:
    """The sort with its near keys bound to the near clause; nearest first when unsorted.

    ``_sort=near`` measures from the first value of the first near clause, direct or chained
    (``location.near``); without one it is refused. With no ``_sort`` at all, a search that has
    a near clause is ordered by that distance (location.html#search: "sorted by distance").
    """
    route = next((r for c in clauses if (r := near_route(c)) is not None), None)
    if route is None:
        if any(key.kind == "near" for key in sort):
            raise InvalidSearch("_sort=near needs a near parameter to measure the distance from")
        return sort
    via, near = route
    point = near.values[0]
    assert isinstance(point, NearValue)
    if not sort:
        return (SortKey("near", "near", near.param, False, point, via),)
    return tuple(
        SortKey(key.code, key.kind, near.param, key.descending, point, via)
        if key.kind == "near"
        else key
        for key in sort
    )


def near_route(
    clause: Clause,
) -> tuple[tuple[tuple[str, tuple[str, ...]], ...], Clause] | None:
    """The chain links to a near clause (none for a near on the resource itself), and it."""
    if clause.kind == "near":
        return (), clause
    if clause.kind != "chain":
        return None
    for types, inner in clause.nested:
        route = near_route(inner)
        if route is not None:
            return ((clause.code, types), *route[0]), route[1]
    return None


# Types whose searches hide inactive resources unless the client names ``active`` (or ``_id``).
_ACTIVE_BY_DEFAULT = frozenset({"HealthcareService"})


def _defaults(
    resource_type: str, clauses: list[Clause], registry: SearchRegistry
) -> tuple[Clause, ...]:
    """``active:not=false`` on a HealthcareService search that names neither active nor _id.

    A service without ``active`` counts as active (http://hl7.org/fhir/R4/healthcareservice.html
    gives no default; a 211 record that says nothing is an open service). The CapabilityStatement
    says so on the ``active`` parameter.
    """
    if resource_type not in _ACTIVE_BY_DEFAULT:
        return ()
    if any(c.code in {"active", "_id"} for c in clauses):
        return ()
    param = registry.get(resource_type, "active")
    if param is None or param.type != "token":
        return ()
    return (Clause("active", "token", param, "not", (TokenValue(None, "false"),)),)


def _usable(param: SearchParam | None) -> SearchParam | None:
    """``param``, unless it is a custom parameter not yet indexed: that is a 400, never ignored."""
    if param is not None and param.pending is not None:
        message = (
            f"the search parameter {param.code} of {param.resource_type} cannot be used yet:"
            f" {param.pending}"
        )
        raise InvalidSearch(message, issues=(Issue("error", "not-supported", message),))
    return param


class _KeyParser:
    """Parses one query key (with chains and _has to any allowed depth) and its value."""

    def __init__(
        self, registry: SearchRegistry, base_url: str | None, terminology: CodeSets | None = None
    ) -> None:
        self.registry = registry
        self.base_url = base_url
        self.terminology = terminology
        self.visited = 0

    def parse(self, resource_type: str, key: str, value: str, depth: int = 0) -> Clause:
        """The clause of ``key=value`` on ``resource_type``; _Unsupported or InvalidSearch."""
        if depth == 0:
            self.visited = 0
        if key == "_has" or key.startswith("_has:"):
            return self._has(resource_type, key, value, depth)
        if "." in key:
            return self._chain(resource_type, key, value, depth)
        name, _, modifier = key.partition(":")
        if name in _CONTAINED:
            raise InvalidSearch(f"{name} is not supported (search.html#contained)")
        if name in _RESULT_PARAMS or name in _NOT_YET:
            raise _Unsupported(f"the search parameter {name} cannot be used in a chain")
        if name in _FULL_TEXT:
            if modifier:
                raise _Unsupported(f"the modifier :{modifier} is not supported on {name}")
            return _text_clause(name, value)
        if name == "_list":
            if modifier:
                raise _Unsupported(f"the modifier :{modifier} is not supported on _list")
            return _list_clause(value)
        if name == "_id":
            if modifier:
                raise _Unsupported(f"the modifier :{modifier} is not supported on _id")
            ids = tuple(v for v in split_escaped(value, ",") if v)
            if not ids:
                raise InvalidSearch("_id has no value")
            return Clause(
                "_id", "id", None, None, tuple(TokenValue(None, _unescape(i)) for i in ids)
            )
        if name == "_lastUpdated":
            if modifier:
                raise _Unsupported(f"the modifier :{modifier} is not supported on _lastUpdated")
            values = tuple(_date_value(v, name) for v in split_escaped(value, ",") if v)
            if not values:
                raise InvalidSearch("_lastUpdated has no value")
            return Clause(name, "lastUpdated", None, None, values)
        param = _usable(self.registry.get(resource_type, name))
        if param is None:
            raise _Unsupported(f"unknown search parameter {name!r} for {resource_type}")
        if param.type == "composite":
            return self._composite(param, modifier or None, value)
        if param.type == "special" and param.expression == "Location.position":
            if modifier:
                raise _Unsupported(f"the modifier :{modifier} is not supported on {name}")
            return _near_clause(param, value)
        if param.type not in _MODIFIERS or not param.expression:
            raise _Unsupported(
                f"search parameters of type {param.type} ({name}) are not supported yet"
            )
        if modifier and not _modifier_allowed(param, modifier):
            raise _Unsupported(
                f"the modifier :{modifier} is not supported on {name} ({param.type})"
            )
        if param.type == "token" and modifier in _TERMINOLOGY_MODIFIERS:
            return self._code_set(param, modifier, value)
        return _parse_clause(param, modifier or None, value, self.base_url)

    def _code_set(self, param: SearchParam, modifier: str, text: str) -> Clause:
        """:in / :not-in a value set, :below / :above a code (search.html#modifiers): the codes
        the terminology service gives, each value of a comma list one more alternative."""
        if self.terminology is None:
            raise _Unsupported(f"the modifier :{modifier} needs the terminology service")
        values = []
        for raw in (v for v in split_escaped(text, ",") if v != ""):
            values.append(self._codes(param, modifier, _unescape(raw)))
        if not values:
            raise InvalidSearch(f"the search parameter {param.code} has no value")
        return Clause(param.code, param.type, param, modifier, tuple(values))

    def _codes(self, param: SearchParam, modifier: str, text: str) -> TokenValue:
        terminology = self.terminology
        assert terminology is not None
        try:
            if modifier in ("in", "not-in"):
                # A fragment code system (ICD-10-CM Z55-Z65, say) answers with the codes held.
                match = terminology.codes_in(text, held_only=True)
                return TokenValue(
                    None,
                    None,
                    pairs=tuple(sorted(match.codes)),
                    systems=tuple(sorted(match.systems)),
                    excluded=tuple(sorted(match.excluded)),
                    folded=tuple(sorted(match.case_insensitive)),
                )
            system, bar, code = text.rpartition("|")
            if not bar or not system or not code:
                raise InvalidSearch(f"{param.code}:{modifier} takes system|code")
            if modifier == "below":
                codes = terminology.descendants(system, code)
            else:
                codes = terminology.ancestors(system, code)
            folded = () if terminology.case_sensitive(system) else (system,)
        except TerminologyError as exc:
            raise InvalidSearch(f"{param.code}:{modifier}: {exc}") from None
        return TokenValue(
            None, None, pairs=tuple(sorted((system, c) for c in codes)), folded=folded
        )

    def _visit(self, depth: int) -> None:
        if depth >= MAX_CHAIN_DEPTH:
            raise _TooComplex(f"a search parameter may chain at most {MAX_CHAIN_DEPTH} references")
        self.visited += 1
        if self.visited > _MAX_FAN_OUT:
            raise _TooComplex(
                "the chain reaches too many resource types: name them with :Type"
                " (subject:Patient.name)"
            )

    def _chain(self, resource_type: str, key: str, value: str, depth: int) -> Clause:
        """``param[:Type].rest``: http://hl7.org/fhir/R4/search.html#chaining"""
        head, _, rest = key.partition(".")
        code, _, target = head.partition(":")
        param = _usable(self.registry.get(resource_type, code))
        if param is None:
            raise _Unsupported(f"unknown search parameter {code!r} for {resource_type}")
        if param.type != "reference" or not param.expression:
            raise _Unsupported(
                f"{code} is not a reference parameter of {resource_type}, so it cannot be chained"
            )
        if not rest:
            raise InvalidSearch(f"the chain {key!r} names no parameter after '.'")
        if target:
            if not (_TYPE_NAME.fullmatch(target) and self.registry.for_type(target)) or (
                param.targets and target not in param.targets
            ):
                raise InvalidSearch(f"{resource_type}.{code} cannot refer to a {target!r}")
            types: tuple[str, ...] = (target,)
        elif param.targets:
            types = param.targets
        else:
            raise _Unsupported(
                f"{resource_type}.{code} may refer to any type: name one, as {code}:Type.{rest}"
            )
        branches: list[tuple[str, Clause]] = []
        failures: list[Exception] = []
        for target_type in types:
            self._visit(depth)
            try:
                branches.append((target_type, self.parse(target_type, rest, value, depth + 1)))
            except _TooComplex:
                raise
            except (_Unsupported, InvalidSearch) as exc:
                if len(types) == 1:
                    raise
                failures.append(exc)
        if not branches:
            invalid = [f for f in failures if isinstance(f, InvalidSearch)]
            if invalid:
                raise invalid[0]
            raise _Unsupported(
                f"no type {resource_type}.{code} can refer to ({', '.join(types)})"
                f" has the search parameter {rest!r}"
            )
        return Clause(code, "chain", param, target or None, (), _group(branches))

    def _has(self, resource_type: str, key: str, value: str, depth: int) -> Clause:
        """``_has:Type:param:rest``: http://hl7.org/fhir/R4/search.html#has"""
        parts = key.split(":")
        if len(parts) < 4 or not all(parts[1:4]):
            raise InvalidSearch("_has takes the form _has:Type:reference-parameter:parameter")
        source, code, rest = parts[1], parts[2], ":".join(parts[3:])
        if not (_TYPE_NAME.fullmatch(source) and self.registry.for_type(source)):
            raise _Unsupported(f"_has names {source!r}, which is not a resource type")
        param = _usable(self.registry.get(source, code))
        if param is None:
            raise _Unsupported(f"unknown search parameter {code!r} for {source} in _has")
        if param.type != "reference" or not param.expression:
            raise _Unsupported(f"_has needs a reference parameter; {source}.{code} is not one")
        if param.targets and resource_type not in param.targets:
            raise InvalidSearch(f"_has: {source}.{code} cannot refer to a {resource_type}")
        self._visit(depth)
        clause = self.parse(source, rest, value, depth + 1)
        return Clause(code, "has", param, None, (), (((source,), clause),))

    def _composite(self, param: SearchParam, modifier: str | None, text: str) -> Clause:
        """``a$b``, components in the order of the definition: search.html#composite"""
        components = self.registry.components(param)
        if components is None or not composite_indexable(param, components):
            raise _Unsupported(f"the composite search parameter {param.code} is not supported")
        if modifier:
            raise _Unsupported(
                f"the modifier :{modifier} is not supported on {param.code} (composite)"
            )
        raw_values = [v for v in split_escaped(text, ",") if v != ""]
        if not raw_values:
            raise InvalidSearch(f"the search parameter {param.code} has no value")
        values = []
        for raw in raw_values:
            parts = split_escaped(raw, "$")
            if len(parts) != len(components) or not all(parts):
                raise InvalidSearch(
                    f"a value of {param.code} has {len(components)} parts separated by '$'"
                )
            values.append(
                CompositeValue(
                    tuple(
                        (c.type, _parse_value(c, None, part, self.base_url))
                        for c, part in zip(components, parts, strict=True)
                    )
                )
            )
        return Clause(param.code, "composite", param, None, tuple(values))


def _group(branches: list[tuple[str, Clause]]) -> tuple[tuple[tuple[str, ...], Clause], ...]:
    """Branches whose clauses differ only in their resource type, as one (types, clause)."""
    groups: dict[object, tuple[list[str], Clause]] = {}
    for resource_type, clause in branches:
        groups.setdefault(_shape(clause), ([], clause))[0].append(resource_type)
    return tuple((tuple(types), clause) for types, clause in groups.values())


def _shape(clause: Clause) -> object:
    """What the SQL of a clause depends on: everything but its parameters' resource types."""
    nested = tuple((types, _shape(inner)) for types, inner in clause.nested)
    return (clause.code, clause.kind, clause.modifier, clause.values, nested)


def _modifier_allowed(param: SearchParam, modifier: str) -> bool:
    if modifier in _MODIFIERS[param.type]:
        return True
    # Reference type modifier, e.g. subject:Patient=123.
    return (
        param.type == "reference"
        and bool(_TYPE_NAME.fullmatch(modifier))
        and (not param.targets or modifier in param.targets)
    )


def parse_count(value: str, max_count: int) -> int:
    """A page size: a whole number of at most nine ASCII digits, capped at ``max_count``."""
    if not _DIGITS.fullmatch(value):
        raise InvalidSearch("_count must be a non-negative whole number")
    return min(int(value), max_count)


def _parse_sort(value: str, params: Mapping[str, SearchParam]) -> tuple[SortKey, ...]:
    keys = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        descending = item.startswith("-")
        code = item.removeprefix("-")
        if code == "_id":
            keys.append(SortKey(code, "id", None, descending))
        elif code == "_lastUpdated":
            keys.append(SortKey(code, "lastUpdated", None, descending))
        elif _sorts_by_distance(code, params.get(code)):
            # Bound to the near clause, direct or chained, once the clauses are parsed.
            keys.append(SortKey(code, "near", None, descending))
        else:
            param = _usable(params.get(code))
            if param is None or param.type not in _MODIFIERS:
                raise InvalidSearch(f"cannot sort by {code!r}: not a sortable search parameter")
            keys.append(SortKey(code, param.type, param, descending))
    return tuple(keys)


def _sorts_by_distance(code: str, param: SearchParam | None) -> bool:
    """``_sort=near`` on Location, or on a type that reaches a near through a chain (a type
    with a parameter of its own named near sorts by that parameter instead)."""
    if param is None:
        return code == "near"
    return param.expression == "Location.position"


def _parse_clause(
    param: SearchParam, modifier: str | None, text: str, base_url: str | None = None
) -> Clause:
    if modifier == "missing":
        if text not in {"true", "false"}:
            raise InvalidSearch(f"{param.code}:missing takes true or false")
        return Clause(param.code, param.type, param, modifier, (MissingValue(text == "true"),))
    raw_values = [v for v in split_escaped(text, ",") if v != ""]
    if not raw_values:
        raise InvalidSearch(f"the search parameter {param.code} has no value")
    values = tuple(_parse_value(param, modifier, v, base_url) for v in raw_values)
    return Clause(param.code, param.type, param, modifier, values)


def _parse_value(
    param: SearchParam, modifier: str | None, text: str, base_url: str | None = None
) -> Value:
    kind = param.type
    if kind == "string":
        raw = _unescape(text)
        return StringValue(normalize_string(raw), raw)
    if kind == "token":
        return _token_value(param, modifier, text)
    if kind == "reference":
        if base_url and text.startswith(base_url.rstrip("/") + "/"):
            text = text[len(base_url.rstrip("/")) + 1 :]
        return _reference_value(param, modifier, text)
    if kind == "date":
        return _date_value(text, param.code)
    if kind == "number":
        prefix, rest = _split_prefix(text)
        value, low, high = _number(rest, param.code)
        return NumberValue(prefix, value, low, high)
    if kind == "quantity":
        return _quantity_value(param, text)
    return UriValue(_unescape(text))


def _token_value(param: SearchParam, modifier: str | None, text: str) -> TokenValue:
    if modifier == "text":
        return TokenValue(None, None, text=normalize_string(_unescape(text)))
    parts = [_unescape(p) for p in split_escaped(text, "|")]
    if modifier == "of-type":
        if len(parts) != 3 or not parts[2]:
            raise InvalidSearch(f"{param.code}:of-type takes system|code|value")
        return TokenValue(None, parts[2], type_system=parts[0] or None, type_code=parts[1] or None)
    if len(parts) == 1:
        return TokenValue(None, parts[0])
    if len(parts) != 2:
        raise InvalidSearch(f"a token value for {param.code} has more than one unescaped '|'")
    system, code = parts
    return TokenValue(system, code or None)


def _reference_value(param: SearchParam, modifier: str | None, text: str) -> ReferenceValue:
    value = _unescape(text)
    if modifier == "identifier":
        parts = [_unescape(p) for p in split_escaped(text, "|")]
        if len(parts) == 1:
            return ReferenceValue(None, None, identifier_value=parts[0])
        if len(parts) != 2:
            raise InvalidSearch(f"{param.code}:identifier takes system|value")
        return ReferenceValue(
            None, None, identifier_system=parts[0] or None, identifier_value=parts[1] or None
        )
    target = modifier if modifier and _TYPE_NAME.fullmatch(modifier) else None
    if "://" in value or value.startswith("urn:"):
        return ReferenceValue(None, None, url=value.split("/_history/")[0])
    segments = value.split("/")
    if len(segments) >= 4 and segments[-2] == "_history":
        segments = segments[:-2]
    if len(segments) == 1:
        if not _ID.fullmatch(segments[0]):
            raise InvalidSearch(f"{segments[0]!r} is not a valid resource id for {param.code}")
        if target is None and len(param.targets) == 1:
            target = param.targets[0]
        return ReferenceValue(target, segments[0])
    if len(segments) == 2 and _TYPE_NAME.fullmatch(segments[0]) and _ID.fullmatch(segments[1]):
        if target is not None and target != segments[0]:
            raise InvalidSearch(f"{param.code}:{target} does not match the reference {value!r}")
        if param.targets and segments[0] not in param.targets:
            raise InvalidSearch(f"{param.code} cannot refer to a {segments[0]}")
        return ReferenceValue(segments[0], segments[1])
    raise InvalidSearch(f"{value!r} is not a reference the server understands for {param.code}")


def _split_prefix(text: str) -> tuple[str, str]:
    if len(text) > 2 and text[:2] in PREFIXES:
        return text[:2], text[2:]
    return "eq", text


def _date_value(text: str, code: str) -> DateValue:
    prefix, rest = _split_prefix(text)
    try:
        low, high = parse_date_range(rest)
    except InvalidValue:
        raise InvalidSearch(f"{rest!r} is not a FHIR date for {code}") from None
    return DateValue(prefix, low, high)


def _number(text: str, code: str) -> tuple[Decimal, Decimal, Decimal]:
    try:
        return parse_number_range(text)
    except InvalidValue:
        raise InvalidSearch(f"{text!r} is not a number for {code}") from None


def _quantity_value(param: SearchParam, text: str) -> QuantityValue:
    parts = [_unescape(p) for p in split_escaped(text, "|")]
    if len(parts) not in {1, 3}:
        raise InvalidSearch(f"a quantity for {param.code} is number or number|system|code")
    prefix, rest = _split_prefix(parts[0])
    value, low, high = _number(rest, param.code)
    system = parts[1] or None if len(parts) == 3 else None
    code = parts[2] or None if len(parts) == 3 else None
    return QuantityValue(prefix, value, low, high, system, code)


def _near_clause(param: SearchParam, text: str) -> Clause:
    """``near=latitude|longitude|distance|units``: http://hl7.org/fhir/R4/location.html#search

    Without a distance, near means within NEAR_DEFAULT_KM; without units, km. Distances are
    great-circle (haversine) on a sphere of the Earth's mean radius, not on the WGS84 ellipsoid:
    within 0.5%. Results come nearest first unless ``_sort`` says otherwise (``-near``:
    farthest first), measured from the first near value.
    """
    values = []
    for raw in split_escaped(text, ","):
        if not raw:
            continue
        parts = [_unescape(p).strip() for p in split_escaped(raw, "|")]
        if len(parts) < 2 or len(parts) > 4:
            raise InvalidSearch(f"{param.code} takes latitude|longitude|distance|units")
        latitude = _finite(parts[0], param.code, "latitude")
        longitude = _finite(parts[1], param.code, "longitude")
        if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
            raise InvalidSearch(f"{param.code}: latitude or longitude out of range")
        distance = NEAR_DEFAULT_KM
        unit = "km"
        if len(parts) >= 3 and parts[2]:
            unit = parts[3] if len(parts) == 4 and parts[3] else "km"
            factor = _DISTANCE_UNITS.get(unit)
            if factor is None:
                raise InvalidSearch(
                    f"{param.code}: unknown distance unit {unit!r}"
                    f" (use one of {', '.join(_DISTANCE_UNITS)})"
                )
            distance = _finite(parts[2], param.code, "distance") * factor
            if distance < 0:
                raise InvalidSearch(f"{param.code}: the distance cannot be negative")
        values.append(NearValue(latitude, longitude, distance, DISTANCE_UNITS[unit]))
    if not values:
        raise InvalidSearch(f"the search parameter {param.code} has no value")
    return Clause(param.code, "near", param, None, tuple(values))


def _finite(text: str, code: str, what: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise InvalidSearch(f"{code}: {text!r} is not a {what}") from None
    if not math.isfinite(number) or not re.fullmatch(r"[-+]?[0-9]+(\.[0-9]+)?", text):
        raise InvalidSearch(f"{code}: {text!r} is not a {what}")
    return number


def _text_clause(code: str, text: str) -> Clause:
    """``_text`` / ``_content``: words all of which must occur (``"a phrase"``, ``or``, ``-word``
    as in web search engines); commas separate alternatives, as for any parameter."""
    values = tuple(TextValue(_unescape(v)) for v in split_escaped(text, ",") if v.strip())
    if not values:
        raise InvalidSearch(f"the search parameter {code} has no value")
    return Clause(code, "text", None, None, values)


def _list_clause(text: str) -> Clause:
    """``_list=id``: resources that are items of the List ``id`` (search.html#list).

    Functional lists (``$current-problems`` and the like) need a definition of each list per
    patient, which this server has not: they are refused.
    """
    values = []
    for raw in split_escaped(text, ","):
        if not raw:
            continue
        value = _unescape(raw).removeprefix("List/")
        if value.startswith("$"):
            raise _Unsupported(f"the functional list {value} is not supported in _list")
        if not _ID.fullmatch(value):
            raise InvalidSearch(f"_list: {value!r} is not the id of a List")
        values.append(ReferenceValue("List", value))
    if not values:
        raise InvalidSearch("_list has no value")
    return Clause("_list", "list", None, None, tuple(values))
