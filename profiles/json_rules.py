"""The R4 JSON representation rules the lax pydantic models let through (types, nulls, empties).

http://hl7.org/fhir/R4/json.html
"""

from __future__ import annotations

import functools
import math
import re
import types
import typing
from decimal import Decimal
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from fhir_core.types import FhirBase

__all__ = ["MAX_ISSUES", "check_json_rules"]

MAX_ISSUES = 50

# What an element's JSON value has to be. Every primitive not listed in _KIND_OF_VISIT is a string.
_STRING, _BOOLEAN, _INTEGER, _DECIMAL, _COMPLEX, _RESOURCE = range(6)

# fhir_core's annotation markers carry the FHIR type name as ``__visit_name__``. integer64 is
# absent: R4 does not have it, and where it exists (R5) its JSON form is a string.
_KIND_OF_VISIT = {
    "integer": _INTEGER,
    "positiveInt": _INTEGER,
    "unsignedInt": _INTEGER,
    "decimal": _DECIMAL,
}

# Abstract bases: the models know them but no instance may claim to be one.
_ABSTRACT_RESOURCES = frozenset({"Resource", "DomainResource"})

_MESSAGES = {
    _BOOLEAN: "must be a JSON boolean (true or false)",
    _INTEGER: "must be a JSON number without a fraction",
    _DECIMAL: "must be a JSON number",
    _STRING: "must be a JSON string",
}


class ElementSpec(typing.NamedTuple):
    """How one JSON property of an element is represented."""

    kind: int
    is_list: bool
    # The model class of a complex element (or of the ``_name`` companion's content).
    child: type[FHIRAbstractModel] | None
    # For a primitive, its ``_name`` companion; for a ``_name`` companion, the primitive's name.
    partner: str | None


Schema = dict[str, ElementSpec]

# Where an element is, built into a string only when there is an issue to report:
# the resource type at the root, else (parent, property, array index or None).
Path = str | tuple[Any, str, int | None]
_Frame = tuple[dict[str, Any], type[FHIRAbstractModel], Path]


class _Full(Exception):
    """Enough issues collected: stop walking."""


class _Issues(list[tuple[str, str]]):
    def add(self, path: Path, message: str) -> None:
        self.append((_render(path), message))
        if len(self) >= MAX_ISSUES:
            raise _Full


def _render(path: Path) -> str:
    parts: list[str] = []
    while not isinstance(path, str):
        path, key, index = path
        parts.append(f".{key}" if index is None else f".{key}[{index}]")
    parts.append(path)
    return "".join(reversed(parts))


def check_json_rules(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(FHIRPath-like element path, message) for every breach of the R4 JSON rules; empty if none.

    Checks the JSON value type of every known element, nulls, and empty objects, arrays and
    strings, down through complex elements, primitive extensions and contained or nested
    resources. Unknown properties are skipped (the models report them). At most MAX_ISSUES.
    """
    if not isinstance(data, dict):
        return [("", "a resource must be a JSON object")]
    cls = _resource_class(data.get("resourceType"))
    if cls is None:
        return [("resourceType", "unknown or missing resourceType")]
    issues = _Issues()
    try:
        _walk(data, cls, issues)
    except _Full:
        pass
    return list(issues)


def _walk(data: dict[str, Any], cls: type[FHIRAbstractModel], issues: _Issues) -> None:
    # An explicit stack, not recursion: hostile nesting depth cannot exhaust the Python stack.
    # The common, valid cases are tested inline; anything else goes to _check_list or
    # _check_single, which say what is wrong. This loop is the whole cost of a check.
    stack: list[_Frame] = [(data, cls, data["resourceType"])]
    push = stack.append
    while stack:
        obj, model, path = stack.pop()
        schema = _schema(model)
        mark = len(stack)
        for key, value in obj.items():
            spec = schema.get(key)
            if spec is None:
                continue  # resourceType, or unknown: the models have the say on those
            kind, is_list, child, partner = spec
            if not is_list:
                if kind == _STRING:
                    if type(value) is str and value and not _CONTROL.search(value):
                        continue
                elif kind == _COMPLEX:
                    if type(value) is dict and value:
                        push((value, child, (path, key, None)))  # type: ignore[arg-type]
                        continue
                _check_single(spec, value, (path, key, None), issues, stack)
            elif kind == _COMPLEX and partner is None and type(value) is list and value:
                for index, item in enumerate(value):
                    if type(item) is dict and item:
                        push((item, child, (path, key, index)))  # type: ignore[arg-type]
                    else:
                        _check_single(spec, item, (path, key, index), issues, stack)
            else:
                _check_list(spec, obj, value, (path, key, None), issues, stack)
        if len(stack) - mark > 1:
            # So that the children come off the stack in document order.
            stack[mark:] = stack[mark:][::-1]


def _check_list(
    spec: ElementSpec,
    obj: dict[str, Any],
    value: Any,
    path: tuple[Any, str, None],
    issues: _Issues,
    children: list[_Frame],
) -> None:
    if value is None:
        issues.add(path, "null is not allowed here")
        return
    if type(value) is not list:
        issues.add(path, "must be a JSON array (the element repeats)")
        return
    if not value:
        issues.add(path, "empty arrays are not allowed")
        return
    parent, key, _ = path
    if spec.partner is None:
        for index, item in enumerate(value):
            _check_single(spec, item, (parent, key, index), issues, children)
        return
    # A repeating primitive (given) and its companion (_given) line up index by index, and null
    # is a placeholder only where the other array has an entry at that index.
    other = obj.get(spec.partner)
    if type(other) is not list:
        other = None
    is_value = spec.kind != _COMPLEX
    if not is_value and other is not None and len(other) != len(value):
        issues.add(path, f"must have as many entries as {spec.partner}")  # said from one side
    for index, item in enumerate(value):
        if item is None:
            if other is not None:
                if index < len(other):
                    if other[index] is not None or not is_value:
                        continue  # a placeholder, or both null: said once, at the value array
                elif not is_value:
                    continue  # beyond the value array: the length issue covers it
            issues.add(
                (parent, key, index), f"null is only a placeholder for an entry of {spec.partner}"
            )
        else:
            _check_single(spec, item, (parent, key, index), issues, children)


_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _check_single(
    spec: ElementSpec, value: Any, path: Path, issues: _Issues, children: list[_Frame]
) -> None:
    """One value (not an array) of an element."""
    kind = spec.kind
    if value is None:
        issues.add(path, "null is not allowed here")
    elif type(value) is list:
        if isinstance(path, tuple) and path[2] is not None:
            issues.add(path, "must not be a JSON array (arrays do not nest)")
        else:
            issues.add(path, "must not be a JSON array (the element does not repeat)")
    elif kind == _STRING:
        if not isinstance(value, str):
            issues.add(path, _MESSAGES[kind])
        elif not value:
            issues.add(path, "empty strings are not allowed")
        elif _CONTROL.search(value):
            # R4 strings hold no characters below U+0020 but tab, CR and LF (datatypes.html).
            issues.add(path, "control characters are not allowed in strings")
    elif kind == _BOOLEAN:
        if value is not True and value is not False:
            issues.add(path, _MESSAGES[kind])
    elif kind == _INTEGER:
        # type(), not isinstance(): a JSON boolean is not a number.
        if type(value) is not int:
            issues.add(path, _MESSAGES[kind])
    elif kind == _DECIMAL:
        if not (
            type(value) is int
            or (type(value) is float and math.isfinite(value))
            # from a JSON parser run with parse_float=Decimal
            or (isinstance(value, Decimal) and value.is_finite())
        ):
            issues.add(path, _MESSAGES[kind])
    elif type(value) is not dict:
        issues.add(path, "must be a JSON object")
    elif not value:
        issues.add(path, "empty objects are not allowed")
    elif kind == _RESOURCE:
        # A resource held in an element says what it is; its own model gives its elements.
        cls = _resource_class(value.get("resourceType"))
        if cls is None:
            issues.add((path, "resourceType", None), "unknown or missing resourceType")
        else:
            children.append((value, cls, path))
    elif spec.child is not None:
        children.append((value, spec.child, path))


@functools.lru_cache(maxsize=256)  # bounded: the names come from the request
def _resource_lookup(name: str) -> type[FHIRAbstractModel] | None:
    if name in _ABSTRACT_RESOURCES or not name.isidentifier():
        return None
    try:
        cls = get_fhir_model_class(name)
    except (ValueError, KeyError, AttributeError, ImportError):
        return None
    if not cls.has_resource_base() or cls.get_resource_type() != name:
        return None
    return cls


def _resource_class(name: object) -> type[FHIRAbstractModel] | None:
    if not isinstance(name, str):
        return None
    return _resource_lookup(name)


@functools.cache
def _schema(model: type[FHIRAbstractModel]) -> Schema:
    """The JSON properties of one model class (introspected once per class)."""
    schema: Schema = {}
    for field in model.model_fields.values():
        name = field.alias
        if name is None or name == "fhir_comments":
            continue  # fhir_comments is a DSTU2 leftover the models keep; not R4 JSON
        kind, is_list, child = _describe(field.annotation)
        if kind is None:
            continue
        schema[name] = ElementSpec(kind, is_list, child, None)
    # Pair each primitive with its ``_name`` companion, in both directions.
    for name, spec in list(schema.items()):
        if name.startswith("_") and name[1:] in schema:
            schema[name] = spec._replace(partner=name[1:])
            value_spec = schema[name[1:]]
            schema[name[1:]] = value_spec._replace(partner=name)
    return schema


def _describe(annotation: Any) -> tuple[int | None, bool, type[FHIRAbstractModel] | None]:
    """(kind, is_list, child model) from a field annotation such as Optional[List[XType]]."""
    is_list = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Union or origin is types.UnionType:
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return None, False, None  # e.g. fhir_comments' str | list[str]
            annotation = members[0]
        elif origin is list:
            is_list = True
            annotation = typing.get_args(annotation)[0]
        else:
            break
    if annotation is bool:
        return _BOOLEAN, is_list, None
    if typing.get_origin(annotation) is typing.Annotated:
        for marker in typing.get_args(annotation)[1:]:
            visit = getattr(marker, "__visit_name__", None)
            if visit is not None:
                return _KIND_OF_VISIT.get(visit, _STRING), is_list, None
        # e.g. uuid's pydantic UUID4: a string in JSON
        return _STRING, is_list, None
    if isinstance(annotation, type) and issubclass(annotation, FhirBase):
        cls = annotation.get_model_klass()
        if cls.__name__ == "Resource":
            return _RESOURCE, is_list, None
        return _COMPLEX, is_list, cls
    return None, False, None
