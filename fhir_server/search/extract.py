"""Extract typed search-index rows from a FHIR resource, one set per search parameter.

Spec: http://hl7.org/fhir/R4/search.html#ptypes (what each parameter type matches).

Each parameter's FHIRPath is compiled once. Simple paths (dotted members, choice types,
``ofType``/``as``, ``where(resolve() is T)``, ``where(field = 'literal')``) run on a fast path
that walks the JSON with the FHIRPath model's type tables; everything else runs in fhirpathpy.
Both give the same rows (tests/fhir_server/search/test_extract.py checks it on every
parameter of the SDOHCC examples).

A composite parameter (search.html#composite) has no rows under its own code: each element its
expression selects gives rows of the component types under ``code$0``, ``code$1``, ... (see
:func:`composite_code`), all with the element's ordinal in ``ord``, so a search can require
every component to match the same element. Only elements with a value for every component give
rows. Component expressions are relative to the element and run on the fast path only: a
composite whose expressions need fhirpathpy is not indexable (:func:`composite_indexable`).

The special parameter ``near`` (expression ``Location.position``) gives one GeoRow per position.
Full-text search (``_text``, ``_content``) reads the whole resource: :func:`extract_text`.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any, TypeAlias

import fhirpathpy
from fhirpathpy.engine.nodes import FP_DateTime, ResourceNode, TypeInfo
from fhirpathpy.models import models

from fhir_server.search.registry import SearchParam, SearchRegistry, split_union
from fhir_server.search.values import (
    DATE_MAX,
    DATE_MIN,
    InvalidValue,
    date_bounds,
    normalize_string,
    number_range_of,
    parse_date_range,
)

__all__ = [
    "ISO_4217",
    "NORM_MAX",
    "RESOURCE_TYPES",
    "STRING_MAX",
    "TEXT_MAX",
    "DateRow",
    "GeoRow",
    "IndexExtractor",
    "NumberRow",
    "QuantityRow",
    "ReferenceRow",
    "ResourceIndex",
    "StringRow",
    "TokenRow",
    "UriRow",
    "composite_code",
    "composite_indexable",
    "extract_text",
    "patient_compartment_ids",
]

STRING_MAX = 2000
NORM_MAX = 255
ISO_4217 = "urn:iso:std:iso:4217"  # Money.currency's system


@dataclass(frozen=True, slots=True)
class StringRow:
    param: str
    value: str  # as written, cut to STRING_MAX (for :exact and :contains)
    norm: str  # normalize_string(value), cut to NORM_MAX (for the default starts-with)
    ord: int | None = None


@dataclass(frozen=True, slots=True)
class TokenRow:
    param: str
    system: str | None
    code: str | None
    text: str | None  # normalized CodeableConcept.text, Coding.display or Identifier.type.text
    type_system: str | None = None  # Identifier.type coding, for :of-type
    type_code: str | None = None
    ord: int | None = None


@dataclass(frozen=True, slots=True)
class DateRow:
    param: str
    low: datetime  # half-open [low, high), aware UTC
    high: datetime
    ord: int | None = None


@dataclass(frozen=True, slots=True)
class NumberRow:
    param: str
    value: Decimal
    low: Decimal  # implicit precision range [low, high)
    high: Decimal
    ord: int | None = None


@dataclass(frozen=True, slots=True)
class QuantityRow:
    param: str
    value: Decimal
    low: Decimal
    high: Decimal
    system: str | None
    code: str | None
    unit: str | None
    ord: int | None = None


@dataclass(frozen=True, slots=True)
class UriRow:
    param: str
    value: str
    ord: int | None = None


@dataclass(frozen=True, slots=True)
class GeoRow:
    """A position (WGS84 degrees), for ``near``; Decimals as written, so no precision is lost."""

    param: str
    lat: Decimal
    lon: Decimal


@dataclass(frozen=True, slots=True)
class ReferenceRow:
    param: str
    target_type: str | None
    target_id: str | None  # without any _history version
    url: str | None  # absolute reference or canonical (without |version); None when local
    identifier_system: str | None = None
    identifier_value: str | None = None
    ord: int | None = None


Row: TypeAlias = (
    StringRow | TokenRow | DateRow | NumberRow | QuantityRow | UriRow | ReferenceRow | GeoRow
)
# Each row type's fields before ``ord``, for _with_ord (dataclasses.replace is slow).
_ROW_FIELDS: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls))[:-1]
    for cls in (StringRow, TokenRow, DateRow, NumberRow, QuantityRow, UriRow, ReferenceRow)
}


@dataclass(frozen=True, slots=True)
class ResourceIndex:
    """All index rows of one resource, each kind deduplicated, in extraction order."""

    strings: tuple[StringRow, ...] = ()
    tokens: tuple[TokenRow, ...] = ()
    dates: tuple[DateRow, ...] = ()
    numbers: tuple[NumberRow, ...] = ()
    quantities: tuple[QuantityRow, ...] = ()
    uris: tuple[UriRow, ...] = ()
    references: tuple[ReferenceRow, ...] = ()
    geo: tuple[GeoRow, ...] = ()


_R4: dict[str, Any] = models["r4"]
_PATH2TYPE: dict[str, str] = _R4["path2Type"]
_TYPE2PARENT: dict[str, str | None] = _R4["type2Parent"]
_CHOICES: dict[str, list[str]] = _R4["choiceTypePaths"]
_ELSEWHERE: dict[str, str] = _R4["pathsDefinedElsewhere"]
RESOURCE_TYPES = frozenset(
    name
    for name, parent in _TYPE2PARENT.items()
    if parent in ("Resource", "DomainResource") and name != "DomainResource"
)

# (FHIR type name, or element path for backbone elements; JSON value)
TypedValue: TypeAlias = tuple[str, Any]
Evaluate: TypeAlias = Callable[[Mapping[str, Any]], list[TypedValue]]
Convert: TypeAlias = Callable[[str, Any], Iterator[Row]]


def composite_code(code: str, index: int) -> str:
    """The ``param`` of the index rows of component ``index`` (from 0) of composite ``code``."""
    return f"{code}${index}"


class IndexExtractor:
    """Turns resources into index rows for a fixed set of search parameters."""

    def __init__(
        self,
        params: Iterable[SearchParam],
        *,
        fast_path: bool = True,
        registry: SearchRegistry | None = None,
    ) -> None:
        """Compile every parameter's expression once; ValueError if one does not compile.

        ``fast_path=False`` evaluates every expression with fhirpathpy; it exists to check that
        the fast path gives the same rows. ``registry`` resolves the components of composite
        parameters; without it composites give no rows.
        """
        self._by_type: dict[str, list[_Compiled]] = {}
        self._composites: dict[str, list[_Composite]] = {}
        slow: set[tuple[str, str]] = set()
        for param in params:
            if param.type == "composite" and registry is not None:
                components = registry.components(param)
                composite = _compile_composite(param, components) if components else None
                if composite is not None:
                    self._composites.setdefault(param.resource_type, []).append(composite)
                continue
            converters = _CONVERTERS.get(param.type)
            if converters is None or not param.expression:
                continue  # composite and special parameters have no rows of their own
            expression = _normalize(param.expression, param.resource_type)
            evaluate: Evaluate | None = None
            if fast_path:
                evaluate = _compile_fast(expression, param.resource_type)
            if evaluate is None:
                try:
                    evaluate = _SlowPath(expression)
                except Exception as exc:  # antlr4 and fhirpathpy raise bare Exceptions
                    where = f"{param.resource_type}.{param.code}"
                    raise ValueError(f"{where}: FHIRPath does not compile: {expression}") from exc
                slow.add((param.resource_type, param.code))
            roots = evaluate.roots if isinstance(evaluate, _FastPath) else None
            compiled = _Compiled(param.code, _KIND[param.type], evaluate, converters, roots)
            self._by_type.setdefault(param.resource_type, []).append(compiled)
        self.slow_params = frozenset(slow)
        """(resource type, code) of the parameters that fhirpathpy evaluates."""

    def extract(self, resource: Mapping[str, Any]) -> ResourceIndex:
        """Index rows of ``resource``; values that do not parse are skipped, never raised."""
        buckets: tuple[dict[Any, None], ...] = tuple({} for _ in range(8))
        for compiled in self._by_type.get(resource.get("resourceType", ""), ()):
            if compiled.roots is not None and compiled.roots.isdisjoint(resource):
                continue  # most parameters of a type look at elements this resource lacks
            try:
                rows = [
                    row
                    for type_name, value in compiled.evaluate(resource)
                    if (convert := compiled.converters.get(type_name)) is not None
                    for row in convert(compiled.code, value)
                ]
            except Exception:  # fhirpathpy raises bare Exceptions on odd input
                continue
            buckets[compiled.kind].update(dict.fromkeys(rows))
        for composite in self._composites.get(resource.get("resourceType", ""), ()):
            for kind, row in composite.rows(resource):
                buckets[kind][row] = None
        strings, tokens, dates, numbers, quantities, uris, references, geo = buckets
        return ResourceIndex(
            strings=tuple(strings),
            tokens=tuple(tokens),
            dates=tuple(dates),
            numbers=tuple(numbers),
            quantities=tuple(quantities),
            uris=tuple(uris),
            references=tuple(references),
            geo=tuple(geo),
        )


# Longest narrative and content text indexed for full-text search: a tsvector holds at most
# 1 MB, and past this a resource is a document, not a record.
TEXT_MAX = 200_000
_TAG = re.compile(r"<[^>]*>")
# Strings that are not text: the narrative's XHTML (indexed as its text instead), base64 data
# (Attachment.data, Binary.data) and the resource's own bookkeeping.
_NOT_TEXT = frozenset({"div", "data", "resourceType", "id", "meta"})
_SCALARS = frozenset({bool, int, float, type(None)})


def extract_text(resource: Mapping[str, Any]) -> tuple[str, str]:
    """The narrative as plain text, and every string of the resource: what ``_text`` and
    ``_content`` search (http://hl7.org/fhir/R4/search.html#text).

    The content includes the narrative's text; the resource's id and meta are left out. Each is
    cut to TEXT_MAX characters.
    """
    narrative = ""
    text = resource.get("text")
    if isinstance(text, Mapping) and isinstance(text.get("div"), str):
        narrative = " ".join(html.unescape(_TAG.sub(" ", text["div"])).split())[:TEXT_MAX]
    parts = [narrative] if narrative else []
    size = len(narrative)
    stack: list[Any] = [v for k, v in resource.items() if k not in _NOT_TEXT]
    pop, push, add = stack.pop, stack.append, parts.append
    while stack and size < TEXT_MAX:
        value = pop()
        kind = type(value)  # exact types first: parsed JSON has no others, and ABC checks cost
        if kind is str:
            add(value)
            size += len(value) + 1
        elif kind is dict:
            for key, item in value.items():
                if key not in _NOT_TEXT:
                    push(item)
        elif kind is list:
            stack.extend(value)
        elif kind in _SCALARS:
            continue
        elif isinstance(value, str):
            add(value)
            size += len(value) + 1
        elif isinstance(value, Mapping):
            stack.extend(v for k, v in value.items() if k not in _NOT_TEXT)
        elif isinstance(value, list):
            stack.extend(value)
    return narrative, " ".join(parts)[:TEXT_MAX]


def patient_compartment_ids(
    resource_type: str,
    resource_id: str,
    refs: Iterable[ReferenceRow],
    compartment_params: Collection[str],
) -> frozenset[str]:
    """Ids of the Patients in whose compartment this resource is.

    Spec: http://hl7.org/fhir/R4/compartmentdefinition-patient.html. Only local references
    count: an absolute URL naming Patient/1 on another server is not our Patient/1.
    """
    ids = {resource_id} if resource_type == "Patient" else set()
    for ref in refs:
        if (
            ref.param in compartment_params
            and ref.target_type == "Patient"
            and ref.target_id is not None
            and ref.url is None
        ):
            ids.add(ref.target_id)
    return frozenset(ids)


@dataclass(frozen=True, slots=True)
class _Compiled:
    code: str
    kind: int  # index into the buckets of IndexExtractor.extract
    evaluate: Evaluate
    converters: Mapping[str, Convert]
    # Top-level keys at least one of which a resource needs for any rows; None: always evaluate.
    roots: frozenset[str] | None = None


# --- expressions ----------------------------------------------------------------------------

_AS_FUNCTION = re.compile(r"\.as\((\w+)\)")
_AS_OPERATOR = re.compile(r"\(([^()\s]+) as (\w+)\)")
_AS_TOP_LEVEL = re.compile(r"([^()\s]+) as (\w+)")
_SYSTEM_TYPE = re.compile(r"\.ofType\((DateTime|Date|Time|String|Boolean|Integer|Decimal)\)")
_ABSTRACT_ROOT = re.compile(r"(?<![\w.%$])(?:Resource|DomainResource)\.")


def _normalize(expression: str, resource_type: str) -> str:
    """Rewrite ``as`` to ``ofType`` and abstract roots to the concrete type, for both paths.

    FHIRPath's ``as`` is an error on more than one item, so ``Observation.component.value as
    Quantity`` fails on any Observation with two components; R5 rewrote these expressions to
    ``ofType``, which is what the search parameter means. fhirpathpy also finds nothing under
    a ``Resource.`` root on a concrete resource. R4's ``code-value-date`` names the FHIRPath
    system type (``value.as(DateTime)``), which no FHIR ``dateTime`` is; R5 names the FHIR type.
    """
    parts = []
    for part in split_union(expression):
        part = _AS_FUNCTION.sub(r".ofType(\1)", part)
        part = _AS_OPERATOR.sub(r"(\1.ofType(\2))", part)
        top_level = _AS_TOP_LEVEL.fullmatch(part)
        if top_level is not None:
            part = f"{top_level[1]}.ofType({top_level[2]})"
        part = _SYSTEM_TYPE.sub(lambda m: f".ofType({m[1][0].lower()}{m[1][1:]})", part)
        parts.append(_ABSTRACT_ROOT.sub(f"{resource_type}.", part))
    return " | ".join(parts)


class _SlowPath:
    """An expression evaluated by fhirpathpy, with resolve() answered from the reference.

    Each top-level ``|`` operand is compiled on its own: fhirpathpy's union drops the type of
    every node, and the type decides which rows a value gives.
    """

    __slots__ = ("_fns",)

    def __init__(self, expression: str) -> None:
        # fhirpathpy keeps the model in a class attribute that only is/as set; ofType reads it
        # to know that Age is a Quantity. Set it once so results do not depend on call order.
        TypeInfo.model = _R4  # type: ignore[assignment]
        options = {
            "returnRawData": True,
            "userInvocationTable": {"resolve": {"fn": _resolve, "arity": {0: []}}},
        }
        self._fns = [
            fhirpathpy.compile(part, model=_R4, options=options) for part in split_union(expression)
        ]

    def __call__(self, resource: Mapping[str, Any]) -> list[TypedValue]:
        out: list[TypedValue] = []
        for node in (node for fn in self._fns for node in fn(resource, {})):
            if isinstance(node, ResourceNode):
                if node.data is not None and node.path is not None:
                    out.append((node.path, node.data))
            elif isinstance(node, bool):
                out.append(("boolean", node))
            elif isinstance(node, str):
                out.append(("string", node))
            elif isinstance(node, int):
                out.append(("integer", node))
            elif isinstance(node, float | Decimal):
                out.append(("decimal", node))
            elif isinstance(node, FP_DateTime):  # from functions such as toDateTime()
                out.append(("dateTime", node.asStr))
        return out


def _resolve(inputs: list[Any]) -> list[ResourceNode]:
    """resolve() as far as search needs it: the type of the referenced resource."""
    out = []
    for item in inputs:
        target = _reference_type(item)
        if target is not None:
            out.append(ResourceNode.create_node({"resourceType": target}))
    return out


# One step of a fast path: a member (with its possible JSON keys), or a filter.
@dataclass(frozen=True, slots=True)
class _Member:
    # incoming type path -> ((JSON key, "_" + key, child type path), ...); several for a choice
    keys: Mapping[str, tuple[tuple[str, str, str], ...]]
    choice: Mapping[str, bool]


@dataclass(frozen=True, slots=True)
class _OfType:
    allowed: frozenset[str]  # type paths that pass


@dataclass(frozen=True, slots=True)
class _ResolvesTo:
    type_name: str


@dataclass(frozen=True, slots=True)
class _FieldEquals:
    field: str
    literal: str


_Step: TypeAlias = _Member | _OfType | _ResolvesTo | _FieldEquals

_IDENT = re.compile(r"[A-Za-z]\w*")
_STEP = re.compile(
    r"\.(?:ofType\((?P<of_type>\w+)\)"
    r"|where\(resolve\(\) is (?P<resolves>\w+)\)"
    r"|where\((?P<field>[a-z]\w*) ?= ?'(?P<literal>[^'\\]*)'\)"
    r"|(?P<member>[a-z]\w*)(?![\w(]))"
)


class _Fallback(Exception):
    """The fast path met data it does not model exactly; fhirpathpy takes over."""


class _FastPath:
    """A union of simple paths walked directly over the JSON."""

    __slots__ = ("_parts", "_expression", "_slow")

    def __init__(self, parts: list[list[_Step]], root_type: str, expression: str) -> None:
        self._parts = [(root_type, steps) for steps in parts]
        self._expression = expression
        self._slow: _SlowPath | None = None

    @property
    def roots(self) -> frozenset[str] | None:
        """Top-level JSON keys (with their ``_`` companions) the first steps read; without any
        of them in a resource this path yields nothing. None when a first step is no member."""
        keys: set[str] = set()
        for root_type, steps in self._parts:
            first = steps[0] if steps else None
            if not isinstance(first, _Member):
                return None
            for key, extension_key, _ in first.keys.get(root_type, ()):
                keys.update((key, extension_key))
        return frozenset(keys)

    def __call__(self, resource: Mapping[str, Any]) -> list[TypedValue]:
        try:
            return self._evaluate(resource)
        except _Fallback:
            if self._slow is None:
                self._slow = _SlowPath(self._expression)
            return self._slow(resource)

    def _evaluate(self, resource: Mapping[str, Any]) -> list[TypedValue]:
        out: list[TypedValue] = []
        for root_type, steps in self._parts:
            out.extend(_walk(resource, root_type, steps))
        return out


class _ExistsAndNotFalse(_FastPath):
    """``R.m.exists() and R.m != false`` for a boolean or date member: R4's Patient.deceased.

    True for a date of death too. FHIRPath counts an extension-only ``_m`` as existing, and
    compares more than one item differently: both go to fhirpathpy.
    """

    __slots__ = ("_keys", "_extension_keys")

    @property
    def roots(self) -> frozenset[str] | None:
        return None  # an absent member still gives a value: false

    def __init__(self, member: _Member, root_type: str, expression: str) -> None:
        super().__init__([[member]], root_type, expression)
        self._keys = tuple(key for alts in member.keys.values() for key, _, _ in alts)
        self._extension_keys = tuple(ext for alts in member.keys.values() for _, ext, _ in alts)

    def _evaluate(self, resource: Mapping[str, Any]) -> list[TypedValue]:
        if any(resource.get(key) is not None for key in self._extension_keys) or any(
            type(resource.get(key)) is list for key in self._keys
        ):
            raise _Fallback
        items = super()._evaluate(resource)
        if len(items) > 1:
            raise _Fallback
        # fhirpathpy compares with Python's ==, under which 0 == false too
        return [("boolean", bool(items) and items[0][1] != False)]  # noqa: E712


def _walk(resource: Mapping[str, Any], root_type: str, steps: list[_Step]) -> list[TypedValue]:
    items: list[TypedValue] = [(root_type, resource)]
    for step in steps:
        if not items:
            return items
        if isinstance(step, _Member):
            items = _members(items, step)
        elif isinstance(step, _OfType):
            items = [item for item in items if item[0] in step.allowed]
        elif isinstance(step, _ResolvesTo):
            items = [item for item in items if _is_type(_reference_type(item[1]), step.type_name)]
        else:
            items = [item for item in items if _field_equals(item[1], step)]
    return [item for item in items if item[1] is not None]


def _members(items: list[TypedValue], step: _Member) -> list[TypedValue]:
    out: list[TypedValue] = []
    for type_path, data in items:
        if type(data) is not dict:
            continue
        if step.choice[type_path]:
            for key, extension_key, child_type in step.keys[type_path]:
                value = data.get(key)
                if type(value) is list:
                    out.extend([(child_type, v) for v in value])
                    break
                if value is not None:
                    out.append((child_type, value))
                    break
                if data.get(extension_key) is not None:
                    break  # fhirpathpy picks the first choice with a value or an extension
            continue
        ((key, _, child_type),) = step.keys[type_path]
        value = data.get(key)
        if type(value) is list:
            out.extend([(child_type, v) for v in value])
        elif value is not None:
            out.append((child_type, value))
    return out


def _field_equals(data: Any, step: _FieldEquals) -> bool:
    if type(data) is not dict:
        return False
    if data.get("_" + step.field) is not None:
        raise _Fallback  # the extension makes the field a collection of two: rare, be exact
    value = data.get(step.field)
    if type(value) is list:
        raise _Fallback
    return type(value) is str and value == step.literal


_EXISTS_AND_NOT_FALSE = re.compile(r"(?P<path>[\w.]+)\.exists\(\) and (?P=path) != false")
_SCALAR = frozenset(("boolean", "date", "dateTime", "instant"))


def _compile_fast(expression: str, resource_type: str) -> _FastPath | None:
    """Compile a union of simple paths, or None when any operand needs fhirpathpy."""
    exists = _EXISTS_AND_NOT_FALSE.fullmatch(expression)
    if exists is not None:
        steps = _compile_part(exists["path"], resource_type)
        if steps and len(steps) == 1 and isinstance(steps[0], _Member):
            types = {child for alts in steps[0].keys.values() for _, _, child in alts}
            if types <= _SCALAR:
                return _ExistsAndNotFalse(steps[0], resource_type, expression)
        return None
    parts = []
    for part in split_union(expression):
        steps = _compile_part(_unwrap(part), resource_type)
        if steps is None:
            return None
        if steps:
            parts.append(steps)
    return _FastPath(parts, resource_type, expression)


def _unwrap(part: str) -> str:
    """``(A.b.ofType(T)).c`` reads as ``A.b.ofType(T).c`` when the parentheses hold a path."""
    if part.startswith("("):
        depth = 0
        for i, char in enumerate(part):
            depth += (char == "(") - (char == ")")
            if depth == 0:
                return part[1:i] + part[i + 1 :]
    return part


def _compile_part(part: str, resource_type: str) -> list[_Step] | None:
    """Steps of one union operand; [] when it cannot match this type; None if unsupported."""
    root = _IDENT.match(part)
    if root is None:
        return None
    steps: list[_Step] = []
    types = {resource_type}
    rest = part[root.end() :]
    if root[0][0].islower():  # relative to the resource, e.g. InsurancePlan's "name | alias"
        rest = "." + part
    elif root[0] != resource_type:
        return [] if root[0] in RESOURCE_TYPES else None
    position = 0
    while position < len(rest):
        m = _STEP.match(rest, position)
        if m is None:
            return None
        position = m.end()
        if m["member"] is not None:
            member = _compile_member(types, m["member"])
            if member is None:
                return None
            steps.append(member)
            types = {child for alts in member.keys.values() for _, _, child in alts}
        elif m["of_type"] is not None:
            types = {t for t in types if _node_is(t, m["of_type"])}
            steps.append(_OfType(frozenset(types)))
        elif m["resolves"] is not None:
            if types != {"Reference"}:
                return None
            steps.append(_ResolvesTo(m["resolves"]))
        else:
            for t in types:
                child = _PATH2TYPE.get(_ELSEWHERE.get(f"{t}.{m['field']}", f"{t}.{m['field']}"))
                if child is None or not _is_primitive(child) or _is_primitive(t):
                    return None
            steps.append(_FieldEquals(m["field"], m["literal"]))
    if not steps:
        return None  # the bare resource
    return steps


def _compile_member(types: set[str], name: str) -> _Member | None:
    """The JSON keys and child types of ``name`` on each possible parent type (as fhirpathpy)."""
    keys: dict[str, tuple[tuple[str, str, str], ...]] = {}
    choice: dict[str, bool] = {}
    for parent in types:
        if _is_primitive(parent):
            return None  # members of primitives are their extensions: leave to fhirpathpy
        path = _ELSEWHERE.get(f"{parent}.{name}", f"{parent}.{name}")
        suffixes = _CHOICES.get(path)
        if suffixes:
            alts = tuple(
                (name + s, "_" + name + s, _PATH2TYPE.get(path + s, path + s)) for s in suffixes
            )
        else:
            child = "Extension" if name == "extension" else path
            alts = ((name, "_" + name, _PATH2TYPE.get(child, child)),)
        if any(child == "Resource" or child in RESOURCE_TYPES for _, _, child in alts):
            return None  # contained resources: fhirpathpy types them by their resourceType
        keys[parent] = alts
        choice[parent] = bool(suffixes)
    return _Member(keys, choice)


def _is_primitive(type_path: str) -> bool:
    return type_path[:1].islower() or type_path.startswith("System.")


def _node_is(type_path: str | None, type_name: str) -> bool:
    """fhirpathpy's ``is``/``ofType`` test for a node of this type path."""
    if type_path is None:
        return False
    if type_path.startswith("System."):
        return type_path[len("System.") :] == type_name
    return _is_type("BackboneElement" if "." in type_path else type_path, type_name)


def _is_type(name: str | None, type_name: str) -> bool:
    while name:
        if name == type_name:
            return True
        name = _TYPE2PARENT.get(name) or _PATH2TYPE.get(name)
    return False


# --- composites -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Part:
    """One component of a compiled composite."""

    param: str  # composite_code(code, index)
    kind: int  # index into the buckets of IndexExtractor.extract
    converters: Mapping[str, Convert]
    by_type: Mapping[str, list[list[_Step]]]  # element type path -> steps of each union operand


@dataclass(frozen=True, slots=True)
class _Composite:
    """A composite parameter compiled for the fast path: its elements, then each component."""

    resource_type: str
    bases: tuple[list[_Step], ...]  # one per union operand; [] is the resource itself
    parts: tuple[_Part, ...]

    def rows(self, resource: Mapping[str, Any]) -> Iterator[tuple[int, Row]]:
        """(bucket kind, row) of every element that has a value for every component."""
        elements = [
            item for steps in self.bases for item in _walk(resource, self.resource_type, steps)
        ]
        for ordinal, (type_path, data) in enumerate(elements):
            # Look for every component's value before converting any: most elements lack the
            # value type of most composites (an Observation has one value[x]), and the value
            # is the last component.
            values = []
            for part in reversed(self.parts):
                try:
                    found = [
                        item
                        for steps in part.by_type.get(type_path, ())
                        for item in _walk(data, type_path, steps)
                        if item[0] in part.converters
                    ]
                except _Fallback:
                    found = []
                if not found:
                    break
                values.append(found)
            else:
                converted = []
                for part, found in zip(reversed(self.parts), values, strict=True):
                    rows = [
                        row for t, value in found for row in part.converters[t](part.param, value)
                    ]
                    if not rows:
                        break
                    converted.append((part.kind, rows))
                else:
                    for kind, rows in reversed(converted):
                        for row in rows:
                            yield kind, _with_ord(row, ordinal)


def _with_ord(row: Row, ordinal: int) -> Row:
    """``row`` with ``ord`` set (``ord`` is every row type's last field)."""
    make: Callable[..., Row] = type(row)
    return make(*(getattr(row, name) for name in _ROW_FIELDS[type(row)]), ordinal)


def composite_indexable(param: SearchParam, components: Sequence[SearchParam]) -> bool:
    """Whether :class:`IndexExtractor` gives rows for this composite (and so it can be searched)."""
    return _compile_composite(param, tuple(components)) is not None


@lru_cache(maxsize=1024)
def _compile_composite(param: SearchParam, components: Sequence[SearchParam]) -> _Composite | None:
    """The composite on the fast path, or None when an expression or a value type is not.

    Every component must have a value type its parameter type indexes, on every element type
    the composite's expression selects: R4's DocumentReference ``relationship`` pairs the
    reference parameter with ``code`` and so can never match; it is refused, not left empty.
    """
    if not param.expression or len(components) < 2:
        return None
    resource_type = param.resource_type
    bases: list[list[_Step]] = []
    element_types: set[str] = set()
    for part in split_union(_normalize(param.expression, resource_type)):
        if part == resource_type:
            bases.append([])
            element_types.add(resource_type)
            continue
        steps = _compile_part(_unwrap(part), resource_type)
        if steps is None:
            return None
        if steps:
            bases.append(steps)
            element_types |= _result_types(steps, resource_type)
    if not bases:
        return None
    parts: list[_Part] = []
    for component in components:
        converters = _CONVERTERS.get(component.type)
        if converters is None or not component.expression:
            return None
        by_type: dict[str, list[list[_Step]]] = {}
        for element_type in element_types:
            operands = []
            value_types: set[str] = set()
            for part in split_union(_normalize(component.expression, element_type)):
                steps = _compile_part(_unwrap(part), element_type)
                if steps is None:
                    return None
                if steps:
                    operands.append(steps)
                    value_types |= _result_types(steps, element_type)
            if value_types.isdisjoint(converters):
                return None
            by_type[element_type] = operands
        parts.append(
            _Part(
                composite_code(param.code, len(parts)), _KIND[component.type], converters, by_type
            )
        )
    return _Composite(resource_type, tuple(bases), tuple(parts))


def _result_types(steps: list[_Step], start: str) -> set[str]:
    """The type paths of what ``steps`` can yield from an item of type path ``start``."""
    types = {start}
    for step in steps:
        if isinstance(step, _Member):
            types = {child for t in types for _, _, child in step.keys.get(t, ())}
        elif isinstance(step, _OfType):
            types = set(step.allowed)
    return types


# --- references -----------------------------------------------------------------------------

_REFERENCE = re.compile(
    r"(?P<base>https?://\S+/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/[A-Za-z0-9\-.]{1,64})?"
)


def _parse_reference(text: str) -> tuple[str | None, str | None, str | None] | None:
    """(target type, id, absolute url) of a Reference.reference, None if not indexable.

    Spec: http://hl7.org/fhir/R4/references.html#literal.
    """
    m = _REFERENCE.fullmatch(text)
    if m is not None:
        target_type, target_id, base = m["type"], m["id"], m["base"]
        known = target_type in RESOURCE_TYPES
        if base is None:
            return (target_type, target_id, None) if known else None
        url = f"{base}{target_type}/{target_id}"
        return (target_type, target_id, url) if known else (None, None, url)
    if text.startswith(("urn:", "http://", "https://")):
        return None, None, text
    return None  # "#contained", conditional references and other relative forms


def _type_of_reference_type(value: Any) -> str | None:
    """Reference.type is a URI; "Patient" or a StructureDefinition URL ending in it."""
    if type(value) is not str:
        return None
    name = value.rsplit("/", 1)[-1]
    return name if name in RESOURCE_TYPES else None


def _reference_type(data: Any) -> str | None:
    if type(data) is not dict:
        return None
    reference = data.get("reference")
    parsed = _parse_reference(reference) if type(reference) is str else None
    if parsed is not None and parsed[0] is not None:
        return parsed[0]
    return _type_of_reference_type(data.get("type"))


# --- values to rows -------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    return value if type(value) is str and value else None


def _norm(value: Any) -> str | None:
    text = _text(value)
    return normalize_string(text)[:NORM_MAX] if text is not None else None


def _string_rows(code: str, value: Any) -> Iterator[StringRow]:
    if type(value) is str and value.strip():
        yield StringRow(code, value[:STRING_MAX], normalize_string(value)[:NORM_MAX])


def _parts_rows(fields: tuple[str, ...]) -> Convert:
    def rows(code: str, value: Any) -> Iterator[StringRow]:
        if type(value) is not dict:
            return
        for field in fields:
            part = value.get(field)
            for item in part if type(part) is list else (part,):
                yield from _string_rows(code, item)

    return rows


def _coding_rows(code: str, value: Any) -> Iterator[TokenRow]:
    if type(value) is not dict:
        return
    system, coded, text = _text(value.get("system")), _text(value.get("code")), value.get("display")
    if system or coded or _text(text):
        yield TokenRow(code, system, coded, _norm(text))


def _codeable_concept_rows(code: str, value: Any) -> Iterator[TokenRow]:
    """One row per coding; CodeableConcept.text on codings without display, or its own row."""
    if type(value) is not dict:
        return
    text = _norm(value.get("text"))
    codings = value.get("coding")
    text_placed = False
    for coding in codings if type(codings) is list else ():
        if type(coding) is not dict:
            continue
        system, coded = _text(coding.get("system")), _text(coding.get("code"))
        display = _norm(coding.get("display"))
        if not (system or coded or display or text):
            continue
        text_placed |= display is None or display == text
        yield TokenRow(code, system, coded, display or text)
    if text and not text_placed:
        yield TokenRow(code, None, None, text)


def _identifier_rows(code: str, value: Any) -> Iterator[TokenRow]:
    if type(value) is not dict:
        return
    system, coded = _text(value.get("system")), _text(value.get("value"))
    if not (system or coded):
        return
    id_type = value.get("type")
    text = _norm(id_type.get("text")) if type(id_type) is dict else None
    codings = id_type.get("coding") if type(id_type) is dict else None
    typed = False
    for coding in codings if type(codings) is list else ():
        if type(coding) is dict and (_text(coding.get("system")) or _text(coding.get("code"))):
            typed = True
            yield TokenRow(
                code, system, coded, text, _text(coding.get("system")), _text(coding.get("code"))
            )
    if not typed:
        yield TokenRow(code, system, coded, text)


def _contact_point_rows(code: str, value: Any) -> Iterator[TokenRow]:
    if type(value) is dict and _text(value.get("value")):
        yield TokenRow(code, None, value["value"], None)


def _primitive_token_rows(code: str, value: Any) -> Iterator[TokenRow]:
    if type(value) is str and value:
        yield TokenRow(code, None, value, None)


def _boolean_token_rows(code: str, value: Any) -> Iterator[TokenRow]:
    if type(value) is bool:
        yield TokenRow(code, None, "true" if value else "false", None)


def _date_rows(code: str, value: Any) -> Iterator[DateRow]:
    if type(value) is str:
        try:
            low, high = parse_date_range(value)
        except InvalidValue:
            return
        yield DateRow(code, low, high)


def _period_rows(code: str, value: Any) -> Iterator[DateRow]:
    """[start.low, end.high); an open side is DATE_MIN or DATE_MAX."""
    if type(value) is not dict:
        return
    start, end = value.get("start"), value.get("end")
    if start is None and end is None:
        return
    try:
        low = date_bounds(start)[0] if start is not None else DATE_MIN
        high = date_bounds(end)[1] if end is not None else DATE_MAX
    except (InvalidValue, TypeError):  # TypeError: a start or end that is not a string
        return
    if low < high:
        yield DateRow(code, low, high)


def _timing_rows(code: str, value: Any) -> Iterator[DateRow]:
    if type(value) is not dict:
        return
    events = value.get("event")
    for event in events if type(events) is list else ():
        yield from _date_rows(code, event)
    repeat = value.get("repeat")
    if type(repeat) is dict:
        yield from _period_rows(code, repeat.get("boundsPeriod"))


def _decimal(value: Any) -> tuple[Decimal, Decimal, Decimal] | None:
    """(value, low, high) of a JSON number; orjson gives floats, whose repr is shortest."""
    if type(value) is int:
        number = Decimal(value)
    elif type(value) is float:
        number = Decimal(repr(value))
    else:
        return None
    try:
        low, high = number_range_of(number)
    except InvalidValue:
        return None
    return number, low, high


def _position_rows(code: str, value: Any) -> Iterator[GeoRow]:
    """Location.position: latitude and longitude in decimal degrees, both required."""
    if not isinstance(value, Mapping):
        return
    lat, lon = _decimal(value.get("latitude")), _decimal(value.get("longitude"))
    if lat is not None and lon is not None and abs(lat[0]) <= 90 and abs(lon[0]) <= 180:
        yield GeoRow(code, lat[0], lon[0])


def _number_rows(code: str, value: Any) -> Iterator[NumberRow]:
    parsed = _decimal(value)
    if parsed is not None:
        yield NumberRow(code, *parsed)


def _quantity_rows(code: str, value: Any) -> Iterator[QuantityRow]:
    if type(value) is dict:
        parsed = _decimal(value.get("value"))
        if parsed is not None:
            system, unit = _text(value.get("system")), _text(value.get("unit"))
            yield QuantityRow(code, *parsed, system, _text(value.get("code")), unit)


def _money_rows(code: str, value: Any) -> Iterator[QuantityRow]:
    if type(value) is dict:
        parsed = _decimal(value.get("value"))
        if parsed is not None:
            currency = _text(value.get("currency"))
            yield QuantityRow(code, *parsed, ISO_4217 if currency else None, currency, None)


def _uri_rows(code: str, value: Any) -> Iterator[UriRow]:
    if type(value) is str and value:
        yield UriRow(code, value)


def _reference_rows(code: str, value: Any) -> Iterator[ReferenceRow]:
    if type(value) is not dict:
        return
    reference = value.get("reference")
    parsed = _parse_reference(reference) if type(reference) is str else None
    identifier = value.get("identifier")
    id_system = id_value = None
    if type(identifier) is dict:
        id_system, id_value = _text(identifier.get("system")), _text(identifier.get("value"))
    if parsed is None and id_value is None:
        return
    target_type, target_id, url = parsed or (None, None, None)
    if target_type is None:
        target_type = _type_of_reference_type(value.get("type"))
    yield ReferenceRow(code, target_type, target_id, url, id_system, id_value)


def _canonical_rows(code: str, value: Any) -> Iterator[ReferenceRow]:
    if type(value) is str and value:
        yield ReferenceRow(code, None, None, value.split("|", 1)[0])


_STRINGY = ("string", "markdown", "code", "id", "uri", "url", "canonical", "oid", "uuid")

_CONVERTERS: dict[str, dict[str, Convert]] = {
    "string": {
        **dict.fromkeys(_STRINGY, _string_rows),
        "System.String": _string_rows,
        "HumanName": _parts_rows(("family", "given", "prefix", "suffix", "text")),
        "Address": _parts_rows(
            ("line", "city", "district", "state", "postalCode", "country", "text")
        ),
    },
    "token": {
        **dict.fromkeys(_STRINGY, _primitive_token_rows),
        "System.String": _primitive_token_rows,
        "boolean": _boolean_token_rows,
        "Coding": _coding_rows,
        "CodeableConcept": _codeable_concept_rows,
        "Identifier": _identifier_rows,
        "ContactPoint": _contact_point_rows,
    },
    "date": {
        "date": _date_rows,
        "dateTime": _date_rows,
        "instant": _date_rows,
        "Period": _period_rows,
        "Timing": _timing_rows,
    },
    "number": dict.fromkeys(("integer", "decimal", "positiveInt", "unsignedInt"), _number_rows),
    "quantity": {
        **dict.fromkeys(
            ("Quantity", "Age", "Duration", "Distance", "Count", "SimpleQuantity"),
            _quantity_rows,
        ),
        "MoneyQuantity": _quantity_rows,
        "Money": _money_rows,
    },
    "uri": dict.fromkeys(("uri", "url", "canonical", "oid", "uuid"), _uri_rows),
    "reference": {
        "Reference": _reference_rows,
        **dict.fromkeys(("canonical", "uri", "url"), _canonical_rows),
    },
    "special": {"Location.position": _position_rows},
}

_KIND = {
    "string": 0,
    "token": 1,
    "date": 2,
    "number": 3,
    "quantity": 4,
    "uri": 5,
    "reference": 6,
    "special": 7,
}
