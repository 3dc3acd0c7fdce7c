"""StructureDefinitions compiled into element trees: what a profile requires of each element.

A profile is given as a differential over the R4 base or over another profile
(http://hl7.org/fhir/R4/profiling.html). ``compile_profile`` applies the differentials of a
chain (R4 base -> US Core -> SDOHCC), root-most first, onto one tree of ``Element`` rules keyed
the way element ids are (``Observation.category:us-core.coding``): a parent's rules stay, a
child's tighten them (the larger ``min``, the smaller ``max``, the stronger binding; invariants,
fixed values and patterns accumulate), a child may constrain a slice its parent defined or add
slices to its slicing. The base types' structure comes from the R4 models
(``profiles.models.element_children``), not from the base StructureDefinitions: base
cardinalities and types are checked by the models before a profile is.

Everything a validation needs is computed here once per profile: the JSON names of each
element, the slice tests of every discriminator, the compiled invariants, and which elements
carry any rule at all (the validator walks only those).

Errors: ``InvalidDefinition`` (a ValueError) for a StructureDefinition this server cannot use;
its message names the definition and the element, never instance data.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from profiles.fhirpath import Expression, compile_expression
from profiles.models import RESOURCE_TYPES, element_children

__all__ = [
    "BASE",
    "Binding",
    "Discriminator",
    "Element",
    "InvalidDefinition",
    "Invariant",
    "Profile",
    "SliceTest",
    "Slicing",
    "Step",
    "compile_profile",
    "split_canonical",
]

BASE = "http://hl7.org/fhir/StructureDefinition/"

_STRENGTHS = {"example": 0, "preferred": 1, "extensible": 2, "required": 3}
_RULES = ("closed", "open", "openAtEnd")
_DISCRIMINATOR_TYPES = ("value", "pattern", "type", "profile", "exists")
_DIGITS = re.compile(r"\d{1,9}")
_TYPE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")
# The extension elements, which are sliced by url unless a profile says otherwise.
_EXTENSIONS = ("extension", "modifierExtension")


class InvalidDefinition(ValueError):
    """A StructureDefinition this server cannot use; the message says which and why."""


def split_canonical(url: str) -> tuple[str, str | None]:
    """``url|version`` as (url, version); (url, None) without a version."""
    if "|" in url:
        base, _, version = url.partition("|")
        return base, version or None
    return url, None


@dataclass(frozen=True, slots=True)
class Binding:
    strength: str
    value_set: str  # the canonical without its |version


@dataclass(frozen=True, slots=True)
class Invariant:
    key: str
    severity: str  # "error" | "warning"
    human: str
    expression: Expression


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a discriminator path: ``$this``, an element name, ``extension('url')``,
    ``resolve()`` or ``ofType(T)``. ``json_types`` gives a name step's JSON names and types."""

    kind: str  # "this" | "name" | "extension" | "resolve" | "type"
    name: str = ""
    json_types: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Discriminator:
    type: str
    path: str
    steps: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class Slicing:
    discriminators: tuple[Discriminator, ...]
    rules: str
    ordered: bool


@dataclass(frozen=True, slots=True)
class SliceTest:
    """What one discriminator requires of an item for it to belong to one slice."""

    discriminator: Discriminator
    fixed: tuple[Any, ...] = ()
    patterns: tuple[Any, ...] = ()
    value_set: str | None = None  # a required binding standing in for a value
    exists: bool | None = None
    types: frozenset[str] = frozenset()  # type codes, or resource types after resolve()
    profiles: tuple[str, ...] = ()  # profiles the item must conform to ($this)
    # The slice says nothing at the discriminator's path: the test does not tell it apart
    # (SDOHCC's race and ethnicity components slice by value, but one slice has no value set).
    vacuous: bool = False


@dataclass(eq=False, slots=True)
class Element:
    """The compiled rules of one element (or slice) of a profile.

    ``path`` is the element path without slice names (``Observation.category``), ``name`` the
    element's FHIRPath name (``value`` for ``value[x]``). ``max`` None is unbounded.
    ``allowed_types`` None allows every type the base allows; ``targets`` None allows a
    reference to any resource type.
    """

    id: str
    path: str
    name: str
    slice_name: str | None = None
    min: int = 0
    max: int | None = None
    is_list: bool = False
    choice: bool = False
    json_types: dict[str, str] = field(default_factory=dict)
    children_of: dict[str, str] = field(default_factory=dict)
    context: str | None = None  # element_children() name of this element's elements, if fixed
    allowed_types: frozenset[str] | None = None
    targets: frozenset[str] | None = None
    target_profiles: tuple[str, ...] = ()
    type_profiles: tuple[str, ...] = ()
    fixed: list[Any] = field(default_factory=list)
    patterns: list[Any] = field(default_factory=list)
    binding: Binding | None = None
    invariants: dict[str, Invariant] = field(default_factory=dict)
    must_support: bool = False
    children: dict[str, Element] = field(default_factory=dict)
    slicing: Slicing | None = None
    slices: dict[str, Element] = field(default_factory=dict)
    # Filled in by _finish:
    tests: tuple[SliceTest, ...] = ()
    by_json: dict[str, Element] = field(default_factory=dict)  # children with rules
    by_json_all: dict[str, Element] = field(default_factory=dict)  # ... or must-support ones
    required: tuple[Element, ...] = ()  # children with min >= 1 or a required slice
    must_support_children: tuple[Element, ...] = ()
    has_rules: bool = False
    has_must_support: bool = False

    def children_context(self) -> str | None:
        """The element_children() name for this element's own elements."""
        if self.context is not None:
            return self.context
        codes = self.allowed_types or frozenset(self.json_types.values())
        if len(codes) == 1:
            return self.children_of.get(next(iter(codes)))
        return "Element"  # several types: only what every element has (id, extension)


@dataclass(frozen=True, slots=True)
class Profile:
    """A compiled profile: its identity and its element tree."""

    url: str
    version: str | None
    name: str | None
    type: str
    kind: str
    abstract: bool
    root: Element
    definition: Mapping[str, Any]
    depends_on: frozenset[str]  # canonical urls the compiled rules were built from


# --- compiling ----------------------------------------------------------------------------------


def compile_profile(
    chain: Sequence[Mapping[str, Any]], type_of: Callable[[str], str | None]
) -> Profile:
    """Compile a profile from its chain of definitions, the R4 base's child first.

    ``chain`` is every definition from the one right above the base type to the profile
    itself; ``type_of`` gives the type a canonical (of a known profile or a base type)
    constrains, or None if unknown. Raises InvalidDefinition.
    """
    if not chain:
        raise InvalidDefinition("no definition to compile")
    definition = chain[-1]
    for item in chain:
        check_definition(item)
    type_name = str(definition["type"])
    depends: set[str] = set()

    def resolve_type(url: str) -> str | None:
        canonical = split_canonical(url)[0]
        depends.add(canonical)
        return type_of(canonical)

    root = Element(id=type_name, path=type_name, name=type_name, context=type_name)
    for item in chain:
        if item["type"] != type_name:
            raise InvalidDefinition(
                f"{_label(definition)}: its base {_label(item)} constrains {item['type']},"
                f" not {type_name}"
            )
        builder = _Builder(item, root, resolve_type)
        for element in _differential(item):
            builder.apply(element)
        depends.add(str(item["url"]))
    _finish(root, definition, resolve_type)
    return Profile(
        url=str(definition["url"]),
        version=definition.get("version") if isinstance(definition.get("version"), str) else None,
        name=definition.get("name") if isinstance(definition.get("name"), str) else None,
        type=type_name,
        kind=str(definition.get("kind")),
        abstract=definition.get("abstract") is True,
        root=root,
        definition=definition,
        depends_on=frozenset(depends),
    )


def base_profile(type_name: str) -> Profile:
    """The R4 base type itself as a profile: no rules beyond the base structure."""
    root = Element(id=type_name, path=type_name, name=type_name, context=type_name)
    kind = "resource" if type_name in RESOURCE_TYPES else "complex-type"
    url = BASE + type_name
    return Profile(url, "4.0.1", type_name, type_name, kind, False, root, {}, frozenset())


def check_definition(definition: Mapping[str, Any]) -> None:
    """Raise InvalidDefinition unless the definition is a profile this module can compile."""
    if not isinstance(definition, Mapping) or definition.get("resourceType") != (
        "StructureDefinition"
    ):
        raise InvalidDefinition("not a StructureDefinition")
    url = definition.get("url")
    if not isinstance(url, str) or not url:
        raise InvalidDefinition("a StructureDefinition needs a url")
    label = _label(definition)
    type_name = definition.get("type")
    if not isinstance(type_name, str) or not _TYPE_NAME.fullmatch(type_name):
        raise InvalidDefinition(f"{label}: type is missing")
    if not element_children(type_name):
        raise InvalidDefinition(f"{label}: {type_name} is not an R4 resource or datatype")
    if definition.get("derivation", "constraint") != "constraint":
        raise InvalidDefinition(f"{label}: only constraints (derivation 'constraint') are used")
    if definition.get("kind", "resource") not in ("resource", "complex-type"):
        raise InvalidDefinition(f"{label}: only resource and complex-type profiles are used")
    base = definition.get("baseDefinition")
    if not isinstance(base, str) or not base:
        raise InvalidDefinition(f"{label}: baseDefinition is missing")
    _differential(definition)


def _label(definition: Mapping[str, Any]) -> str:
    return f"StructureDefinition {definition.get('url')}"


def _differential(definition: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The differential's elements (the snapshot's when there is no differential)."""
    for part in ("differential", "snapshot"):
        section = definition.get(part)
        if section is None:
            continue
        elements = section.get("element") if isinstance(section, Mapping) else None
        if not isinstance(elements, list) or not all(isinstance(e, Mapping) for e in elements):
            raise InvalidDefinition(f"{_label(definition)}: {part}.element must be a list")
        return elements
    return []


class _Builder:
    """Applies one definition's differential onto the tree."""

    def __init__(
        self,
        definition: Mapping[str, Any],
        root: Element,
        resolve_type: Callable[[str], str | None],
    ) -> None:
        self.definition = definition
        self.label = _label(definition)
        self.root = root
        self.resolve_type = resolve_type
        # Elements without an id take their slice from the last sliceName seen on their path.
        self.open_slices: dict[str, str] = {}

    def fail(self, element_id: str, message: str) -> InvalidDefinition:
        return InvalidDefinition(f"{self.label}: element {element_id}: {message}")

    def apply(self, element: Mapping[str, Any]) -> None:
        element_id = self.element_id(element)
        node = self.node(element_id)
        self.cardinality(node, element, element_id)
        self.types(node, element, element_id)
        for key, value in element.items():
            if key.startswith("fixed") and key[5:6].isupper():
                _add_unique(node.fixed, value)
            elif key.startswith("pattern") and key[7:8].isupper():
                _add_unique(node.patterns, value)
        self.binding(node, element.get("binding"), element_id)
        self.constraints(node, element.get("constraint"), element_id)
        if element.get("mustSupport") is True:
            node.must_support = True
        if element.get("slicing") is not None:
            node.slicing = self.slicing(node, element["slicing"], element_id)

    # -- ids and nodes --

    def element_id(self, element: Mapping[str, Any]) -> str:
        given = element.get("id")
        if isinstance(given, str) and given:
            return given
        path = element.get("path")
        if not isinstance(path, str) or not path:
            raise InvalidDefinition(f"{self.label}: an element has neither id nor path")
        # http://hl7.org/fhir/R4/elementdefinition.html#id: the path, with each sliced
        # ancestor's slice name after it.
        parts = path.split(".")
        built: list[str] = []
        for depth in range(len(parts)):
            prefix = ".".join(parts[: depth + 1])
            part = parts[depth]
            if depth < len(parts) - 1 and prefix in self.open_slices:
                part += ":" + self.open_slices[prefix]
            built.append(part)
        slice_name = element.get("sliceName")
        if isinstance(slice_name, str) and slice_name:
            self.open_slices[path] = slice_name
            built[-1] += ":" + slice_name
        else:
            self.open_slices.pop(path, None)
        return ".".join(built)

    def node(self, element_id: str) -> Element:
        segments = element_id.split(".")
        head = segments[0].split(":", 1)[0]
        if head != self.root.path:
            raise self.fail(element_id, f"the path is not under {self.root.path}")
        if ":" in segments[0]:
            raise self.fail(element_id, "the root element cannot be sliced")
        node = self.root
        for segment in segments[1:]:
            name, _, slice_name = segment.partition(":")
            node, type_slice = self.child(node, name, element_id)
            if type_slice is not None:
                node = self.slice(node, type_slice, element_id)
            if slice_name:
                for part in slice_name.split("/"):
                    node = self.slice(node, part, element_id)
        return node

    def child(self, parent: Element, name: str, element_id: str) -> tuple[Element, str | None]:
        """The element ``name`` below ``parent`` (created on first use), and the type slice a
        concrete choice name (``valueQuantity``) stands for."""
        context = parent.children_context()
        infos = element_children(context) if context else {}
        type_slice = None
        base = name[:-3] if name.endswith("[x]") else name
        info = infos.get(base)
        if info is None:
            for candidate in infos.values():
                if candidate.choice and name in candidate.types:
                    info, type_slice = candidate, name
                    break
        if info is None or (name.endswith("[x]") and not info.choice):
            raise self.fail(element_id, f"{name} is not an element of {context or parent.path}")
        node = parent.children.get(info.name)
        if node is None:
            path_name = info.name + "[x]" if info.choice else info.name
            node = Element(
                id=f"{parent.id}.{path_name}",
                path=f"{parent.path}.{path_name}",
                name=info.name,
                is_list=info.is_list,
                choice=info.choice,
                json_types=info.types,
                children_of=info.children_of,
            )
            parent.children[info.name] = node
        return node, type_slice

    def slice(self, element: Element, slice_name: str, element_id: str) -> Element:
        found = element.slices.get(slice_name)
        if found is not None:
            return found
        node = Element(
            id=f"{element.id}:{slice_name}",
            path=element.path,
            name=element.name,
            slice_name=slice_name,
            is_list=element.is_list,
            choice=element.choice,
            json_types=element.json_types,
            children_of=element.children_of,
            allowed_types=element.allowed_types,
            targets=element.targets,
            target_profiles=element.target_profiles,
        )
        if element.choice and slice_name in element.json_types:
            # A type slice (value[x]:valueQuantity): the value of that type.
            node.allowed_types = frozenset({element.json_types[slice_name]})
        element.slices[slice_name] = node
        return node

    # -- properties --

    def cardinality(self, node: Element, element: Mapping[str, Any], element_id: str) -> None:
        low = element.get("min")
        if low is not None:
            if type(low) is not int or low < 0:
                raise self.fail(element_id, "min must be a non-negative integer")
            node.min = max(node.min, low)
        high = element.get("max")
        if high is not None:
            if high == "*":
                return
            if not isinstance(high, str) or not _DIGITS.fullmatch(high):
                raise self.fail(element_id, "max must be '*' or a non-negative integer")
            node.max = int(high) if node.max is None else min(node.max, int(high))
        if node.max is not None and node.min > node.max:
            raise self.fail(element_id, f"min {node.min} is more than max {node.max}")

    def types(self, node: Element, element: Mapping[str, Any], element_id: str) -> None:
        given = element.get("type")
        if given is None:
            return
        if not isinstance(given, list) or not all(isinstance(t, Mapping) for t in given):
            raise self.fail(element_id, "type must be a list")
        codes: set[str] = set()
        targets: list[str] = []
        profiles: list[str] = []
        for entry in given:
            code = entry.get("code")
            if not isinstance(code, str) or not code:
                raise self.fail(element_id, "a type has no code")
            if code.startswith("http://hl7.org/fhirpath/"):
                continue  # the System types of id and url elements
            codes.add(code)
            if code == "Reference":
                targets.extend(_strings(entry.get("targetProfile"), element_id, self))
            profiles.extend(_strings(entry.get("profile"), element_id, self))
        if node.choice and codes:
            unknown = codes - set(node.json_types.values())
            if unknown:
                raise self.fail(
                    element_id, f"{', '.join(sorted(unknown))} is not a type of {node.path}"
                )
            node.allowed_types = frozenset(codes) & (node.allowed_types or frozenset(codes))
        if targets:
            node.target_profiles = tuple(targets)
            resolved = [self.resolve_type(url) for url in targets]
            node.targets = (
                None
                if any(t is None or t in ("Resource", "DomainResource") for t in resolved)
                else frozenset(t for t in resolved if t is not None)
            )
        if profiles:
            node.type_profiles = tuple(profiles)

    def binding(self, node: Element, binding: Any, element_id: str) -> None:
        if binding is None:
            return
        if not isinstance(binding, Mapping) or binding.get("strength") not in _STRENGTHS:
            raise self.fail(element_id, "binding.strength must be required, extensible, ...")
        value_set = binding.get("valueSet")
        if not isinstance(value_set, str) or not value_set:
            return  # a binding described in words only: nothing to check
        new = Binding(str(binding["strength"]), split_canonical(value_set)[0])
        if node.binding is None or _STRENGTHS[new.strength] >= _STRENGTHS[node.binding.strength]:
            node.binding = new

    def constraints(self, node: Element, constraints: Any, element_id: str) -> None:
        if constraints is None:
            return
        if not isinstance(constraints, list):
            raise self.fail(element_id, "constraint must be a list")
        for constraint in constraints:
            if not isinstance(constraint, Mapping):
                raise self.fail(element_id, "a constraint must be an object")
            key, expression = constraint.get("key"), constraint.get("expression")
            if not isinstance(key, str) or not key:
                raise self.fail(element_id, "a constraint has no key")
            if not isinstance(expression, str) or not expression:
                continue  # an XPath-only constraint: nothing we can evaluate
            compiled = compile_expression(expression)
            if compiled.error is not None:
                raise self.fail(element_id, f"constraint {key}: {compiled.error}")
            severity = "warning" if constraint.get("severity") == "warning" else "error"
            human = constraint.get("human")
            node.invariants[key] = Invariant(
                key, severity, human if isinstance(human, str) else key, compiled
            )

    def slicing(self, node: Element, slicing: Any, element_id: str) -> Slicing:
        if not isinstance(slicing, Mapping):
            raise self.fail(element_id, "slicing must be an object")
        rules = slicing.get("rules", "open")
        if rules not in _RULES:
            raise self.fail(element_id, "slicing.rules must be closed, open or openAtEnd")
        given = slicing.get("discriminator") or []
        if not isinstance(given, list):
            raise self.fail(element_id, "slicing.discriminator must be a list")
        discriminators = []
        for item in given:
            if not isinstance(item, Mapping) or item.get("type") not in _DISCRIMINATOR_TYPES:
                raise self.fail(element_id, "a discriminator type must be value, pattern, ...")
            path = item.get("path")
            if not isinstance(path, str) or not path:
                raise self.fail(element_id, "a discriminator has no path")
            steps = self.steps(node, path, element_id)
            discriminators.append(Discriminator(str(item["type"]), path, steps))
        return Slicing(tuple(discriminators), str(rules), slicing.get("ordered") is True)

    def steps(self, node: Element, path: str, element_id: str) -> tuple[Step, ...]:
        """A discriminator path as steps, each name step with its JSON names and types."""
        steps: list[Step] = []
        context = node.children_context()
        for part in _split_path(path):
            if part == "$this":
                steps.append(Step("this"))
                continue
            if part == "resolve()":
                steps.append(Step("resolve"))
                context = None
                continue
            match = re.fullmatch(r"extension\('([^']+)'\)", part)
            if match:
                steps.append(Step("extension", match.group(1)))
                context = "Extension"
                continue
            match = re.fullmatch(r"ofType\(([A-Za-z]+)\)", part)
            if match:
                steps.append(Step("type", match.group(1)))
                context = element_children(match.group(1)) and match.group(1) or "Element"
                continue
            infos = element_children(context) if context else {}
            info = infos.get(part[:-3] if part.endswith("[x]") else part)
            if info is None:
                raise self.fail(element_id, f"discriminator path '{path}' is not supported here")
            steps.append(Step("name", info.name, info.types))
            codes = set(info.types.values())
            context = info.children_of.get(codes.pop()) if len(codes) == 1 else "Element"
        return tuple(steps)


def _split_path(path: str) -> list[str]:
    """A discriminator path's steps: split on the dots outside parentheses."""
    parts: list[str] = []
    depth = 0
    current = ""
    for char in path:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "." and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def _strings(value: Any, element_id: str, builder: _Builder) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise builder.fail(element_id, "profile and targetProfile must be lists of canonicals")
    return list(value)


def _add_unique(values: list[Any], value: Any) -> None:
    if not any(v == value for v in values):
        values.append(value)


# --- finishing: defaults, slice tests, lookups ----------------------------------------------


def _finish(
    node: Element, definition: Mapping[str, Any], resolve_type: Callable[[str], str | None]
) -> tuple[bool, bool]:
    """Fill in what validation looks up, bottom-up. Returns whether the subtree has any rule,
    and whether it has any must-support element (walked only for $validate)."""
    label = _label(definition)
    has_rules = bool(
        node.min
        or node.max is not None
        or node.allowed_types is not None
        or node.targets is not None
        or node.type_profiles
        or node.fixed
        or node.patterns
        or (node.binding is not None and node.binding.strength in ("required", "extensible"))
        or node.invariants
        or (node.slicing is not None and node.slicing.rules == "closed")
    )
    has_must_support = node.must_support
    for child in node.children.values():
        rules, must_support = _finish(child, definition, resolve_type)
        has_rules = has_rules or rules
        has_must_support = has_must_support or must_support
    if node.slices:
        if node.slicing is None:
            node.slicing = _default_slicing(node, label)
        for slice_node in node.slices.values():
            _, must_support = _finish(slice_node, definition, resolve_type)
            has_must_support = has_must_support or must_support
            slice_node.tests = tuple(
                _slice_test(slice_node, d, label, resolve_type) for d in node.slicing.discriminators
            )
            if slice_node.tests and all(t.vacuous for t in slice_node.tests):
                paths = ", ".join(f"{d.type} '{d.path}'" for d in node.slicing.discriminators)
                raise InvalidDefinition(
                    f"{label}: slice {slice_node.id} cannot be told apart from other items:"
                    f" it has no value, pattern, binding, type or profile at {paths}"
                )
        has_rules = True
    node.by_json = {}
    node.by_json_all = {}
    for child in node.children.values():
        for key, code in child.json_types.items():
            names = (key, "_" + key) if code[:1].islower() else (key,)  # a primitive's _key
            for name in names:
                if child.has_rules:
                    node.by_json[name] = child
                if child.has_rules or child.has_must_support:
                    node.by_json_all[name] = child
    node.required = tuple(
        c for c in node.children.values() if c.min > 0 or any(s.min > 0 for s in c.slices.values())
    )
    node.must_support_children = tuple(
        c
        for c in node.children.values()
        if c.must_support or any(s.must_support for s in c.slices.values())
    )
    node.has_rules = has_rules
    node.has_must_support = has_must_support
    return has_rules, has_must_support


def _default_slicing(node: Element, label: str) -> Slicing:
    """The slicing an element has when slices are defined but no slicing is written."""
    if node.name in _EXTENSIONS:
        # http://hl7.org/fhir/R4/profiling.html#slicing: extensions are sliced by url.
        steps = (Step("name", "url", {"url": "uri"}),)
        return Slicing((Discriminator("value", "url", steps),), "open", False)
    if node.choice and all(name in node.json_types for name in node.slices):
        return Slicing((Discriminator("type", "$this", (Step("this"),)),), "open", False)
    raise InvalidDefinition(f"{label}: element {node.id} has slices but no slicing")


def _slice_test(
    slice_node: Element,
    discriminator: Discriminator,
    label: str,
    resolve_type: Callable[[str], str | None],
) -> SliceTest:
    """What ``discriminator`` requires of an item of ``slice_node``, read from the slice's
    rules at the discriminator's path."""
    node: Element | None = slice_node
    previous: Element | None = None
    # Fixed values and patterns of an ancestor, followed down the path.
    fixed: list[Any] = []
    patterns: list[Any] = []
    resolved = False
    restricted: str | None = None
    for step in discriminator.steps:
        if step.kind == "this":
            continue
        if step.kind == "resolve":
            resolved = True
            continue
        if step.kind == "type":
            restricted = step.name
            continue
        if node is not None:
            fixed = [*fixed, *node.fixed]
            patterns = [*patterns, *node.patterns]
        previous = node
        if step.kind == "extension":
            node = _extension_slice(node, step.name)
            fixed, patterns = [], []
            continue
        fixed = _project(fixed, step.json_types)
        patterns = _project(patterns, step.json_types)
        node = node.children.get(step.name) if node is not None else None
    kind = discriminator.type
    if kind in ("value", "pattern"):
        if node is not None:
            fixed = [*fixed, *node.fixed]
            patterns = [*patterns, *node.patterns]
        if fixed or patterns:
            return SliceTest(discriminator, fixed=tuple(fixed), patterns=tuple(patterns))
        if node is not None and node.binding is not None and node.binding.strength == "required":
            return SliceTest(discriminator, value_set=node.binding.value_set)
        if (
            previous is not None
            and discriminator.steps[-1].name == "url"
            and previous.type_profiles
        ):
            # An extension slice is named by its definition's url.
            return SliceTest(discriminator, fixed=(previous.type_profiles[0],))
        return SliceTest(discriminator, vacuous=True)
    if kind == "exists":
        if node is not None and node.min > 0:
            return SliceTest(discriminator, exists=True)
        if node is not None and node.max == 0:
            return SliceTest(discriminator, exists=False)
        return SliceTest(discriminator, vacuous=True)
    if node is not None and resolved and node.target_profiles:
        # Checked by type only: the target is not read (http://hl7.org/fhir/R4/references.html).
        types = {resolve_type(url) for url in node.target_profiles}
        return SliceTest(discriminator, types=frozenset(t for t in types if t is not None))
    if kind == "type":
        if restricted is not None:
            return SliceTest(discriminator, types=frozenset({restricted}))
        if node is not None and node.allowed_types is not None:
            return SliceTest(discriminator, types=node.allowed_types)
        return SliceTest(discriminator, vacuous=True)
    if node is not None and not resolved and node.type_profiles:
        return SliceTest(discriminator, profiles=node.type_profiles)
    return SliceTest(discriminator, vacuous=True)


def _extension_slice(node: Element | None, url: str) -> Element | None:
    """The slice of ``node.extension`` for extensions with ``url``."""
    if node is None:
        return None
    extensions = node.children.get("extension")
    if extensions is None:
        return None
    for candidate in extensions.slices.values():
        if url in candidate.type_profiles:
            return candidate
        url_node = candidate.children.get("url")
        if url_node is not None and url in url_node.fixed:
            return candidate
    return None


def _project(values: Iterable[Any], json_types: Mapping[str, str]) -> list[Any]:
    """The parts of fixed values or patterns at one more step down (arrays flattened)."""
    found: list[Any] = []
    for value in values:
        if not isinstance(value, Mapping):
            continue
        for key in json_types:
            if key in value:
                part = value[key]
                found.extend(part if isinstance(part, list) else [part])
    return found
