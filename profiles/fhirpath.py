"""FHIRPath for profile invariants: parsed by fhirpathpy, evaluated by compiled closures.

fhirpathpy interprets its parse tree on every call, at 0.5 to 1 ms for an SDOHCC invariant:
more than the whole budget of a validation. ``compile_expression`` turns the parse tree into
Python closures for the part of FHIRPath that profiles use (navigation, ``where``, ``exists``,
``all``, ``count``, boolean logic, equality, ``extension()``, ``memberOf()``, ``resolve()``,
``is`` on resources ...) and hands anything else to fhirpathpy's own evaluator: at compile time
when the expression uses a construct the closures do not implement, at run time when a value
makes the closures' answer uncertain (a date compared as a string, a primitive with an
extension, a non-boolean operand of ``and``). Both paths give the same answers on what the
closures accept (tests/profiles/test_validator_hypothesis.py holds them to that), but for one
fhirpathpy departure from FHIRPath the closures do not copy: its ``extension(url)`` keeps only
the first extension with that url on each element, the closures keep them all. Expressions are
checked strictly first (``profiles.fhirpath_syntax``): fhirpathpy's parser recovers from errors.

The FHIR-specific functions (http://hl7.org/fhir/R4/fhirpath.html#functions) are wired to the
validator through ``Environment``: ``memberOf`` to the terminology, ``conformsTo`` to the
profiles, ``resolve()`` to a minimal ``{"resourceType", "id"}`` read from a literal reference
(or the contained resource a ``#id`` names), ``htmlChecks()`` to true.

http://hl7.org/fhirpath/N1/
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import fhirpathpy
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models
from fhirpathpy.parser import parse

from profiles.fhirpath_syntax import FhirPathSyntaxError, check_syntax
from profiles.models import RESOURCE_TYPES

__all__ = ["Environment", "Expression", "compile_expression", "reference_target"]

_R4 = models["r4"]

# The value of a FHIRPath expression: a collection of JSON values (and resolved resources).
Collection = list[Any]
# A compiled expression: (the focus its leading term starts from, environment) -> collection.
_Fn = Callable[[Collection, "Environment"], Collection]
# A compiled invocation: (its input, the focus of the enclosing expression, environment).
_Invoke = Callable[[Collection, Collection, "Environment"], Collection]


@dataclass(slots=True)
class Environment:
    """What an evaluation may consult besides the element: the resource and the services."""

    resource: Mapping[str, Any]
    member_of: Callable[[str, str | None, str], bool | None]
    conforms_to: Callable[[Mapping[str, Any], str], bool | None]
    _options: dict[str, Any] | None = field(default=None, repr=False)

    def fhirpathpy_options(self) -> dict[str, Any]:
        """fhirpathpy's table of the FHIR functions, bound to this environment (made once)."""
        if self._options is None:
            self._options = {
                "userInvocationTable": {
                    "memberOf": {"fn": self._member_of, "arity": {1: ["String"]}},
                    "resolve": {"fn": self._resolve},
                    "conformsTo": {"fn": self._conforms_to, "arity": {1: ["String"]}},
                    "htmlChecks": {"fn": lambda inputs: [True]},
                    "hasValue": {"fn": _has_value},
                }
            }
        return self._options

    def _member_of(self, inputs: Collection, url: Any) -> Collection:
        return _member_of(inputs, _text(url), self)

    def _resolve(self, inputs: Collection) -> Collection:
        # ResourceNodes, so that fhirpathpy's ``is`` sees their type.
        return [ResourceNode.create_node(r) for r in _resolve(inputs, self)]

    def _conforms_to(self, inputs: Collection, url: Any) -> Collection:
        return _conforms_to(inputs, _text(url), self)


def _text(value: Any) -> str:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value if isinstance(value, str) else str(value)


class _Fallback(Exception):
    """The closures cannot give a sure answer here: fhirpathpy evaluates the expression."""


class _Unsupported(Exception):
    """A construct the closures do not implement: the expression is left to fhirpathpy."""


class Expression:
    """One FHIRPath expression, parsed once; ``evaluate`` never parses again."""

    __slots__ = ("text", "_parsed", "_fast", "error")

    def __init__(self, text: str) -> None:
        self.text = text
        self._fast: _Fn | None = None
        self._parsed: Any = None
        self.error: str | None = None
        try:
            # fhirpathpy's parser recovers from syntax errors: check strictly first.
            check_syntax(text)
            self._parsed = parse(text)
        except FhirPathSyntaxError as exc:
            self.error = str(exc)
            return
        except Exception:  # fhirpathpy raises plain exceptions of its own
            self.error = "not valid FHIRPath"
            return
        try:
            self._fast = _expression(self._parsed["children"][0])
        except (_Unsupported, KeyError, IndexError, TypeError, ValueError):
            self._fast = None

    @property
    def compiled(self) -> bool:
        """Whether the closures evaluate this expression (else fhirpathpy always does)."""
        return self._fast is not None

    def evaluate(self, focus: Any, path: str, env: Environment) -> Collection:
        """The expression's value on ``focus``, the element at element path ``path``.

        Raises whatever fhirpathpy raises for an expression it cannot evaluate; the caller
        reports that (an invariant that cannot be evaluated is a warning, not a crash)."""
        if self.error is not None:
            raise ValueError(self.error)
        if self._fast is not None:
            try:
                return self._fast([focus], env)
            except _Fallback:
                pass
        return self.evaluate_with_fhirpathpy(focus, path, env)

    def evaluate_with_fhirpathpy(self, focus: Any, path: str, env: Environment) -> Collection:
        """The same value from fhirpathpy's evaluator (the reference the closures follow)."""
        if self.error is not None:
            raise ValueError(self.error)
        node = focus
        if "." in path or path not in RESOURCE_TYPES:
            # The element path gives fhirpathpy the type, so that choice names resolve.
            node = ResourceNode.create_node(focus, path)
        result = fhirpathpy.apply_parsed_path(
            node,
            self._parsed,
            {"resource": env.resource, "rootResource": env.resource, "context": focus},
            _R4,
            env.fhirpathpy_options(),
        )
        return list(result) if isinstance(result, list) else [result]


@functools.lru_cache(maxsize=4096)  # bounded: expressions come from posted definitions
def compile_expression(text: str) -> Expression:
    """The compiled expression for ``text``, shared by every profile that uses it."""
    return Expression(text)


# --- references ---------------------------------------------------------------------------------

_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def reference_target(reference: str) -> tuple[str, str] | None:
    """(resource type, id) of a literal reference: ``Patient/1``, an absolute URL ending in
    ``Patient/1`` (optionally ``/_history/2``); None for ``#id``, ``urn:`` and the unreadable.

    http://hl7.org/fhir/R4/references.html#literal"""
    if not reference or reference[0] == "#" or reference.startswith("urn:") or "?" in reference:
        return None
    parts = reference.rsplit("/", 4)  # the end is all that matters, however long the text
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2 or parts[-2] not in RESOURCE_TYPES or not _ID.fullmatch(parts[-1]):
        return None
    return parts[-2], parts[-1]


def _resolve(inputs: Collection, env: Environment) -> Collection:
    found: Collection = []
    for item in inputs:
        reference = item.get("reference") if isinstance(item, dict) else item
        if not isinstance(reference, str):
            continue
        if reference.startswith("#"):
            for contained in env.resource.get("contained") or ():
                if isinstance(contained, dict) and contained.get("id") == reference[1:]:
                    found.append(contained)
            continue
        target = reference_target(reference)
        if target is not None:
            found.append({"resourceType": target[0], "id": target[1]})
    return found


def _member_of(inputs: Collection, url: str, env: Environment) -> Collection:
    """True if any input is in the value set, false if every one is not, empty if unsure."""
    answers: list[bool | None] = []
    for item in inputs:
        if isinstance(item, str):
            answers.append(env.member_of(url, None, item))
        elif isinstance(item, dict):
            codings = item.get("coding") if "coding" in item else [item]
            for coding in codings if isinstance(codings, list) else ():
                if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                    system = coding.get("system")
                    system = system if isinstance(system, str) else None
                    answers.append(env.member_of(url, system, coding["code"]))
    if True in answers:
        return [True]
    if answers and all(a is False for a in answers):
        return [False]
    return []


def _conforms_to(inputs: Collection, url: str, env: Environment) -> Collection:
    if len(inputs) != 1 or not isinstance(inputs[0], dict):
        return []
    answer = env.conforms_to(inputs[0], url)
    return [] if answer is None else [answer]


def _has_value(inputs: Collection) -> Collection:
    return [len(inputs) == 1 and isinstance(inputs[0], str | int | float | Decimal | bool)]


# --- the compiler -----------------------------------------------------------------------------


def _expression(node: Mapping[str, Any]) -> _Fn:
    kind = node["type"]
    handler = _EXPRESSIONS.get(kind)
    if handler is None:
        raise _Unsupported(kind)
    return handler(node)


def _children(node: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    children: list[Mapping[str, Any]] = node.get("children") or []
    return children


def _operator(node: Mapping[str, Any]) -> str:
    terminal = node.get("terminalNodeText") or []
    return str(terminal[0]) if terminal else ""


def _term(node: Mapping[str, Any]) -> _Fn:
    (inner,) = _children(node)
    kind = inner["type"]
    if kind == "InvocationTerm":
        (invocation,) = _children(inner)
        invoke = _invocation(invocation)
        return lambda focus, env: invoke(focus, focus, env)
    if kind == "LiteralTerm":
        value = _literal(_children(inner)[0])
        return lambda focus, env: list(value)
    if kind == "ParenthesizedTerm":
        return _expression(_children(inner)[0])
    if kind == "ExternalConstantTerm":
        return _constant(_children(inner)[0])
    raise _Unsupported(kind)


def _literal(node: Mapping[str, Any]) -> Collection:
    kind = node["type"]
    text = str(node.get("text", ""))
    if kind == "StringLiteral":
        return [_unescape(text[1:-1])]
    if kind == "BooleanLiteral":
        return [text == "true"]
    if kind == "NullLiteral":
        return []
    if kind == "NumberLiteral":
        try:
            return [int(text)] if text.isdigit() else [Decimal(text)]
        except (ValueError, InvalidOperation) as exc:
            raise _Unsupported(text) from exc
    raise _Unsupported(kind)  # dates, times and quantities: fhirpathpy's types


_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n"}
_ESCAPES.update({"r": "\r", "t": "\t"})


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            following = text[i + 1]
            if following == "u" and i + 6 <= len(text):
                try:
                    out.append(chr(int(text[i + 2 : i + 6], 16)))
                except ValueError as exc:
                    raise _Unsupported("escape") from exc
                i += 6
                continue
            if following not in _ESCAPES:
                raise _Unsupported("escape")
            out.append(_ESCAPES[following])
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out)


_CONSTANTS = {
    "ucum": "http://unitsofmeasure.org",
    "sct": "http://snomed.info/sct",
    "loinc": "http://loinc.org",
}


def _constant(node: Mapping[str, Any]) -> _Fn:
    children = _children(node)
    if len(children) != 1 or children[0]["type"] != "Identifier":
        raise _Unsupported("constant")
    name = str(children[0].get("text", ""))
    if name in ("resource", "rootResource"):
        return lambda focus, env: [env.resource]
    if name in _CONSTANTS:
        value = _CONSTANTS[name]
        return lambda focus, env: [value]
    raise _Unsupported(name)  # %context and %`vs-...`: fhirpathpy knows them


def _invocation_expression(node: Mapping[str, Any]) -> _Fn:
    left_node, invocation = _children(node)
    left = _expression(left_node)
    invoke = _invocation(invocation)
    return lambda focus, env: invoke(left(focus, env), focus, env)


def _indexer(node: Mapping[str, Any]) -> _Fn:
    left_node, index_node = _children(node)
    left = _expression(left_node)
    index = _expression(index_node)

    def indexer(focus: Collection, env: Environment) -> Collection:
        items = left(focus, env)
        position = index(focus, env)
        if len(position) != 1 or type(position[0]) is not int:
            raise _Fallback
        i = position[0]
        return [items[i]] if 0 <= i < len(items) else []

    return indexer


def _invocation(node: Mapping[str, Any]) -> _Invoke:
    kind = node["type"]
    if kind == "MemberInvocation":
        (identifier,) = _children(node)
        return _member(_identifier(identifier))
    if kind == "ThisInvocation":
        return lambda items, focus, env: items
    if kind == "FunctionInvocation":
        (function,) = _children(node)
        parts = _children(function)
        name = _identifier(parts[0])
        params = _children(parts[1]) if len(parts) > 1 else []
        builder = _FUNCTIONS.get(name)
        if builder is None:
            raise _Unsupported(name)
        return builder(params)
    raise _Unsupported(kind)


def _identifier(node: Mapping[str, Any]) -> str:
    text = str(node.get("text", ""))
    if text.startswith("`") and text.endswith("`"):
        text = text[1:-1]
    return text


def _choice_keys() -> dict[str, tuple[str, ...]]:
    """For each choice element name (``value``), every JSON name it may take in R4."""
    keys: dict[str, set[str]] = {}
    for path, type_names in _R4["choiceTypePaths"].items():
        base = path.rsplit(".", 1)[-1]
        keys.setdefault(base, set()).update(base + t[0].upper() + t[1:] for t in type_names)
    return {base: tuple(sorted(names)) for base, names in keys.items()}


_CHOICES = _choice_keys()


def _member(name: str) -> _Invoke:
    if name == "FHIR" or not name:
        raise _Unsupported(name)
    if name[0].isupper():
        # A type name as the first step (``Observation.status``) selects resources of that type.
        return lambda items, focus, env: [
            i for i in items if isinstance(i, dict) and i.get("resourceType") == name
        ]
    companion = "_" + name
    choices = _CHOICES.get(name, ())

    def member(items: Collection, focus: Collection, env: Environment) -> Collection:
        found: Collection = []
        for item in items:
            if type(item) is not dict:
                continue
            if name in item:
                value = item[name]
                if companion in item:
                    raise _Fallback  # a primitive with extensions: fhirpathpy merges them
            else:
                for key in choices:
                    if key in item:
                        if "_" + key in item:
                            raise _Fallback
                        value = item[key]
                        break
                else:
                    continue
            if type(value) is list:
                found.extend(v for v in value if v is not None)
            elif value is not None:
                found.append(value)
        return found

    return member


# -- functions --


def _no_params(params: list[Mapping[str, Any]], name: str) -> None:
    if params:
        raise _Unsupported(name)


def _string_param(params: list[Mapping[str, Any]], name: str) -> str:
    """The one parameter, a string literal (the only form the closures take)."""
    if len(params) != 1 or params[0]["type"] != "TermExpression":
        raise _Unsupported(name)
    (term,) = _children(params[0])
    if term["type"] != "LiteralTerm":
        raise _Unsupported(name)
    (literal,) = _children(term)
    if literal["type"] != "StringLiteral":
        raise _Unsupported(name)
    return _unescape(str(literal.get("text", ""))[1:-1])


def _criteria(params: list[Mapping[str, Any]], name: str) -> _Fn:
    if len(params) != 1:
        raise _Unsupported(name)
    return _expression(params[0])


def _truth(value: Collection) -> bool:
    """Whether criteria hold for an item: a single true (or non-boolean) value."""
    if not value:
        return False
    if len(value) > 1:
        raise _Fallback
    return value[0] is not False


def _fn_exists(params: list[Mapping[str, Any]]) -> _Invoke:
    if not params:
        return lambda items, focus, env: [bool(items)]
    criteria = _criteria(params, "exists")
    return lambda items, focus, env: [any(_truth(criteria([i], env)) for i in items)]


def _fn_where(params: list[Mapping[str, Any]]) -> _Invoke:
    criteria = _criteria(params, "where")
    return lambda items, focus, env: [i for i in items if _truth(criteria([i], env))]


def _fn_all(params: list[Mapping[str, Any]]) -> _Invoke:
    criteria = _criteria(params, "all")
    return lambda items, focus, env: [all(_truth(criteria([i], env)) for i in items)]


def _fn_select(params: list[Mapping[str, Any]]) -> _Invoke:
    criteria = _criteria(params, "select")
    return lambda items, focus, env: [r for i in items for r in criteria([i], env)]


def _fn_empty(params: list[Mapping[str, Any]]) -> _Invoke:
    _no_params(params, "empty")
    return lambda items, focus, env: [not items]


def _fn_count(params: list[Mapping[str, Any]]) -> _Invoke:
    _no_params(params, "count")
    return lambda items, focus, env: [len(items)]


def _fn_not(params: list[Mapping[str, Any]]) -> _Invoke:
    _no_params(params, "not")

    def negate(items: Collection, focus: Collection, env: Environment) -> Collection:
        value = _boolean(items)
        return [] if value is None else [not value]

    return negate


def _fn_first(params: list[Mapping[str, Any]]) -> _Invoke:
    _no_params(params, "first")
    return lambda items, focus, env: items[:1]


def _fn_last(params: list[Mapping[str, Any]]) -> _Invoke:
    _no_params(params, "last")
    return lambda items, focus, env: items[-1:]


def _fn_distinct(params: list[Mapping[str, Any]]) -> _Invoke:
    _no_params(params, "distinct")
    return lambda items, focus, env: _distinct(items)


def _fn_extension(params: list[Mapping[str, Any]]) -> _Invoke:
    url = _string_param(params, "extension")

    def extension(items: Collection, focus: Collection, env: Environment) -> Collection:
        found: Collection = []
        for item in items:
            if type(item) is dict:
                for ext in item.get("extension") or ():
                    if type(ext) is dict and ext.get("url") == url:
                        found.append(ext)
        return found

    return extension


def _fn_member_of(params: list[Mapping[str, Any]]) -> _Invoke:
    url = _string_param(params, "memberOf")
    return lambda items, focus, env: _member_of(items, url, env)


def _fn_conforms_to(params: list[Mapping[str, Any]]) -> _Invoke:
    url = _string_param(params, "conformsTo")
    return lambda items, focus, env: _conforms_to(items, url, env)


def _fn_resolve(params: list[Mapping[str, Any]]) -> _Invoke:
    _no_params(params, "resolve")
    return lambda items, focus, env: _resolve(items, env)


def _fn_html_checks(params: list[Mapping[str, Any]]) -> _Invoke:
    _no_params(params, "htmlChecks")
    return lambda items, focus, env: [True]


def _fn_has_value(params: list[Mapping[str, Any]]) -> _Invoke:
    _no_params(params, "hasValue")
    return lambda items, focus, env: _has_value(items)


def _fn_of_type(params: list[Mapping[str, Any]]) -> _Invoke:
    type_name = _type_param(params)

    def of_type(items: Collection, focus: Collection, env: Environment) -> Collection:
        return [i for i in items if _is_type(i, type_name)]

    return of_type


def _type_param(params: list[Mapping[str, Any]]) -> str:
    # ofType(Quantity) parses as a member invocation of the type name.
    if len(params) != 1:
        raise _Unsupported("ofType")
    node = params[0]
    while node["type"] in ("TermExpression", "InvocationTerm", "MemberInvocation"):
        (node,) = _children(node)
    if node["type"] != "Identifier":
        raise _Unsupported("ofType")
    return _identifier(node)


_FUNCTIONS: dict[str, Callable[[list[Mapping[str, Any]]], _Invoke]] = {
    "exists": _fn_exists,
    "where": _fn_where,
    "all": _fn_all,
    "select": _fn_select,
    "empty": _fn_empty,
    "count": _fn_count,
    "not": _fn_not,
    "first": _fn_first,
    "last": _fn_last,
    "distinct": _fn_distinct,
    "extension": _fn_extension,
    "memberOf": _fn_member_of,
    "conformsTo": _fn_conforms_to,
    "resolve": _fn_resolve,
    "htmlChecks": _fn_html_checks,
    "hasValue": _fn_has_value,
    "ofType": _fn_of_type,
}


# -- types --

_NON_DOMAIN = frozenset({"Bundle", "Binary", "Parameters"})


def _is_type(item: Any, type_name: str) -> bool:
    """``item is type_name``, where the closures can tell: resources only."""
    if type_name.startswith("FHIR."):
        type_name = type_name[5:]
    if type(item) is not dict or not isinstance(item.get("resourceType"), str):
        raise _Fallback  # an element's type needs its definition: fhirpathpy has it
    resource_type = item["resourceType"]
    if type_name == "Resource":
        return True
    if type_name == "DomainResource":
        return resource_type not in _NON_DOMAIN
    return bool(resource_type == type_name)


def _type_expression(node: Mapping[str, Any]) -> _Fn:
    left_node, specifier = _children(node)
    operator = _operator(node)
    if operator not in ("is", "as"):
        raise _Unsupported(operator)
    left = _expression(left_node)
    type_name = ".".join(
        _identifier(n) for n in _children(_children(specifier)[0]) if n["type"] == "Identifier"
    )

    def test(focus: Collection, env: Environment) -> Collection:
        items = left(focus, env)
        if not items:
            return []
        if len(items) > 1:
            raise _Fallback
        matches = _is_type(items[0], type_name)
        if operator == "is":
            return [matches]
        return items if matches else []

    return test


# -- operators --


def _boolean(value: Collection) -> bool | None:
    """A collection as a boolean operand: empty is unknown; anything but one boolean is left
    to fhirpathpy (which raises for it)."""
    if not value:
        return None
    if len(value) == 1 and type(value[0]) is bool:
        return bool(value[0])
    raise _Fallback


def _logic(node: Mapping[str, Any]) -> _Fn:
    left_node, right_node = _children(node)
    left = _expression(left_node)
    right = _expression(right_node)
    operator = _operator(node)

    def and_(focus: Collection, env: Environment) -> Collection:
        a = _boolean(left(focus, env))
        if a is False:
            return [False]
        b = _boolean(right(focus, env))
        if b is False:
            return [False]
        return [True] if a and b else []

    def or_(focus: Collection, env: Environment) -> Collection:
        a = _boolean(left(focus, env))
        if a is True:
            return [True]
        b = _boolean(right(focus, env))
        if b is True:
            return [True]
        return [False] if a is False and b is False else []

    def xor(focus: Collection, env: Environment) -> Collection:
        a = _boolean(left(focus, env))
        b = _boolean(right(focus, env))
        return [] if a is None or b is None else [a != b]

    def implies(focus: Collection, env: Environment) -> Collection:
        a = _boolean(left(focus, env))
        if a is False:
            return [True]
        b = _boolean(right(focus, env))
        if a is True:
            return [] if b is None else [b]
        return [True] if b is True else []

    handlers = {"and": and_, "or": or_, "xor": xor, "implies": implies}
    if operator not in handlers:
        raise _Unsupported(operator)
    return handlers[operator]


# A date, dateTime or time in its JSON form (http://hl7.org/fhir/R4/datatypes.html#dateTime).
_TEMPORAL = re.compile(
    r"\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?"
    r"|T?\d{2}:\d{2}(:\d{2}(\.\d+)?)?"
)


def _equal(a: Any, b: Any) -> bool:
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    if isinstance(a, str) and isinstance(b, str):
        if a == b:
            return True
        if _TEMPORAL.fullmatch(a) and _TEMPORAL.fullmatch(b):
            raise _Fallback  # dates compare by precision and time zone, not as strings
        return False
    if isinstance(a, str) or isinstance(b, str):
        return False
    if isinstance(a, float) or isinstance(b, float):
        raise _Fallback
    return bool(a == b)


def _distinct(items: Collection) -> Collection:
    unique: Collection = []
    for item in items:
        if not any(_equal(item, seen) for seen in unique):
            unique.append(item)
    return unique


def _equality(node: Mapping[str, Any]) -> _Fn:
    left_node, right_node = _children(node)
    left = _expression(left_node)
    right = _expression(right_node)
    operator = _operator(node)
    if operator not in ("=", "!="):
        raise _Unsupported(operator)  # ~ and !~: fhirpathpy's equivalence
    negate = operator == "!="

    def equality(focus: Collection, env: Environment) -> Collection:
        a = left(focus, env)
        b = right(focus, env)
        if not a or not b:
            return []
        same = len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
        return [same != negate]

    return equality


def _number(value: Collection) -> int | Decimal | None:
    if not value:
        return None
    if len(value) == 1 and type(value[0]) in (int, Decimal):
        number: int | Decimal = value[0]
        return number
    raise _Fallback  # floats, strings (dates) and collections: fhirpathpy's rules


def _inequality(node: Mapping[str, Any]) -> _Fn:
    left_node, right_node = _children(node)
    left = _expression(left_node)
    right = _expression(right_node)
    compare = {
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
    }.get(_operator(node))
    if compare is None:
        raise _Unsupported(_operator(node))

    def inequality(focus: Collection, env: Environment) -> Collection:
        a = _number(left(focus, env))
        b = _number(right(focus, env))
        return [] if a is None or b is None else [compare(a, b)]

    return inequality


def _additive(node: Mapping[str, Any]) -> _Fn:
    left_node, right_node = _children(node)
    left = _expression(left_node)
    right = _expression(right_node)
    operator = _operator(node)
    if operator not in ("+", "-"):
        raise _Unsupported(operator)  # & and the rest: fhirpathpy

    def additive(focus: Collection, env: Environment) -> Collection:
        a = _number(left(focus, env))
        b = _number(right(focus, env))
        if a is None or b is None:
            return []
        return [a + b if operator == "+" else a - b]

    return additive


def _union(node: Mapping[str, Any]) -> _Fn:
    left_node, right_node = _children(node)
    left = _expression(left_node)
    right = _expression(right_node)
    return lambda focus, env: _distinct(left(focus, env) + right(focus, env))


def _membership(node: Mapping[str, Any]) -> _Fn:
    left_node, right_node = _children(node)
    left = _expression(left_node)
    right = _expression(right_node)
    operator = _operator(node)
    if operator not in ("in", "contains"):
        raise _Unsupported(operator)

    def membership(focus: Collection, env: Environment) -> Collection:
        a = left(focus, env)
        b = right(focus, env)
        element, collection = (a, b) if operator == "in" else (b, a)
        if not element:
            return []
        if len(element) > 1:
            raise _Fallback
        return [any(_equal(element[0], item) for item in collection)]

    return membership


_EXPRESSIONS: dict[str, Callable[[Mapping[str, Any]], _Fn]] = {
    "TermExpression": _term,
    "InvocationExpression": _invocation_expression,
    "IndexerExpression": _indexer,
    "AndExpression": _logic,
    "OrExpression": _logic,
    "ImpliesExpression": _logic,
    "EqualityExpression": _equality,
    "InequalityExpression": _inequality,
    "AdditiveExpression": _additive,
    "UnionExpression": _union,
    "MembershipExpression": _membership,
    "TypeExpression": _type_expression,
}
