"""One CodeSystem indexed for look-ups: its concepts, its is-a hierarchy, and compose filters.

Spec: http://hl7.org/fhir/R4/codesystem.html. The hierarchy comes from nested ``concept``
elements and from the ``parent`` and ``child`` properties
(http://hl7.org/fhir/R4/codesystem.html#hierarchy); a concept may have several parents, and
cycles in badly made content end the walk instead of looping. It means subsumption unless
``hierarchyMeaning`` says otherwise (grouped-by, part-of, classified-with), in which case the
is-a operations see every code as standing alone.

Codes are keyed as given when the code system is case-sensitive and case-folded when
``caseSensitive`` is false; ``caseSensitive`` absent counts as true (R4 leaves it unspecified,
and exact comparison cannot wrongly accept a code).

Anything malformed in the resource (a concept without a string code, a property without a
value) is skipped, not raised: a code system from elsewhere must not make every look-up fail.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

import re2

from terminology.errors import InvalidDefinition, UnsupportedFilter, quote
from terminology.results import Coding, Designation, Property

__all__ = ["HIERARCHY_OPS", "SUPPORTED_OPS", "CodeSystemIndex", "ConceptRecord", "is_code"]

# http://hl7.org/fhir/R4/valueset-filter-operator.html
HIERARCHY_OPS = frozenset({"is-a", "descendent-of", "is-not-a", "generalizes"})
SUPPORTED_OPS = HIERARCHY_OPS | {"=", "in", "not-in", "regex", "exists"}
# Filters on these properties mean the concept itself (code), or its display.
_CODE_PROPERTIES = frozenset({"concept", "code"})
_PARENT_PROPERTIES = frozenset({"parent", "subsumedBy"})
_REGEX_LIMIT = 1000
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # an error is the client's, and said to it

_VALUE_TYPES: dict[str, str] = {
    "valueCode": "code",
    "valueCoding": "Coding",
    "valueString": "string",
    "valueInteger": "integer",
    "valueBoolean": "boolean",
    "valueDateTime": "dateTime",
    "valueDecimal": "decimal",
}


def is_code(value: object) -> TypeGuard[str]:
    """A usable code: a non-empty string (R4 code: no leading or trailing whitespace)."""
    return isinstance(value, str) and bool(value) and value.strip() == value


@dataclass(frozen=True, slots=True)
class ConceptRecord:
    code: str
    display: str | None
    designations: tuple[Designation, ...]
    properties: tuple[Property, ...]


class CodeSystemIndex:
    """The codes of one CodeSystem resource, looked up by key (see ``key``)."""

    def __init__(self, resource: Mapping[str, Any], *, case_sensitive: bool) -> None:
        self.resource = resource
        self.url: str = resource["url"]
        version = resource.get("version")
        self.version: str | None = version if isinstance(version, str) else None
        name = resource.get("name")
        if not isinstance(name, str):
            name = resource.get("title")
        self.name: str | None = name if isinstance(name, str) else None
        content = resource.get("content")
        self.content: str = content if isinstance(content, str) else "complete"
        # Only a complete code system says which codes do *not* exist; fragment, example,
        # not-present and supplement content leave every other code unknown.
        self.complete = self.content == "complete"
        self.case_sensitive = case_sensitive
        meaning = resource.get("hierarchyMeaning")
        self.subsumption = meaning is None or meaning == "is-a"
        self.concepts: dict[str, ConceptRecord] = {}
        self._parents: dict[str, list[str]] = {}
        self._children: dict[str, list[str]] = {}
        self._ancestors: dict[str, frozenset[str]] = {}
        self._descendants: dict[str, frozenset[str]] = {}
        self._index(resource.get("concept"))

    # --- look-up ---------------------------------------------------------------------------

    def key(self, code: str) -> str:
        return code if self.case_sensitive else code.casefold()

    def find(self, code: str) -> ConceptRecord | None:
        return self.concepts.get(self.key(code))

    def code_of(self, key: str) -> str:
        """The code as the code system spells it (keys of unheld codes are returned as is)."""
        record = self.concepts.get(key)
        return key if record is None else record.code

    def parents(self, key: str) -> tuple[str, ...]:
        return tuple(self._parents.get(key, ()))

    def children(self, key: str) -> tuple[str, ...]:
        return tuple(self._children.get(key, ()))

    def ancestors(self, key: str) -> frozenset[str]:
        """The key and every key above it by is-a."""
        if not self.subsumption:
            return frozenset((key,))
        found = self._ancestors.get(key)
        if found is None:
            found = self._ancestors[key] = _closure(key, self._parents)
        return found

    def descendants(self, key: str) -> frozenset[str]:
        """The key and every key below it by is-a."""
        if not self.subsumption:
            return frozenset((key,))
        found = self._descendants.get(key)
        if found is None:
            found = self._descendants[key] = _closure(key, self._children)
        return found

    # --- compose filters -------------------------------------------------------------------

    def select(self, prop: str, op: str, value: str) -> list[str]:
        """Keys of the held concepts that pass one compose filter, in definition order.

        http://hl7.org/fhir/R4/valueset-definitions.html#ValueSet.compose.include.filter
        """
        if op not in SUPPORTED_OPS:
            raise UnsupportedFilter(
                f"Filter operator {quote(op)} is not supported here (on CodeSystem "
                f"{quote(self.url)}); supported: {', '.join(sorted(SUPPORTED_OPS))}"
            )
        if op in HIERARCHY_OPS:
            return self._select_hierarchy(prop, op, value)
        test = self._test(prop, op, value)
        return [key for key, record in self.concepts.items() if test(key, record)]

    def _select_hierarchy(self, prop: str, op: str, value: str) -> list[str]:
        if prop not in _CODE_PROPERTIES:
            raise UnsupportedFilter(
                f"Filter {quote(op)} is supported on the property 'concept' (or 'code'), "
                f"not {quote(prop)} (CodeSystem {quote(self.url)})"
            )
        root = self.key(value)
        if op == "generalizes":
            above = self.ancestors(root) if root in self.concepts else frozenset()
            return [key for key in self.concepts if key in above]
        below = self.descendants(root) if root in self.concepts else frozenset()
        if op == "is-a":
            return [key for key in self.concepts if key in below]
        if op == "descendent-of":
            return [key for key in self.concepts if key in below and key != root]
        # is-not-a: neither the value nor anything below it (descendants include the value).
        return [key for key in self.concepts if key not in below]

    def _test(self, prop: str, op: str, value: str) -> Callable[[str, ConceptRecord], bool]:
        values = self._values_of(prop)
        if op == "=":
            wanted = self.key(value) if prop in _CODE_PROPERTIES else value
            return lambda key, record: wanted in values(key, record)
        if op in ("in", "not-in"):
            listed = {part.strip() for part in value.split(",") if part.strip()}
            if prop in _CODE_PROPERTIES:
                listed = {self.key(part) for part in listed}
            inside = op == "in"
            return lambda key, record: inside == any(v in listed for v in values(key, record))
        if op == "regex":
            pattern = _compile_regex(value, self.url)
            return lambda key, record: any(
                pattern.fullmatch(v) is not None for v in values(key, record)
            )
        # exists
        flag = value.strip().lower()
        if flag not in ("true", "false"):
            raise InvalidDefinition(
                f"Filter 'exists' on {quote(prop)} needs the value true or false, "
                f"not {quote(value)}"
            )
        want = flag == "true"
        return lambda key, record: want == bool(values(key, record))

    def _values_of(self, prop: str) -> Callable[[str, ConceptRecord], Sequence[str]]:
        """How to read the string values of one property of a concept, for filters."""
        if prop in _CODE_PROPERTIES:
            # Keys, so that "=" and "in" on codes follow case-sensitivity.
            return lambda key, record: (key,)
        if prop == "display":
            return lambda key, record: () if record.display is None else (record.display,)
        if prop in _PARENT_PROPERTIES:
            return lambda key, record: tuple(self.code_of(k) for k in self.parents(key))
        if prop == "child":
            return lambda key, record: tuple(self.code_of(k) for k in self.children(key))
        return lambda key, record: tuple(
            _as_text(p.value) for p in record.properties if p.code == prop
        )

    # --- building --------------------------------------------------------------------------

    def _index(self, concepts: object) -> None:
        edges: list[tuple[str, str]] = []  # (parent key, child key)
        for concept, parent_code in _walk(concepts):
            code: str = concept["code"]
            key = self.key(code)
            if parent_code is not None:
                edges.append((self.key(parent_code), key))
            properties = tuple(_properties(concept.get("property")))
            for p in properties:
                related = _related_code(p)
                if related is None:
                    continue
                if p.code in _PARENT_PROPERTIES:
                    edges.append((self.key(related), key))
                elif p.code == "child":
                    edges.append((key, self.key(related)))
            if key in self.concepts:  # a repeated code: the first definition stands
                continue
            display = concept.get("display")
            self.concepts[key] = ConceptRecord(
                code=code,
                display=display if isinstance(display, str) else None,
                designations=tuple(_designations(concept.get("designation"))),
                properties=properties,
            )
        for parent, child in edges:
            if parent == child:
                continue
            siblings = self._children.setdefault(parent, [])
            if child not in siblings:
                siblings.append(child)
                self._parents.setdefault(child, []).append(parent)


def _closure(start: str, edges: Mapping[str, Sequence[str]]) -> frozenset[str]:
    seen = {start}
    todo = [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return frozenset(seen)


def _walk(concepts: object) -> Iterator[tuple[Mapping[str, Any], str | None]]:
    """Every concept with a usable code, depth first in document order, with its parent's code.

    The children of a concept without a usable code hang from the nearest usable ancestor.
    Iterative, so deep nesting cannot exhaust the stack.
    """
    stack: list[tuple[Iterator[object], str | None]] = [(iter(_as_list(concepts)), None)]
    while stack:
        items, parent = stack[-1]
        item = next(items, _END)
        if item is _END:
            stack.pop()
            continue
        if not isinstance(item, Mapping):
            continue
        code = item.get("code")
        own = code if is_code(code) else None
        if own is not None:
            yield item, parent
        nested = item.get("concept")
        if nested:
            stack.append((iter(_as_list(nested)), own if own is not None else parent))


_END = object()


def _as_list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _properties(raw: object) -> Iterator[Property]:
    for item in _as_list(raw):
        if not isinstance(item, Mapping) or not is_code(item.get("code")):
            continue
        for element, type_ in _VALUE_TYPES.items():
            if element in item:
                value = _property_value(type_, item[element])
                if value is not None:
                    yield Property(item["code"], type_, value)
                break


def _property_value(type_: str, raw: object) -> str | int | float | bool | Coding | None:
    if type_ in ("code", "string", "dateTime"):
        return raw if isinstance(raw, str) else None
    if type_ == "boolean":
        return raw if isinstance(raw, bool) else None
    if type_ == "integer":
        return raw if isinstance(raw, int) and not isinstance(raw, bool) else None
    if type_ == "decimal":
        return raw if isinstance(raw, int | float) and not isinstance(raw, bool) else None
    return _coding(raw)


def _coding(raw: object) -> Coding | None:
    if not isinstance(raw, Mapping):
        return None
    system, code, display = raw.get("system"), raw.get("code"), raw.get("display")
    return Coding(
        system if isinstance(system, str) else None,
        code if isinstance(code, str) else None,
        display if isinstance(display, str) else None,
    )


def _related_code(p: Property) -> str | None:
    """The code a parent or child property points at."""
    if isinstance(p.value, Coding):
        value: object = p.value.code
    elif p.type in ("code", "string"):
        value = p.value
    else:
        return None
    return value if isinstance(value, str) and is_code(value) else None


def _as_text(value: object) -> str:
    if isinstance(value, Coding):
        return value.code or ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _designations(raw: object) -> Iterator[Designation]:
    for item in _as_list(raw):
        if not isinstance(item, Mapping) or not isinstance(item.get("value"), str):
            continue
        language = item.get("language")
        yield Designation(
            value=item["value"],
            language=language if isinstance(language, str) else None,
            use=_coding(item.get("use")),
        )


def _compile_regex(value: str, url: str) -> Any:
    """The pattern, compiled with RE2: a value set posted by a client carries it, and RE2 runs in
    time linear in the text (Python's ``re`` backtracks: ``(a|a)*X`` took seconds on a display,
    blocking the server). Absurdly long patterns are refused."""
    if len(value) > _REGEX_LIMIT:
        raise InvalidDefinition(f"A regex filter on CodeSystem {quote(url)} is too long")
    try:
        return re2.compile(value, _RE2_OPTIONS)
    except (re2.error, TypeError, ValueError) as exc:
        raise InvalidDefinition(
            f"A regex filter on CodeSystem {quote(url)} is not a valid pattern"
        ) from exc
