"""The R4 JSON representation rules the lax pydantic models let through (types, nulls, empties).

http://hl7.org/fhir/R4/json.html

``check_structure`` goes further: it is a fast stand-in for the models' whole verdict (about 15
times faster), for bulk loads. See its docstring for how it relates to the models.
"""

from __future__ import annotations

import calendar
import collections
import functools
import math
import re
import types
import typing
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
from fhir.resources.R4B import get_fhir_model_class
from fhir_core import constraints as _constraints
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from fhir_core.types import FhirBase

__all__ = ["MAX_ISSUES", "check_json_rules", "check_structure"]

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
    # Only in check_structure's shapes: the format of a string primitive (a message when the
    # value breaks it), and the range of an integer primitive.
    check: Callable[[str], str | None] | None = None
    low: int | None = None
    high: int | None = None


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
            kind, is_list, child, partner, _, _, _ = spec
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
        elif spec.check is not None and (message := spec.check(value)) is not None:
            issues.add(path, message)
    elif kind == _BOOLEAN:
        if value is not True and value is not False:
            issues.add(path, _MESSAGES[kind])
    elif kind == _INTEGER:
        # type(), not isinstance(): a JSON boolean is not a number.
        if type(value) is not int:
            issues.add(path, _MESSAGES[kind])
        elif spec.low is not None and spec.high is not None and not spec.low <= value <= spec.high:
            issues.add(path, f"must be between {spec.low} and {spec.high}")
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


# --- the models' verdict, fast ----------------------------------------------------------------


def check_structure(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(element path, message) for every way ``data`` breaks the base R4 structure; empty if none.

    What ``check_json_rules`` checks, and what the models check on top of it: unknown elements,
    missing required elements (a required primitive may stand as an extension alone), more than
    one value for a choice element, the primitive formats (the R4 regexes of
    http://hl7.org/fhir/R4/datatypes.html, as the models apply them, and real calendar dates) and
    the integer ranges. At most MAX_ISSUES.

    An empty answer means that ``profiles.models.validate_resource`` accepts the resource too
    (tests/fhir_server/ingest/test_ndjson.py holds it to that on the SDOHCC examples, the
    synthetic population and mutated resources), at about a fifteenth of the cost. Where the
    models' acceptance is subtle this reports an issue without deciding: uuid and base64Binary
    values outside their plain forms, url values that are neither plain http(s) URLs nor
    relative paths, and the ``fhir_comments`` and ``resource_type`` properties the models
    tolerate. A non-empty answer is therefore a refusal to confirm with the models where that
    matters (a bulk load confirms, and reports the models' own issues).
    """
    if not isinstance(data, dict):
        return [("", "a resource must be a JSON object")]
    cls = _resource_class(data.get("resourceType"))
    if cls is None:
        return [("resourceType", "unknown or missing resourceType")]
    issues = _Issues()
    try:
        _walk_structure(data, cls, issues)
    except _Full:
        pass
    return list(issues)


# Strings already found good, per format: codes, systems and displays repeat across resources,
# and a set lookup costs less than the checks. Bounded: past the bound, the checks run.
# Likewise whole top-level elements (a category, a code, meta), by their JSON text: the verdict
# on an element depends on its type and value alone. Past the bound that set starts again.
_KNOWN_MAX = 50_000
_GOOD_TREES: set[tuple[type[FHIRAbstractModel], str, bytes]] = set()
_GOOD_STRINGS: collections.defaultdict[Callable[[str], str | None] | None, set[str]] = (
    collections.defaultdict(set)
)


class _Shape(typing.NamedTuple):
    """What the models require of one element type, beyond each property's own form."""

    elements: dict[str, ElementSpec]
    type_name: str  # what a ``resourceType`` property inside it may say
    required: tuple[str, ...]  # complex elements that must be present
    required_values: tuple[str, ...]  # primitives: a value, or an extension in ``_name``
    choices: tuple[tuple[tuple[str, ...], bool], ...]  # (the names of one choice, required)


def _walk_structure(data: dict[str, Any], cls: type[FHIRAbstractModel], issues: _Issues) -> None:
    """Each complex top-level element on its own, skipped when its JSON text is known good;
    then the others, then what the resource requires."""
    shape = _shape(cls)
    path = data["resourceType"]
    rest: dict[str, Any] = {}
    for key, value in data.items():
        spec = shape.elements.get(key)
        if (
            spec is None
            or spec.kind < _COMPLEX
            or spec.partner is not None
            or not value
            or type(value) not in (dict, list)
        ):
            rest[key] = value
            continue
        try:
            memo = (cls, key, orjson.dumps(value))
        except TypeError:  # not from a JSON text (a Decimal, a large integer): no memo
            rest[key] = value
            continue
        if memo in _GOOD_TREES:
            continue
        part = {key: value}
        before = len(issues)
        _walk_frames([(part, cls, path)], part, issues)
        if len(issues) == before:
            if len(_GOOD_TREES) >= _KNOWN_MAX:
                _GOOD_TREES.clear()
            _GOOD_TREES.add(memo)
    _walk_frames([(rest, cls, path)], rest, issues)
    _check_presence(data, shape, path, issues)


def _walk_frames(stack: list[_Frame], partial: dict[str, Any], issues: _Issues) -> None:
    # _walk's loop with the shapes' specs (which carry the formats) and the checks per element;
    # ``partial`` holds some of the resource's elements, so what it requires is not checked.
    push = stack.append
    good = _GOOD_STRINGS
    while stack:
        obj, model, path = stack.pop()
        shape = _shape(model)
        elements = shape.elements
        mark = len(stack)
        for key, value in obj.items():
            spec = elements.get(key)
            if spec is None:
                if key != "resourceType" or value != shape.type_name:
                    issues.add((path, key, None), "unknown element")
                continue
            kind, is_list, child, partner, check, _, _ = spec
            if not is_list:
                if kind == _STRING:
                    if type(value) is str:
                        known = good[check]
                        if value in known:
                            continue
                        if (
                            value
                            and not _CONTROL.search(value)
                            and (check is None or check(value) is None)
                        ):
                            if len(known) < _KNOWN_MAX:
                                known.add(value)
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
            elif (
                kind == _STRING
                and type(value) is list
                and value
                and (partner is None or partner not in obj)
                and _all_good(value, check, good[check])
            ):
                continue  # a repeating primitive, every value known good
            else:
                _check_list(spec, obj, value, (path, key, None), issues, stack)
        if (shape.required or shape.required_values or shape.choices) and obj is not partial:
            _check_presence(obj, shape, path, issues)
        if len(stack) - mark > 1:
            stack[mark:] = stack[mark:][::-1]


def _all_good(
    values: list[Any], check: Callable[[str], str | None] | None, known: set[str]
) -> bool:
    for value in values:
        if type(value) is not str:
            return False
        if value in known:
            continue
        if not value or _CONTROL.search(value) or (check is not None and check(value) is not None):
            return False
        if len(known) < _KNOWN_MAX:
            known.add(value)
    return True


def _check_presence(obj: dict[str, Any], shape: _Shape, path: Path, issues: _Issues) -> None:
    for name in shape.required:
        if obj.get(name) is None:
            issues.add((path, name, None), "required element is missing")
    for name in shape.required_values:
        if obj.get(name) is None:
            extension = obj.get("_" + name)
            if type(extension) is not dict or not extension.get("extension"):
                # A repeating primitive given by its extensions alone trips the models over
                # their own feet: left to them.
                issues.add((path, name, None), "required element is missing")
    for names, required in shape.choices:
        present = [name for name in names if obj.get(name) is not None]
        if len(present) > 1:
            issues.add((path, present[1], None), f"only one of {', '.join(present)} is allowed")
        elif required and not present:
            issues.add((path, names[0], None), f"one of {', '.join(names)} is required")


@functools.cache
def _shape(model: type[FHIRAbstractModel]) -> _Shape:
    elements: dict[str, ElementSpec] = {}
    required: list[str] = []
    required_values: list[str] = []
    choices: dict[str, tuple[list[str], bool]] = {}
    for name, spec in _schema(model).items():
        field = model.model_fields[_field_names(model)[name]]
        check, low, high = _format_of(field.annotation)
        elements[name] = spec._replace(check=check, low=low, high=high)
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if field.is_required():
            required.append(name)
        elif extra.get("element_required"):
            required_values.append(name)
        if "one_of_many" in extra:
            prefix = str(extra["one_of_many"])
            names, _ = choices.get(prefix, ([], False))
            choices[prefix] = ([*names, name], extra.get("one_of_many_required") is True)
    return _Shape(
        elements,
        model.__resource_type__,
        tuple(required),
        tuple(required_values),
        tuple((tuple(names), needed) for names, needed in choices.values()),
    )


def _field_names(model: type[FHIRAbstractModel]) -> dict[str, str]:
    return {field.alias: name for name, field in model.model_fields.items() if field.alias}


def _format_of(
    annotation: Any,
) -> tuple[Callable[[str], str | None] | None, int | None, int | None]:
    """(format check, low, high) of a primitive's annotation, such as Optional[List[CodeType]]."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Union or origin is types.UnionType:
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return None, None, None
            annotation = members[0]
        elif origin is list:
            annotation = typing.get_args(annotation)[0]
        else:
            break
    if typing.get_origin(annotation) is not typing.Annotated:
        return None, None, None
    for marker in typing.get_args(annotation)[1:]:
        visit = getattr(marker, "__visit_name__", None)
        if visit in _INTEGER_VISITS:
            return None, marker.min_length, marker.max_length
        if visit is not None:
            return _FORMATS.get(visit, _undecided), None, None
    return _undecided, None, None  # e.g. uuid's pydantic UUID4


_INTEGER_VISITS = frozenset({"integer", "positiveInt", "unsignedInt"})


def _undecided(value: str) -> str | None:
    return "the models decide on this value"


def _pattern(regex: str, message: str) -> Callable[[str], str | None]:
    # The models run their patterns in pydantic-core's Rust regex, where $ is the end of the
    # text; fullmatch is the same.
    matcher = re.compile(regex).fullmatch

    def check(value: str) -> str | None:
        return None if matcher(value) is not None else message

    return check


# "String should match [ \r\n\t\S]+" (searched): at least one character that is not Unicode
# whitespace other than space, tab, CR, LF.
_SOME_TEXT = re.compile(r"[ \r\n\t\S]").search


def _string(value: str) -> str | None:
    return None if _SOME_TEXT(value) is not None else "must hold more than whitespace"


def _id_check() -> Callable[[str], str | None]:
    pattern = _constraints.TYPES_ID_PATTERN
    longest = _constraints.TYPES_ID_MAX_LENGTH
    matcher = re.compile(pattern.removeprefix("^").removesuffix("$")).fullmatch if pattern else None

    def check(value: str) -> str | None:
        if longest is not None and len(value) > longest:
            return f"an id has at most {longest} characters"
        if matcher is not None and matcher(value) is None:
            return "an id has only letters, digits, '-' and '.'"
        return None

    return check


_YEAR = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_ZONE = r"(Z|[+\-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
_CLOCK = r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
_DAY = r"(0[1-9]|[1-2][0-9]|3[0-1])"
_MONTH = r"(0[1-9]|1[0-2])"
_DATE = re.compile(f"{_YEAR}(-{_MONTH}(-{_DAY})?)?").fullmatch
_DATE_TIME = re.compile(f"{_YEAR}(-{_MONTH}(-{_DAY}(T{_CLOCK}{_ZONE})?)?)?").fullmatch
_INSTANT = re.compile(f"{_YEAR}-{_MONTH}-{_DAY}T{_CLOCK}{_ZONE}").fullmatch


def _real_day(value: str) -> bool:
    """A full date (YYYY-MM-DD...) names a day of the calendar (no 30 February)."""
    if len(value) < 10:
        return True
    return int(value[8:10]) <= calendar.monthrange(int(value[0:4]), int(value[5:7]))[1]


def _date(value: str) -> str | None:
    if _DATE(value) is None:
        return "a date is YYYY, YYYY-MM or YYYY-MM-DD"
    return None if _real_day(value) else "not a day of the calendar"


def _date_time(value: str) -> str | None:
    if _DATE_TIME(value) is None:
        return "a dateTime is YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss+zz:zz"
    return None if _real_day(value) else "not a day of the calendar"


def _instant(value: str) -> str | None:
    if _INSTANT(value) is None:
        return "an instant is YYYY-MM-DDThh:mm:ss(.sss)+zz:zz"
    return None if _real_day(value) else "not a day of the calendar"


# url: pydantic's AnyUrl, or else a relative path whose first segment is [A-Za-z0-9\-.#]+.
# Only the forms both surely accept pass here: no port, no IP address, no IDNA label.
_LABEL = r"(?!xn--)[A-Za-z0-9]([A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
_PLAIN_URL = re.compile(
    rf"https?://({_LABEL}\.)*(?![0-9]+(?![A-Za-z0-9\-]))({_LABEL})(/[!#-~]*)?([?#][!-~]*)?"
).fullmatch
_RELATIVE = re.compile(r"/?[A-Za-z0-9\-.#]+(?![^\s?/])").match


def _url(value: str) -> str | None:
    if _PLAIN_URL(value) is not None or _RELATIVE(value) is not None:
        return None
    return "the models decide on this url"


# base64Binary: pydantic decodes with the lenient base64.b64decode; the strict form surely decodes.
_BASE64 = re.compile(r"([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?").fullmatch


def _base64(value: str) -> str | None:
    return None if _BASE64(value) is not None else "the models decide on this base64 value"


_FORMATS: dict[str, Callable[[str], str | None] | None] = {
    "string": _string,
    "code": _pattern(r"[^\s]+(\s[^\s]+)*", "a code has no leading, trailing or double whitespace"),
    "id": _id_check(),
    "oid": _pattern(r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+", "an oid is urn:oid: and digits"),
    "date": _date,
    "dateTime": _date_time,
    "instant": _instant,
    "time": _pattern(_CLOCK, "a time is hh:mm:ss"),
    "url": _url,
    "base64Binary": _base64,
    # The models' patterns for these match any string (\S* and \s*(\S|\s)*, searched).
    "uri": None,
    "canonical": None,
    "markdown": None,
    "xhtml": None,
}
