"""The terminology engine: the CodeSystems, ValueSets and ConceptMaps held, and their operations.

Operations as in http://hl7.org/fhir/R4/terminology-service.html: $lookup, $validate-code
(on a code system or a value set), $subsumes, $expand, $translate; plus the two questions
the rest of the server asks on every write and every search: is this code in that value set
(``member_of``), and what does ``:in`` / ``:below`` / ``:above`` mean as codes (``codes_in``,
``descendants``, ``ancestors``).

A Terminology is immutable once built: indexes of code systems and compiled value sets are
made on first use and kept, so ``member_of`` on a value set seen before is two dictionary
look-ups. ``extended`` makes a new one with more resources (those posted to the server);
resources with the same url and version replace the ones held.

Code systems held only in part (CodeSystem.content fragment, example, not-present) cannot
say that a code does *not* exist: answers that depend on such codes are None ("cannot
tell"), never a guess.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from importlib import resources as package_files
from typing import Any

import orjson

from terminology.codesystem import CodeSystemIndex
from terminology.conceptmap import map_matches_scope, translate_with
from terminology.errors import (
    ExpansionTooLarge,
    InvalidDefinition,
    TerminologyError,
    UnknownCode,
    UnknownCodeSystem,
    UnknownConceptMap,
    UnknownValueSet,
    UnsupportedFilter,
    quote,
)
from terminology.registry import CanonicalRegistry, split_canonical
from terminology.results import (
    CodeMatch,
    Concept,
    Dependency,
    Expansion,
    Lookup,
    Translation,
    Validation,
)
from terminology.valueset import CompiledValueSet, ValueSetCompiler

__all__ = ["DEFAULT_EXPANSION_LIMIT", "Terminology", "load_bundled_resources"]

Resource = Mapping[str, Any]

DEFAULT_EXPANSION_LIMIT = 10_000
_KINDS = ("CodeSystem", "ValueSet", "ConceptMap")
_WORD = re.compile(r"\w+")


class Terminology:
    """The terminology resources held, answering the terminology operations."""

    @classmethod
    def bundled(cls) -> Terminology:
        """Every resource in ``terminology/content``, loaded once per process."""
        return _bundled()

    def __init__(self, resources: Iterable[Resource]) -> None:
        self._registries = {kind: CanonicalRegistry(kind) for kind in _KINDS}
        self._add(resources)
        self._prepare()

    def extended(self, resources: Iterable[Resource]) -> Terminology:
        """A new Terminology holding these resources as well (same url and version: replaced)."""
        new = object.__new__(Terminology)
        new._registries = {kind: registry.copy() for kind, registry in self._registries.items()}
        new._add(resources)
        new._prepare()
        # Code system indexes carry over when their resource and case rule did not change.
        for ident, index in self._indexes.items():
            held = new._registries["CodeSystem"].get(*ident)
            if held is index.resource and index.case_sensitive == new._case_sensitive(ident[0]):
                new._indexes[ident] = index
        return new

    def problems(self, resource: Resource) -> tuple[TerminologyError, ...]:
        """What would make this definition unusable here, found by trying it (for writes).

        ``extended`` only registers a resource; its value set is compiled when first used.
        This compiles it now and returns the defects: a resource that cannot be held at
        all, an import cycle, a malformed include or filter, a filter operator not
        implemented. Codes or imports not held here are not defects (they may come later).
        """
        try:
            trial = self.extended([resource])
        except TerminologyError as exc:
            return (exc,)
        if resource.get("resourceType") != "ValueSet":
            return ()
        compiled = trial._compiled_or_raise(resource["url"], resource.get("version"))
        found = dict.fromkeys(compiled.codes.blockers.values())
        return tuple(e for e in found if isinstance(e, InvalidDefinition | UnsupportedFilter))

    def _add(self, resources: Iterable[Resource]) -> None:
        by_kind: dict[str, list[Resource]] = {kind: [] for kind in _KINDS}
        for resource in resources:
            kind = resource.get("resourceType") if isinstance(resource, Mapping) else None
            if kind not in by_kind:
                raise InvalidDefinition(
                    f"Only CodeSystem, ValueSet and ConceptMap resources are terminology; "
                    f"got resourceType {quote(kind)}"
                )
            by_kind[kind].append(resource)
        for kind, found in by_kind.items():
            self._registries[kind].add_all(found)

    def _prepare(self) -> None:
        code_systems = self._registries["CodeSystem"].all()
        self._case_insensitive = frozenset(
            cs["url"] for cs in code_systems if cs.get("caseSensitive") is False
        )
        # CodeSystem.valueSet names the value set of all its codes; it exists even when no
        # ValueSet resource is held for it (R4 bindings point at these, e.g. task-status).
        self._implicit: dict[str, Resource] = {}
        for cs in self._registries["CodeSystem"].newest():
            url = cs.get("valueSet")
            if isinstance(url, str) and url and "|" not in url:
                self._implicit[url] = {
                    "resourceType": "ValueSet",
                    "url": url,
                    "status": "active",
                    "compose": {"include": [{"system": cs["url"]}]},
                }
        self._indexes: dict[tuple[str, str | None], CodeSystemIndex] = {}
        self._members: dict[str, CompiledValueSet] = {}
        self._closures: dict[tuple[str, str, bool], frozenset[str]] = {}
        self._compiler = ValueSetCompiler(
            code_system=self._index_for_compose,
            value_set=self.value_set,
            case_insensitive=self._case_insensitive,
        )

    # --- the resources ---------------------------------------------------------------------

    def code_system(self, url: str, version: str | None = None) -> Resource | None:
        """The CodeSystem at ``url`` (``url|version`` works too); newest when no version."""
        return self._registries["CodeSystem"].get(url, version)

    def value_set(self, url: str, version: str | None = None) -> Resource | None:
        """The ValueSet at ``url``, or the implicit one of a CodeSystem.valueSet."""
        url, version = split_canonical(url, version)
        found = self._registries["ValueSet"].get(url, version)
        if found is None and version is None:
            found = self._implicit.get(url)
        return found

    def concept_map(self, url: str, version: str | None = None) -> Resource | None:
        return self._registries["ConceptMap"].get(url, version)

    # --- code systems ----------------------------------------------------------------------

    def lookup(self, system: str, code: str, version: str | None = None) -> Lookup | None:
        """$lookup: the concept, or None when the code is not among those held.

        For a code system held in part (a fragment) None means "not known here", not "does
        not exist"; ``code_system(system)["content"]`` tells the caller which.
        http://hl7.org/fhir/R4/codesystem-operation-lookup.html
        """
        index = self._index(system, version)
        record = index.find(code) if isinstance(code, str) else None
        if record is None:
            return None
        key = index.key(code)
        return Lookup(
            system=index.url,
            code=record.code,
            name=index.name,
            version=index.version,
            display=record.display,
            designations=record.designations,
            properties=record.properties,
            parents=tuple(index.code_of(k) for k in index.parents(key)),
            children=tuple(index.code_of(k) for k in index.children(key)),
        )

    def subsumes(self, system: str, code_a: str, code_b: str, version: str | None = None) -> str:
        """$subsumes: equivalent, subsumes (A is above B), subsumed-by, or not-subsumed.

        http://hl7.org/fhir/R4/codesystem-operation-subsumes.html
        """
        index = self._index(system, version)
        for code in (code_a, code_b):
            if not isinstance(code, str) or index.find(code) is None:
                raise UnknownCode(index.url, str(code), partial=not index.complete)
        a, b = index.key(code_a), index.key(code_b)
        if a == b:
            return "equivalent"
        if a in index.ancestors(b):
            return "subsumes"
        if b in index.ancestors(a):
            return "subsumed-by"
        return "not-subsumed"

    def descendants(self, system: str, code: str) -> frozenset[str]:
        """The code and every code below it by is-a, for ``:below`` (code as spelled here).

        A code the code system does not hold has nothing known below it: just the code.
        """
        return self._closure(system, code, below=True)

    def ancestors(self, system: str, code: str) -> frozenset[str]:
        """The code and every code above it by is-a, for ``:above``."""
        return self._closure(system, code, below=False)

    def _closure(self, system: str, code: str, *, below: bool) -> frozenset[str]:
        index = self._index(system, None)
        key = index.key(code)
        found = self._closures.get((index.url, key, below))
        if found is None:
            if key not in index.concepts:
                return frozenset((code,))
            keys = index.descendants(key) if below else index.ancestors(key)
            found = frozenset(index.code_of(k) for k in keys)
            self._closures[(index.url, key, below)] = found
        return found

    # --- validation ------------------------------------------------------------------------

    def validate_code(
        self,
        *,
        url: str | None = None,
        value_set: str | None = None,
        system: str,
        code: str,
        display: str | None = None,
        version: str | None = None,
        value_set_version: str | None = None,
    ) -> Validation:
        """$validate-code against a CodeSystem (``url``) or a ValueSet (``value_set``).

        ``version`` is the code system's version. Raises UnknownCodeSystem (validating
        against a code system not held) or UnknownValueSet; see Validation for None.
        http://hl7.org/fhir/R4/valueset-operation-validate-code.html
        """
        if not isinstance(code, str) or not code:
            return Validation(False, "The code is empty or not a string", system=system)
        if value_set is not None:
            return self._validate_in_value_set(
                value_set, value_set_version, system, code, display, version
            )
        if url is not None and system and split_canonical(url)[0] != system:
            return Validation(
                False,
                f"The coding's system {quote(system)} is not the code system {quote(url)}",
                system=system,
                code=code,
            )
        return self._validate_in_code_system(url or system, code, display, version)

    def _validate_in_code_system(
        self, system: str, code: str, display: str | None, version: str | None
    ) -> Validation:
        index = self._index(system, version)
        record = index.find(code)
        if record is None:
            return self._not_held(index, code)
        return _check_display(
            index.url, index.version, record.code, display, _displays(index, code)
        )

    def _validate_in_value_set(
        self,
        value_set: str,
        value_set_version: str | None,
        system: str,
        code: str,
        display: str | None,
        version: str | None,
    ) -> Validation:
        compiled = self._compiled_or_raise(value_set, value_set_version)
        member = compiled.contains(system, code)
        index = self._index_or_none(system, version)
        if index is not None and index.find(code) is None and index.complete:
            return self._not_held(index, code)
        in_vs = f"ValueSet {quote(compiled.url)}"
        if member is False:
            return Validation(
                False,
                f"Code {quote(code)} of system {quote(system)} is not in {in_vs}",
                system=system,
                code=code,
            )
        if member is None:
            reason = compiled.codes.blocker_for(system).message
            return Validation(
                None,
                f"Cannot tell whether code {quote(code)} of system {quote(system)} is in "
                f"{in_vs}: {reason}",
                system=system,
                code=code,
            )
        displays = _displays(index, code) if index is not None else []
        entry = compiled.codes.entries.get((system, compiled.key(system, code)))
        if entry is not None and entry.display is not None:
            displays.insert(0, entry.display)
        spelled = entry.code if entry is not None else code
        if index is not None and (record := index.find(code)) is not None:
            spelled = record.code
        return _check_display(
            system, index.version if index else version, spelled, display, displays
        )

    def _not_held(self, index: CodeSystemIndex, code: str) -> Validation:
        if index.complete:
            return Validation(
                False,
                f"Code {quote(code)} is not in CodeSystem {quote(index.url)}",
                system=index.url,
                code=code,
                version=index.version,
            )
        return Validation(
            None,
            f"CodeSystem {quote(index.url)} is held here only in part ({index.content}): "
            f"cannot tell whether code {quote(code)} is in it",
            system=index.url,
            code=code,
            version=index.version,
        )

    # --- value sets ------------------------------------------------------------------------

    def member_of(self, value_set: str, system: str | None, code: str) -> bool | None:
        """Is the code in the value set; None when that cannot be told here.

        None: the value set is not held, or the answer depends on codes not held (a filter
        over a fragment, an import not held). A value set including a whole code system
        without filter answers True for any code of that system. ``system`` None (a bare
        ``code`` element) matches the codes the value set lists, of whatever system.
        """
        compiled = self._members.get(value_set)
        if compiled is None:
            url, version = split_canonical(value_set)
            found = self._compiler.compile(url, version)
            if found is None:
                return None
            compiled = self._members[value_set] = found
        if not isinstance(code, str):
            return False
        return compiled.contains(system, code)

    def expand(
        self,
        value_set: str,
        *,
        version: str | None = None,
        filter: str | None = None,
        offset: int = 0,
        count: int | None = None,
        limit: int = DEFAULT_EXPANSION_LIMIT,
        held_only: bool = False,
    ) -> Expansion:
        """$expand: the codes of the value set, filtered by text, one page of them.

        ``filter`` keeps the codes whose code starts with it, or whose display has, for
        every word of the filter, a word starting with it (case-insensitive). Without
        ``count`` more than ``limit`` codes is ExpansionTooLarge; a ``count`` above the
        limit is cut to it. ``held_only`` lists the codes held here where the value set
        filters a code system held in part (instead of refusing); a whole such system still
        cannot be listed. http://hl7.org/fhir/R4/valueset-operation-expand.html
        """
        compiled = self._compiled_or_raise(value_set, version)
        concepts: Sequence[Concept] = compiled.concepts(held_only=held_only)
        if filter:
            concepts = _text_filter(concepts, filter)
        total = len(concepts)
        if count is None and total > limit:
            raise ExpansionTooLarge(
                f"ValueSet {quote(compiled.url)} has {total} codes, more than the limit of "
                f"{limit}: ask for a page of them (count), or filter them"
            )
        start = max(offset, 0)
        size = total if count is None else max(min(count, limit), 0)
        return Expansion(
            url=compiled.url,
            version=compiled.version,
            total=total,
            offset=start,
            contains=tuple(concepts[start : start + size]),
        )

    def codes_in(self, value_set: str, *, held_only: bool = False) -> CodeMatch:
        """The value set as whole systems, listed codes and exclusions, for ``:in``.

        Raises UnknownValueSet; ExpansionTooLarge (with the reason) when membership is not
        decidable code by code here (a filter over a code system held in part); the error
        of an import not held, an unsupported filter, a malformed definition. With
        ``held_only`` a filter over a code system held in part gives the codes held here
        that pass it (exact when the part held is a whole subtree, as the bundled
        ICD-10-CM Z55-Z65 block is).
        """
        url, version = split_canonical(value_set)
        return self._compiled_or_raise(url, version).code_match(held_only=held_only)

    # --- concept maps ----------------------------------------------------------------------

    def translate(
        self,
        *,
        system: str,
        code: str,
        url: str | None = None,
        source: str | None = None,
        target: str | None = None,
        target_system: str | None = None,
        dependencies: Sequence[Dependency] = (),
        reverse: bool = False,
        concept_map_version: str | None = None,
    ) -> list[Translation]:
        """$translate: the matches of every map that applies, without repeats.

        ``url`` picks one map (UnknownConceptMap if not held); otherwise ``source`` and
        ``target`` (value sets) narrow the maps tried. See conceptmap.py for the rules.
        """
        if url is not None:
            found = self.concept_map(url, concept_map_version)
            if found is None:
                raise UnknownConceptMap(*split_canonical(url, concept_map_version))
            maps = [found]
        else:
            maps = [
                cm
                for cm in self._registries["ConceptMap"].newest()
                if map_matches_scope(cm, source=source, target=target, reverse=reverse)
            ]
        if not isinstance(code, str) or not isinstance(system, str):
            return []
        matches: list[Translation] = []
        for concept_map in maps:
            matches.extend(
                translate_with(
                    concept_map,
                    system=system,
                    code=code,
                    target_system=target_system,
                    dependencies=dependencies,
                    reverse=reverse,
                    key=self._key,
                    find_map=self.concept_map,
                )
            )
        return list(dict.fromkeys(matches))

    def case_sensitive(self, system: str) -> bool:
        """Whether codes of ``system`` compare with regard to case (CodeSystem.caseSensitive;
        true for a system not held)."""
        return self._case_sensitive(system)

    # --- internals -------------------------------------------------------------------------

    def _case_sensitive(self, system: str) -> bool:
        return system not in self._case_insensitive

    def _key(self, system: str | None, code: str) -> str:
        return code.casefold() if system in self._case_insensitive else code

    def _index_or_none(self, system: str, version: str | None) -> CodeSystemIndex | None:
        resource = self.code_system(system, version)
        if resource is None:
            return None
        ident = (resource["url"], resource.get("version"))
        index = self._indexes.get(ident)
        if index is None:
            index = CodeSystemIndex(resource, case_sensitive=self._case_sensitive(ident[0]))
            self._indexes[ident] = index
        return index

    def _index(self, system: str, version: str | None) -> CodeSystemIndex:
        index = self._index_or_none(system, version)
        if index is None:
            raise UnknownCodeSystem(*split_canonical(system, version))
        return index

    def _index_for_compose(self, system: str, version: str | None) -> CodeSystemIndex | None:
        """The version a value set pins, else the newest held (see valueset.py)."""
        return self._index_or_none(system, version) or self._index_or_none(system, None)

    def _compiled_or_raise(self, value_set: str, version: str | None) -> CompiledValueSet:
        url, version = split_canonical(value_set, version)
        compiled = self._compiler.compile(url, version)
        if compiled is None:
            raise UnknownValueSet(url, version)
        return compiled


def _displays(index: CodeSystemIndex, code: str) -> list[str]:
    record = index.find(code)
    if record is None:
        return []
    found = [] if record.display is None else [record.display]
    return found + [d.value for d in record.designations]


def _check_display(
    system: str, version: str | None, code: str, display: str | None, valid: list[str]
) -> Validation:
    """A valid code; a display that is none of its known names earns a warning message."""
    right = valid[0] if valid else None
    if display is None or not valid or _fold(display) in {_fold(v) for v in valid}:
        return Validation(True, None, right, system=system, code=code, version=version)
    return Validation(
        True,
        f"The display given for code {quote(code)} of system {quote(system)} is not one of "
        f"its displays; the display is {quote(right)}",
        right,
        system=system,
        code=code,
        version=version,
    )


def _fold(text: str) -> str:
    return " ".join(text.split()).casefold()


def _text_filter(concepts: Sequence[Concept], text: str) -> list[Concept]:
    wanted = text.strip().casefold()
    words = _WORD.findall(wanted)
    if not wanted:
        return list(concepts)
    kept = []
    for concept in concepts:
        if concept.code.casefold().startswith(wanted):
            kept.append(concept)
            continue
        names = _WORD.findall(concept.display.casefold()) if concept.display else []
        if words and all(any(name.startswith(w) for name in names) for w in words):
            kept.append(concept)
    return kept


def load_bundled_resources() -> list[Resource]:
    """Every CodeSystem, ValueSet and ConceptMap JSON file in ``terminology/content``."""
    folder = package_files.files("terminology").joinpath("content")
    if not folder.is_dir():
        return []
    found: list[Resource] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".json"):
            continue
        try:
            resource = orjson.loads(entry.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise InvalidDefinition(f"terminology/content/{entry.name} is not JSON") from exc
        if not isinstance(resource, dict) or resource.get("resourceType") not in _KINDS:
            raise InvalidDefinition(
                f"terminology/content/{entry.name} is not a CodeSystem, ValueSet or ConceptMap"
            )
        found.append(resource)
    return found


@cache
def _bundled() -> Terminology:
    return Terminology(load_bundled_resources())
