"""Profile validation: does a resource meet a profile's rules, and where does it not.

``Validator.validate`` walks the resource's JSON against a compiled profile
(``profiles.structure``): cardinality of elements and slices, allowed types of choice elements,
reference target types, fixed values and patterns, bindings (through the terminology),
slicing (discriminators value, pattern, type, profile, exists; rules closed, open, openAtEnd;
ordered), invariants (FHIRPath, ``profiles.fhirpath``) and the extensions a profile names.
http://hl7.org/fhir/R4/profiling.html, http://hl7.org/fhir/R4/elementdefinition.html

The base structure (R4 cardinalities, JSON types, unknown elements) is not checked here: the
server validates with the models first. So the walk visits only the elements a profile says
something about, and a resource the models refused may still be handed in (odd JSON types,
huge arrays, deep nesting): that yields issues, never an exception.

Each issue's ``expression`` is a FHIRPath from the resource type with ``[i]`` after every
element that is a JSON array (``Observation.category[1].coding[0]``), choice elements by their
FHIRPath name (``Observation.value``), and a missing element at the path it would have
(``Task.authoredOn``). Issues come in document order: an element's own issues, then its
children's in the order of the JSON, then the children it lacks. Messages name elements,
slices, codes and systems, never other values of the resource (no PII).

Errors: ``UnknownProfile`` (a LookupError) for a profile the registry does not know;
``InvalidDefinition`` (a ValueError) from the registry for a definition it cannot use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from profiles.fhirpath import Environment, reference_target
from profiles.models import RESOURCE_TYPES
from profiles.registry import ProfileRegistry
from profiles.structure import (
    Binding,
    Element,
    InvalidDefinition,
    Invariant,
    Profile,
    SliceTest,
    Slicing,
)

__all__ = [
    "MAX_ISSUES",
    "InvalidDefinition",
    "Profile",
    "ProfileRegistry",
    "TerminologyLike",
    "UnknownProfile",
    "ValidationIssue",
    "Validator",
]

# A validation stops after this many issues (a hostile resource could have millions).
MAX_ISSUES = 200
# How deep objects nest through the profile's rules (extensions in extensions ...) before the
# walk gives up on that branch, and how deep conformsTo() and profile discriminators recurse.
_MAX_DEPTH = 64
_MAX_CONFORMANCE_DEPTH = 3

_QUANTITIES = frozenset({"Quantity", "Age", "Count", "Distance", "Duration", "Money"})


@dataclass(frozen=True, slots=True)
class ValidationIssue:
    """One way a resource breaks a profile (or a note on what could not be checked)."""

    severity: str  # "error" | "warning" | "information"
    code: str  # an OperationOutcome issue type: required, value, code-invalid, invariant, ...
    message: str
    expression: str


class UnknownProfile(LookupError):
    """The profile is not in the registry."""

    def __init__(self, url: str) -> None:
        super().__init__(f"the profile {url} is not known")
        self.url = url


class TerminologyLike(Protocol):
    """What the validator asks of the terminology (``terminology.service.Terminology``)."""

    def member_of(self, value_set: str, system: str | None, code: str) -> bool | None:
        """Whether the code is in the value set; None when that cannot be told."""
        ...

    def value_set(self, url: str, version: str | None = None) -> Mapping[str, Any] | None:
        """The ValueSet resource, None if unknown."""
        ...


class Validator:
    """Validates resources against the registry's profiles, with the terminology's codes."""

    def __init__(self, profiles: ProfileRegistry, terminology: TerminologyLike) -> None:
        self.profiles = profiles
        self.terminology = terminology
        self._known_value_sets: dict[str, bool] = {}

    def validate(
        self, resource: Mapping[str, Any], profile: str, *, must_support: bool = False
    ) -> list[ValidationIssue]:
        """The issues of ``resource`` against ``profile`` (a canonical, optionally |version).

        ``must_support`` adds an information issue for each must-support element that is
        absent where its parent is present ($validate). Raises UnknownProfile; and
        InvalidDefinition if the profile's stored definition cannot be compiled (the
        registry refuses such definitions when they are added, so only a bundled one can)."""
        compiled = self.profiles.get(profile)
        if compiled is None:
            raise UnknownProfile(profile)
        run = _Run(self, resource, must_support, 0)
        try:
            run.validate(compiled)
        except _Full:
            run.issues.append(
                ValidationIssue(
                    "information",
                    "too-costly",
                    f"validation stopped after {MAX_ISSUES} issues",
                    compiled.type,
                )
            )
        return run.issues

    # -- terminology, guarded: a terminology failure is "cannot tell", never a crash --

    def member_of(self, value_set: str, system: str | None, code: str) -> bool | None:
        try:
            answer = self.terminology.member_of(value_set, system, code)
        except Exception:  # the terminology's own errors (an unusable value set ...)
            return None
        return answer if answer is True or answer is False else None

    def value_set_known(self, url: str) -> bool:
        known = self._known_value_sets.get(url)
        if known is None:
            try:
                known = self.terminology.value_set(url) is not None
            except Exception:  # as above: unusable counts as unknown
                known = False
            if len(self._known_value_sets) < 10_000:
                self._known_value_sets[url] = known
        return known


class _Full(Exception):
    """MAX_ISSUES reached: stop walking."""


# An occurrence of an element: its JSON value, its primitive companion (``_name``), its path.
_Item = tuple[Any, Any, str]


class _Run:
    """One validation: the resource, the issues so far, and the walk."""

    __slots__ = ("validator", "resource", "must_support", "issues", "_seen", "_env", "_depth")

    def __init__(self, validator: Validator, resource: Any, must_support: bool, depth: int) -> None:
        self.validator = validator
        self.resource = resource
        self.must_support = must_support
        self.issues: list[ValidationIssue] = []
        self._seen: set[tuple[str, str, str, str]] = set()
        self._env: Environment | None = None
        self._depth = depth

    def add(self, severity: str, code: str, expression: str, message: str) -> None:
        key = (severity, code, expression, message)
        if key in self._seen:
            return  # the same rule from a parent and a child profile, or two slices
        self._seen.add(key)
        self.issues.append(ValidationIssue(severity, code, message, expression))
        if len(self.issues) >= MAX_ISSUES:
            raise _Full

    # -- the walk --

    def validate(self, profile: Profile) -> None:
        resource = self.resource
        if not isinstance(resource, Mapping):
            self.add("error", "structure", profile.type, "the resource is not a JSON object")
            return
        resource_type = resource.get("resourceType")
        if resource_type != profile.type:
            named = resource_type if resource_type in RESOURCE_TYPES else "another type"
            self.add(
                "error",
                "structure",
                profile.type,
                f"the profile {profile.url} is for {profile.type}, the resource is {named}",
            )
            return
        if profile.abstract:
            self.add(
                "information",
                "informational",
                profile.type,
                f"the profile {profile.url} is abstract: a resource also claims one of its"
                " concrete profiles",
            )
        self.occurrence([profile.root], resource, None, profile.type, profile.type)

    def check_object(self, rules: Sequence[Element], obj: Mapping[str, Any], expr: str) -> None:
        """The elements of one JSON object against every rule that applies to it."""
        if self._depth > _MAX_DEPTH:
            self.add("warning", "too-costly", expr, f"{expr}: nested too deeply to check")
            return
        self._depth += 1
        try:
            lookups = [r.by_json_all if self.must_support else r.by_json for r in rules]
            present: set[str] = set()
            for key in obj:
                children = [c for lookup in lookups if (c := lookup.get(key)) is not None]
                if not children or children[0].name in present:
                    continue  # no rule, or the _name companion of an element already done
                present.add(children[0].name)
                self.element(children, obj, key, expr)
            for rule in rules:
                for child in rule.required:
                    if child.name not in present:
                        self.missing(child, expr)
                if self.must_support:
                    for child in rule.must_support_children:
                        if child.name not in present:
                            self.absent_must_support(child, expr)
        finally:
            self._depth -= 1

    def element(self, children: list[Element], obj: Mapping[str, Any], key: str, expr: str) -> None:
        """Every occurrence of one element (all its JSON keys) against its rules."""
        first = children[0]
        json_key = key[1:] if key.startswith("_") and key[1:] in first.json_types else key
        type_code = first.json_types.get(json_key)
        path = f"{expr}.{first.name}"
        items = _occurrences(obj.get(json_key), obj.get("_" + json_key), path)
        for child in children:
            self.cardinality(child, len(items), path)
            if (
                items
                and type_code is not None
                and child.allowed_types is not None
                and type_code not in child.allowed_types
            ):
                allowed = ", ".join(sorted(child.allowed_types))
                self.add(
                    "error",
                    "structure",
                    path,
                    f"{path}: type {type_code} is not allowed here (allowed: {allowed})",
                )
        extra: list[list[Element]] = [[] for _ in items]
        for child in children:
            if child.slicing is not None:
                self.slice_items(child, child.slicing, items, extra, path, type_code)
        for (value, companion, item_path), more in zip(items, extra, strict=True):
            self.occurrence([*children, *more], value, companion, type_code, item_path)

    def cardinality(self, rule: Element, count: int, path: str) -> None:
        if count < rule.min:
            self.add(
                "error",
                "required",
                path,
                f"{path}: minimum required = {rule.min}, found {count}",
            )
        if rule.max is not None and count > rule.max:
            self.add(
                "error",
                "structure",
                path,
                f"{path}: maximum allowed = {rule.max}, found {count}",
            )

    def missing(self, child: Element, expr: str) -> None:
        path = f"{expr}.{child.name}"
        if child.min > 0:
            self.add("error", "required", path, f"{path}: minimum required = {child.min}, found 0")
        for slice_rule in child.slices.values():
            if slice_rule.min > 0:
                self.add(
                    "error",
                    "required",
                    path,
                    f"{path}: slice '{slice_rule.slice_name}': minimum required ="
                    f" {slice_rule.min}, found 0",
                )

    def absent_must_support(self, child: Element, expr: str) -> None:
        path = f"{expr}.{child.name}"
        if child.must_support:
            self.add("information", "informational", path, f"{path}: must-support, absent")
        for slice_rule in child.slices.values():
            if slice_rule.must_support:
                self.add(
                    "information",
                    "informational",
                    path,
                    f"{path}: must-support slice '{slice_rule.slice_name}', absent",
                )

    def occurrence(
        self,
        rules: list[Element],
        value: Any,
        companion: Any,
        type_code: str | None,
        path: str,
    ) -> None:
        """One occurrence of an element against every rule that applies to it."""
        index = 0
        while index < len(rules):  # extension definitions append their own rules
            rule = rules[index]
            index += 1
            if rule.fixed or rule.patterns:
                self.check_values(rule, value, path)
            if rule.binding is not None and value is not None:
                self.check_binding(rule.binding, value, type_code, path)
            if rule.targets is not None and type_code == "Reference":
                self.check_target(rule.targets, value, path)
            if rule.invariants and value is not None:
                for invariant in rule.invariants.values():
                    self.check_invariant(invariant, rule, value, path)
            if rule.type_profiles and type_code is not None:
                for profile in self.type_profiles(rule, type_code, value, path):
                    if profile.root not in rules:
                        rules.append(profile.root)
        nested = [r for r in rules if (r.by_json_all if self.must_support else r.by_json)]
        if not nested:
            return
        if type(value) is dict:
            self.check_object(nested, value, path)
        elif type(companion) is dict:
            # A primitive's id and extensions live in its _name companion.
            self.check_object(nested, companion, path)

    # -- slicing --

    def slice_items(
        self,
        element: Element,
        slicing: Slicing,
        items: list[_Item],
        extra: list[list[Element]],
        path: str,
        type_code: str | None,
    ) -> None:
        """Match each occurrence to a slice; check slice cardinality and the slicing rules.
        The slices matched are appended to each occurrence's rules in ``extra``."""
        slices = list(element.slices.values())
        matched = [self.slice_of(slices, slicing, value, type_code) for value, _, _ in items]
        for slice_rule in slices:
            count = sum(1 for m in matched if m is slice_rule)
            name = slice_rule.slice_name
            if count < slice_rule.min:
                self.add(
                    "error",
                    "required",
                    path,
                    f"{path}: slice '{name}': minimum required = {slice_rule.min}, found {count}",
                )
            if slice_rule.max is not None and count > slice_rule.max:
                self.add(
                    "error",
                    "structure",
                    path,
                    f"{path}: slice '{name}': maximum allowed = {slice_rule.max}, found {count}",
                )
            if self.must_support and slice_rule.must_support and count == 0:
                self.add(
                    "information",
                    "informational",
                    path,
                    f"{path}: must-support slice '{name}', absent",
                )
        position = {id(s): i for i, s in enumerate(slices)}
        furthest = -1
        after_unmatched = False
        for (_, _, item_path), hit, more in zip(items, matched, extra, strict=True):
            if hit is None:
                if slicing.rules == "closed":
                    self.add(
                        "error",
                        "structure",
                        item_path,
                        f"{item_path}: matches none of the slices of {element.id},"
                        " and the slicing is closed",
                    )
                after_unmatched = True
                continue
            if slicing.rules == "openAtEnd" and after_unmatched:
                self.add(
                    "error",
                    "structure",
                    item_path,
                    f"{item_path}: slice '{hit.slice_name}' comes after an item that matches"
                    " no slice (the slicing is openAtEnd)",
                )
            if slicing.ordered:
                if position[id(hit)] < furthest:
                    self.add(
                        "error",
                        "structure",
                        item_path,
                        f"{item_path}: slice '{hit.slice_name}' is out of order (the slicing"
                        " is ordered)",
                    )
                furthest = max(furthest, position[id(hit)])
            more.append(hit)
        for slice_rule in slices:
            if slice_rule.slicing is not None:  # re-slicing: the slice's items, sliced again
                chosen = [i for i, m in enumerate(matched) if m is slice_rule]
                self.slice_items(
                    slice_rule,
                    slice_rule.slicing,
                    [items[i] for i in chosen],
                    [extra[i] for i in chosen],
                    path,
                    type_code,
                )

    def slice_of(
        self, slices: list[Element], slicing: Slicing, value: Any, type_code: str | None
    ) -> Element | None:
        """The slice an item belongs to: the first it surely matches, else the first it may
        match (a value set the terminology cannot answer for), else none."""
        maybe = None
        for slice_rule in slices:
            answer = self.matches(slice_rule, slicing, value, type_code)
            if answer:
                return slice_rule
            if answer is None and maybe is None:
                maybe = slice_rule
        return maybe

    def matches(
        self, slice_rule: Element, slicing: Slicing, value: Any, type_code: str | None
    ) -> bool | None:
        if not slicing.discriminators:
            # No discriminator: an item belongs to the first slice it conforms to.
            return self.conforms_to_rules(slice_rule, value, type_code)
        unsure = False
        for test in slice_rule.tests:
            answer = self.passes(test, value, type_code)
            if answer is False:
                return False
            unsure = unsure or answer is None
        return None if unsure else True

    def passes(self, test: SliceTest, value: Any, type_code: str | None) -> bool | None:
        """Whether an item meets one slice test; None when the terminology cannot tell."""
        if test.vacuous:
            return True
        values = self.values_at(value, type_code, test)
        kind = test.discriminator.type
        if kind == "exists":
            return bool(values) == test.exists
        if kind in ("value", "pattern"):
            if test.value_set is not None:
                answers = [self.in_value_set(test.value_set, v, code) for v, code in values]
                if True in answers:
                    return True
                return None if None in answers else False
            return all(any(_equal(v, f) for v, _ in values) for f in test.fixed) and all(
                any(_matches(v, p) for v, _ in values) for p in test.patterns
            )
        if test.profiles:
            return any(self.conforms_to_profiles(v, code, test.profiles) for v, code in values)
        return any(code in test.types for _, code in values)

    def values_at(
        self, value: Any, type_code: str | None, test: SliceTest
    ) -> list[tuple[Any, str | None]]:
        """The values at a discriminator's path in one item, each with its type code (the
        resource type, after ``resolve()``)."""
        current: list[tuple[Any, str | None]] = [(value, type_code)]
        for step in test.discriminator.steps:
            if step.kind == "this":
                continue
            found: list[tuple[Any, str | None]] = []
            for item, code in current:
                if step.kind == "name":
                    if type(item) is dict:
                        for key, key_type in step.json_types.items():
                            part = item.get(key)
                            if type(part) is list:
                                found.extend((p, key_type) for p in part if p is not None)
                            elif part is not None:
                                found.append((part, key_type))
                elif step.kind == "extension":
                    extensions = item.get("extension") if type(item) is dict else None
                    if type(extensions) is list:
                        found.extend(
                            (e, "Extension")
                            for e in extensions
                            if type(e) is dict and e.get("url") == step.name
                        )
                elif step.kind == "resolve":
                    target = self.reference_type(item)
                    if target is not None:
                        found.append((item, target))
                elif code == step.name:  # ofType()
                    found.append((item, code))
            current = found
        return current

    def reference_type(self, reference: Any) -> str | None:
        """The resource type a Reference points to, read from its text (never fetched)."""
        if type(reference) is not dict:
            return None
        text = reference.get("reference")
        if isinstance(text, str):
            if text.startswith("#"):
                for contained in self.contained():
                    if contained.get("id") == text[1:]:
                        found = contained.get("resourceType")
                        return found if isinstance(found, str) else None
                return None
            target = reference_target(text)
            return target[0] if target else None
        declared = reference.get("type")
        if isinstance(declared, str):
            declared = declared.rsplit("/", 1)[-1]
            return declared if declared in RESOURCE_TYPES else None
        return None

    def contained(self) -> list[Mapping[str, Any]]:
        contained = self.resource.get("contained") if isinstance(self.resource, Mapping) else None
        if not isinstance(contained, list):
            return []
        return [c for c in contained if isinstance(c, Mapping)]

    # -- the checks --

    def check_values(self, rule: Element, value: Any, path: str) -> None:
        for fixed in rule.fixed:
            if not _equal(value, fixed):
                self.add("error", "value", path, f"{path}: must be exactly {_describe(fixed)}")
        for pattern in rule.patterns:
            if not _matches(value, pattern):
                self.add("error", "value", path, f"{path}: must match {_describe(pattern)}")

    def check_binding(self, binding: Binding, value: Any, type_code: str | None, path: str) -> None:
        if binding.strength not in ("required", "extensible"):
            return
        codes = _codes(value, type_code, path)
        value_set = binding.value_set
        if not codes:
            if binding.strength == "required" and type(value) is dict and "coding" not in value:
                if type_code == "CodeableConcept" or type_code is None:
                    self.add(
                        "error",
                        "code-invalid",
                        path,
                        f"{path}: no code; one from the value set {value_set} is required",
                    )
            return
        answers = [self.validator.member_of(value_set, s, c) for s, c, _ in codes]
        if True in answers:
            return
        if None in answers:
            if not self.validator.value_set_known(value_set):
                self.add(
                    "information",
                    "not-found",
                    path,
                    f"{path}: the value set {value_set} is not known here; the"
                    f" {binding.strength} binding was not checked",
                )
            return
        shown = ", ".join(_code_text(s, c) for s, c, _ in codes)
        if binding.strength == "required":
            self.add(
                "error",
                "code-invalid",
                path,
                f"{path}: {shown} is not in the value set {value_set} (required binding)",
            )
            return
        for system, code, code_path in codes:
            self.add(
                "warning",
                "code-invalid",
                code_path,
                f"{code_path}: {_code_text(system, code)} is not in the value set"
                f" {value_set} (extensible binding)",
            )

    def in_value_set(self, value_set: str, value: Any, type_code: str | None) -> bool | None:
        """Whether a value (code, Coding, CodeableConcept) has a code in the value set."""
        answers = [
            self.validator.member_of(value_set, s, c) for s, c, _ in _codes(value, type_code, "")
        ]
        if True in answers:
            return True
        return False if answers and None not in answers else None

    def check_target(self, targets: frozenset[str], value: Any, path: str) -> None:
        if type(value) is not dict:
            return
        text = value.get("reference")
        if isinstance(text, str):
            if text.startswith("#"):
                return  # contained: not checked for type
            target = reference_target(text)
            if target is None:
                return  # urn:uuid:, or not a literal reference we can read
            found = target[0]
        else:
            declared = value.get("type")
            if not isinstance(declared, str):
                return  # identifier or display only
            found = declared.rsplit("/", 1)[-1]
        if found not in targets:
            allowed = ", ".join(sorted(targets))
            self.add(
                "error",
                "structure",
                path,
                f"{path}: a reference to {found} is not allowed here (allowed: {allowed})",
            )

    def check_invariant(self, invariant: Invariant, rule: Element, value: Any, path: str) -> None:
        try:
            result = invariant.expression.evaluate(value, rule.path, self.environment())
        except _Full:
            raise
        except Exception:  # fhirpathpy's errors are plain exceptions; ours too on odd input
            self.add(
                "warning",
                "processing",
                path,
                f"{invariant.key}: the invariant could not be evaluated here",
            )
            return
        if not result or any(item is False for item in result):
            self.add(invariant.severity, "invariant", path, f"{invariant.key}: {invariant.human}")

    def type_profiles(self, rule: Element, type_code: str, value: Any, path: str) -> list[Profile]:
        """The known profiles a rule's type names (extension definitions, datatype profiles)
        whose own rules also apply to the value."""
        found = []
        for url in rule.type_profiles:
            try:
                profile = self.validator.profiles.get(url)
            except InvalidDefinition:
                profile = None
            if profile is None or profile.type != type_code:
                if type_code == "Extension" and value is not None:
                    self.add(
                        "information",
                        "informational",
                        path,
                        f"{path}: the extension definition {url} is not known here; its"
                        " content was not checked",
                    )
                continue
            found.append(profile)
        return found

    # -- conformance, for profile discriminators and conformsTo() --

    def conforms_to_rules(self, rule: Element, value: Any, type_code: str | None) -> bool:
        if self._depth > _MAX_DEPTH:
            return False
        probe = _Run(self.validator, self.resource, False, self._depth + 1)
        try:
            probe.occurrence([rule], value, None, type_code, rule.path)
        except _Full:
            return False
        return not any(i.severity == "error" for i in probe.issues)

    def conforms_to_profiles(
        self, value: Any, type_code: str | None, urls: tuple[str, ...]
    ) -> bool:
        if type_code == "Extension" and type(value) is dict and value.get("url") in urls:
            return True  # an extension is the one its url names
        for url in urls:
            try:
                profile = self.validator.profiles.get(url)
            except InvalidDefinition:
                return False
            if profile is None or not self.conforms_to_rules(profile.root, value, type_code):
                return False
        return True

    def conforms(self, resource: Mapping[str, Any], url: str) -> bool | None:
        """FHIRPath conformsTo(): None when the profile is not known."""
        try:
            profile = self.validator.profiles.get(url)
        except InvalidDefinition:
            return None
        if profile is None or self._depth > _MAX_CONFORMANCE_DEPTH:
            return None
        probe = _Run(self.validator, resource, False, self._depth + 1)
        try:
            probe.validate(profile)
        except _Full:
            return False
        return not any(i.severity == "error" for i in probe.issues)

    def environment(self) -> Environment:
        if self._env is None:
            resource = self.resource if isinstance(self.resource, Mapping) else {}
            self._env = Environment(resource, self.validator.member_of, self.conforms)
        return self._env


def _occurrences(value: Any, companion: Any, path: str) -> list[_Item]:
    """The occurrences of an element: its JSON value (an array or not) and its ``_name``
    companion, aligned by index; nulls that stand for nothing are left out."""
    if type(value) is list or type(companion) is list:
        values = value if type(value) is list else []
        companions = companion if type(companion) is list else []
        items = []
        for i in range(max(len(values), len(companions))):
            v = values[i] if i < len(values) else None
            c = companions[i] if i < len(companions) else None
            if v is not None or c is not None:
                items.append((v, c, f"{path}[{i}]"))
        return items
    if value is None and companion is None:
        return []
    return [(value, companion, path)]


def _equal(value: Any, fixed: Any) -> bool:
    """JSON equality, where true is not 1."""
    if type(fixed) is dict:
        return (
            type(value) is dict
            and value.keys() == fixed.keys()
            and all(_equal(value[k], fixed[k]) for k in fixed)
        )
    if type(fixed) is list:
        return (
            type(value) is list
            and len(value) == len(fixed)
            and all(_equal(v, f) for v, f in zip(value, fixed, strict=True))
        )
    if type(fixed) is bool or type(value) is bool:
        return type(fixed) is type(value) and fixed == value
    if isinstance(fixed, str) or isinstance(value, str):
        return isinstance(fixed, str) and isinstance(value, str) and fixed == value
    try:
        return bool(value == fixed)
    except Exception:  # exotic numbers
        return False


def _matches(value: Any, pattern: Any) -> bool:
    """pattern[x]: every element of the pattern is in the value; each item of a pattern array
    matches some item of the value's array.
    http://hl7.org/fhir/R4/elementdefinition-definitions.html#ElementDefinition.pattern_x_"""
    if type(pattern) is dict:
        return type(value) is dict and all(
            k in value and _matches(value[k], p) for k, p in pattern.items()
        )
    if type(pattern) is list:
        return type(value) is list and all(any(_matches(v, p) for v in value) for p in pattern)
    return _equal(value, pattern)


def _codes(value: Any, type_code: str | None, path: str) -> list[tuple[str | None, str, str]]:
    """(system, code, path) of each code a bound value carries."""
    if type(value) is str:
        return [(None, value, path)]
    if type(value) is not dict:
        return []
    if type_code == "CodeableConcept" or (type_code is None and "coding" in value):
        codings = value.get("coding")
        if type(codings) is not list:
            return []
        return [
            (_system(c), c["code"], f"{path}.coding[{i}]")
            for i, c in enumerate(codings)
            if type(c) is dict and type(c.get("code")) is str
        ]
    if type(value.get("code")) is str and (
        type_code in _QUANTITIES or type_code in ("Coding", None)
    ):
        return [(_system(value), value["code"], path)]
    return []


def _system(coding: Mapping[str, Any]) -> str | None:
    system = coding.get("system")
    return system if isinstance(system, str) else None


def _code_text(system: str | None, code: str) -> str:
    return f"{system}#{code}" if system else f"'{code}'"


def _describe(expected: Any) -> str:
    """A fixed value or pattern, from the profile (not the resource), for a message."""
    if isinstance(expected, str | int | float | bool):
        return repr(expected)
    codes = []
    for coding in _codings_of(expected):
        codes.append(_code_text(_system(coding), str(coding.get("code"))))
    if codes:
        return " and ".join(codes)
    return "the value the profile requires"


def _codings_of(expected: Any) -> list[Mapping[str, Any]]:
    if isinstance(expected, Mapping):
        if isinstance(expected.get("coding"), list):
            return [c for c in expected["coding"] if isinstance(c, Mapping) and "code" in c]
        if "code" in expected:
            return [expected]
    return []
