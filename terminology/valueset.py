"""ValueSet definitions compiled into CodeSets, once per value set, for membership and expansion.

Spec: http://hl7.org/fhir/R4/valueset.html#compositions. Each include is the intersection of
its parts (the system's codes, narrowed by a concept list and by every filter; and each
imported value set); the includes are united and the excludes taken away afterwards. A
ValueSet without compose answers from its ``expansion`` when it has one.

Compilation never raises: what cannot be decided (an unknown import, an import cycle, an
unsupported filter, a malformed include) becomes *cannot tell* for the codes it touches,
and the error is kept to be raised by whoever needs the full list (expand, codes_in).

An include that pins a code system version not held here is read against the newest version
held: the value sets of the IGs pin versions older than what is bundled, and their codes do
not change between those versions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from terminology.codeset import (
    EMPTY,
    CodeSet,
    Entry,
    Tri,
    difference,
    intersection,
    union,
)
from terminology.codesystem import SUPPORTED_OPS, CodeSystemIndex, is_code
from terminology.errors import (
    ExpansionTooLarge,
    InvalidDefinition,
    TerminologyError,
    UnknownValueSet,
    UnsupportedFilter,
    quote,
)
from terminology.registry import split_canonical
from terminology.results import CodeMatch, Concept

__all__ = ["CompiledValueSet", "ValueSetCompiler"]

Resource = Mapping[str, Any]
FindCodeSystem = Callable[[str, str | None], CodeSystemIndex | None]
FindValueSet = Callable[[str, str | None], Resource | None]

_ABSENT = object()


class CompiledValueSet:
    """A value set ready for membership tests; expansion and search forms made on demand."""

    __slots__ = (
        "_case_insensitive",
        "_code_match",
        "_concepts",
        "_systems",
        "codes",
        "url",
        "version",
    )

    def __init__(
        self, url: str, version: str | None, codes: CodeSet, case_insensitive: frozenset[str]
    ) -> None:
        self.url = url
        self.version = version
        self.codes = codes
        self._case_insensitive = case_insensitive
        self._systems = tuple(dict.fromkeys([*codes.defaults, *(s for s, _ in codes.overrides)]))
        self._concepts: dict[bool, tuple[Concept, ...]] = {}
        self._code_match: dict[bool, CodeMatch] = {}

    def key(self, system: str, code: str) -> str:
        """How the code is keyed in ``codes`` (case-folded for case-insensitive systems)."""
        return code.casefold() if system in self._case_insensitive else code

    def contains(self, system: str | None, code: str) -> Tri:
        """Is the code in the value set: True, False, or None when that cannot be told here."""
        if system is None:
            return self._contains_any(code)
        if system in self._case_insensitive:
            code = code.casefold()
        found = self.codes.overrides.get((system, code), _ABSENT)
        if found is not _ABSENT:
            return found  # type: ignore[return-value]
        return self.codes.defaults.get(system, self.codes.rest)

    def _contains_any(self, code: str) -> Tri:
        """A code without a system: in the value set if it is a listed code of some system.

        A whole-system include cannot vouch for a code without its system (the code may not
        be of that system), so that answers None.
        """
        answer: Tri = False
        for system in self._systems:
            key = code.casefold() if system in self._case_insensitive else code
            found = self.codes.overrides.get((system, key), _ABSENT)
            value = self.codes.defaults.get(system, self.codes.rest)
            if found is not _ABSENT:
                value = found  # type: ignore[assignment]
            elif value is True:
                value = None
            if value is True:
                return True
            if value is None:
                answer = None
        if self.codes.rest is not False:
            return None
        return answer

    def concepts(self, *, held_only: bool = False) -> tuple[Concept, ...]:
        """Every code, in expansion order; raises why the set cannot be listed.

        ``held_only``: see CodeSet.settled.
        """
        found = self._concepts.get(held_only)
        if found is None:
            codes = self.codes.settled() if held_only else self.codes
            blocker = codes.enumeration_blocker()
            if blocker is not None:
                raise blocker
            found = self._concepts[held_only] = tuple(
                self._concept(codes, pair) for pair in codes.members()
            )
        return found

    @staticmethod
    def _concept(codes: CodeSet, pair: tuple[str, str]) -> Concept:
        entry = codes.entries.get(pair) or Entry(pair[1], None, None)
        return Concept(pair[0], entry.version, entry.code, entry.display)

    def code_match(self, *, held_only: bool = False) -> CodeMatch:
        """The set as whole systems, listed codes and exceptions; raises when it is not one."""
        found = self._code_match.get(held_only)
        if found is None:
            codes = self.codes.settled() if held_only else self.codes
            found = self._code_match[held_only] = self._as_code_match(codes)
        return found

    def _as_code_match(self, codes: CodeSet) -> CodeMatch:
        if codes.rest is not False:
            raise codes.blocker_for(None)
        systems = frozenset(s for s, value in codes.defaults.items() if value is True)
        for system, value in codes.defaults.items():
            if value is None:
                raise codes.blocker_for(system)
        listed: set[tuple[str, str]] = set()
        excluded: set[tuple[str, str]] = set()
        for pair, value in codes.overrides.items():
            if value is None:
                raise codes.blocker_for(pair[0])
            entry = codes.entries.get(pair)
            spelled = (pair[0], entry.code if entry is not None else pair[1])
            if value is True and pair[0] not in systems:
                listed.add(spelled)
            elif value is False and pair[0] in systems:
                excluded.add(spelled)
        mentioned = {s for s, _ in listed} | systems
        return CodeMatch(
            systems=systems,
            codes=frozenset(listed),
            excluded=frozenset(excluded),
            case_insensitive=frozenset(mentioned & self._case_insensitive),
        )


class ValueSetCompiler:
    """Compiles value sets against the code systems and value sets one Terminology holds."""

    def __init__(
        self,
        *,
        code_system: FindCodeSystem,
        value_set: FindValueSet,
        case_insensitive: frozenset[str],
    ) -> None:
        self._code_system = code_system
        self._value_set = value_set
        self._case_insensitive = case_insensitive
        self._compiled: dict[tuple[str, str | None], CompiledValueSet] = {}

    def compile(self, url: str, version: str | None = None) -> CompiledValueSet | None:
        """The compiled value set, or None when it is not held."""
        resource = self._value_set(url, version)
        return None if resource is None else self._compile(resource, ())

    def _compile(
        self, resource: Resource, stack: tuple[tuple[str, str | None], ...]
    ) -> CompiledValueSet:
        ident = _ident(resource)
        compiled = self._compiled.get(ident)
        if compiled is None:
            codes = self._codes(resource, (*stack, ident))
            compiled = CompiledValueSet(*ident, codes, self._case_insensitive)
            self._compiled[ident] = compiled
        return compiled

    def _key(self, system: str, code: str) -> str:
        return code.casefold() if system in self._case_insensitive else code

    def _codes(self, resource: Resource, stack: tuple[tuple[str, str | None], ...]) -> CodeSet:
        url = stack[-1][0]
        compose = resource.get("compose")
        if isinstance(compose, Mapping):
            result = EMPTY
            for include in _as_list(compose.get("include")):
                result = union(result, self._part(include, url, stack))
            for exclude in _as_list(compose.get("exclude")):
                result = difference(result, self._part(exclude, url, stack))
            return result
        expansion = resource.get("expansion")
        if isinstance(expansion, Mapping):
            return self._from_expansion(expansion, url)
        return CodeSet(
            rest=None,
            blockers={
                None: ExpansionTooLarge(
                    f"ValueSet {quote(url)} has neither compose nor expansion here: "
                    "its codes are not held"
                )
            },
        )

    def _part(self, part: object, url: str, stack: tuple[tuple[str, str | None], ...]) -> CodeSet:
        """One compose.include or compose.exclude."""
        if not isinstance(part, Mapping):
            return _cannot_tell(InvalidDefinition(f"ValueSet {quote(url)} has a malformed include"))
        pieces: list[CodeSet] = []
        system = part.get("system")
        if system is not None:
            if not isinstance(system, str) or not system:
                return _cannot_tell(
                    InvalidDefinition(f"ValueSet {quote(url)} names a system that is not a uri")
                )
            version = part.get("version")
            pieces.append(self._system_part(system, _str(version), part, url))
        imports = part.get("valueSet")
        for canonical in [imports] if isinstance(imports, str) else _as_list(imports):
            pieces.append(self._imported(canonical, url, stack))
        if not pieces:
            return _cannot_tell(
                InvalidDefinition(
                    f"ValueSet {quote(url)} has an include or exclude with neither system "
                    "nor valueSet"
                )
            )
        result = pieces[0]
        for piece in pieces[1:]:
            result = intersection(result, piece)
        return result

    def _system_part(
        self, system: str, version: str | None, part: Mapping[str, Any], url: str
    ) -> CodeSet:
        index = self._code_system(system, version)
        used_version = index.version if index is not None else version
        pieces: list[CodeSet] = []
        listed = _as_list(part.get("concept"))
        if listed:
            pieces.append(self._listed(system, index, used_version, listed))
        for condition in _as_list(part.get("filter")):
            pieces.append(self._filtered(system, index, used_version, condition, url))
        if not pieces:
            pieces.append(self._whole(system, index, url))
        result = pieces[0]
        for piece in pieces[1:]:
            result = intersection(result, piece)
        return result

    def _listed(
        self,
        system: str,
        index: CodeSystemIndex | None,
        version: str | None,
        concepts: list[object],
    ) -> CodeSet:
        """An explicit concept list: exactly these codes, whatever the code system holds."""
        overrides: dict[tuple[str, str], Tri] = {}
        entries: dict[tuple[str, str], Entry] = {}
        for concept in concepts:
            if not isinstance(concept, Mapping) or not is_code(concept.get("code")):
                continue
            code: str = concept["code"]
            pair = (system, self._key(system, code))
            record = index.concepts.get(pair[1]) if index is not None else None
            # The value set's own display is the one to show in its expansion (R4
            # ValueSet.compose.include.concept.display).
            display = _str(concept.get("display"))
            if display is None and record is not None:
                display = record.display
            overrides[pair] = True
            entries.setdefault(pair, Entry(record.code if record else code, display, version))
        return CodeSet(overrides=overrides, entries=entries)

    def _whole(self, system: str, index: CodeSystemIndex | None, url: str) -> CodeSet:
        if index is not None and index.complete:
            return _of_keys(system, index, index.concepts)
        held = "not held here" if index is None else f"held here only in part ({index.content})"
        return CodeSet(
            defaults={system: True},
            blockers={
                system: ExpansionTooLarge(
                    f"ValueSet {quote(url)} includes all of {quote(system)}, which is "
                    f"{held}: it cannot be enumerated"
                )
            },
        )

    def _filtered(
        self,
        system: str,
        index: CodeSystemIndex | None,
        version: str | None,
        condition: object,
        url: str,
    ) -> CodeSet:
        if not isinstance(condition, Mapping):
            return _cannot_tell(
                InvalidDefinition(f"ValueSet {quote(url)} has a malformed filter"), system
            )
        prop, op, value = condition.get("property"), condition.get("op"), condition.get("value")
        if not (isinstance(prop, str) and isinstance(op, str) and isinstance(value, str)):
            return _cannot_tell(
                InvalidDefinition(
                    f"ValueSet {quote(url)} has a filter without string property, op and value"
                ),
                system,
            )
        if index is None:
            error: TerminologyError = ExpansionTooLarge(
                f"ValueSet {quote(url)} filters {quote(system)}, which is not held here"
            )
            if op not in SUPPORTED_OPS:
                error = UnsupportedFilter(f"Filter operator {quote(op)} is not supported here")
            return _cannot_tell(error, system)
        try:
            keys = index.select(prop, op, value)
        except TerminologyError as exc:
            return _cannot_tell(exc, system)
        matched = _of_keys(system, index, keys, version)
        if index.complete:
            return matched
        # A fragment: held codes that fail the filter are known to fail; the others are not.
        overrides = dict(matched.overrides)
        for key in index.concepts:
            overrides.setdefault((system, key), False)
        return CodeSet(
            defaults={system: None},
            overrides=overrides,
            entries=matched.entries,
            blockers={
                system: ExpansionTooLarge(
                    f"ValueSet {quote(url)} filters {quote(system)}, which is held here only "
                    f"in part ({index.content}): it cannot be enumerated"
                )
            },
        )

    def _imported(
        self, canonical: object, url: str, stack: tuple[tuple[str, str | None], ...]
    ) -> CodeSet:
        if not isinstance(canonical, str) or not canonical:
            return _cannot_tell(
                InvalidDefinition(f"ValueSet {quote(url)} imports a value set that is not a uri")
            )
        target, version = split_canonical(canonical)
        resource = self._value_set(target, version)
        if resource is None:
            return _cannot_tell(UnknownValueSet(target, version, imported_by=url))
        ident = _ident(resource)
        if ident in stack:
            cycle = " -> ".join(quote(u) for u, _ in (*stack, ident))
            return _cannot_tell(InvalidDefinition(f"ValueSet imports form a cycle: {cycle}"))
        return self._compile(resource, stack).codes

    def _from_expansion(self, expansion: Mapping[str, Any], url: str) -> CodeSet:
        overrides: dict[tuple[str, str], Tri] = {}
        entries: dict[tuple[str, str], Entry] = {}
        seen = 0
        for item in _contains(expansion.get("contains")):
            seen += 1
            system, code = item.get("system"), item.get("code")
            if not isinstance(system, str) or not is_code(code) or item.get("abstract") is True:
                continue
            pair = (system, self._key(system, code))
            overrides[pair] = True
            entries.setdefault(
                pair, Entry(code, _str(item.get("display")), _str(item.get("version")))
            )
        total = expansion.get("total")
        if isinstance(total, int) and not isinstance(total, bool) and total > seen:
            blocker = ExpansionTooLarge(
                f"ValueSet {quote(url)} carries only part of its expansion ({seen} of {total})"
            )
            return CodeSet(
                rest=None, overrides=overrides, entries=entries, blockers={None: blocker}
            )
        return CodeSet(overrides=overrides, entries=entries)


def _of_keys(
    system: str,
    index: CodeSystemIndex,
    keys: Iterator[str] | list[str] | Mapping[str, object],
    version: str | None = None,
) -> CodeSet:
    overrides: dict[tuple[str, str], Tri] = {}
    entries: dict[tuple[str, str], Entry] = {}
    for key in keys:
        record = index.concepts[key]
        overrides[(system, key)] = True
        entries[(system, key)] = Entry(record.code, record.display, version or index.version)
    return CodeSet(overrides=overrides, entries=entries)


def _cannot_tell(error: TerminologyError, system: str | None = None) -> CodeSet:
    """Membership unknown: for one system's codes, or (system None) for every code."""
    if system is None:
        return CodeSet(rest=None, blockers={None: error})
    return CodeSet(defaults={system: None}, blockers={system: error})


def _contains(raw: object) -> Iterator[Mapping[str, Any]]:
    """Every expansion.contains entry, nested ones included, iteratively."""
    todo = list(reversed(_as_list(raw)))
    while todo:
        item = todo.pop()
        if isinstance(item, Mapping):
            yield item
            todo.extend(reversed(_as_list(item.get("contains"))))


def _ident(resource: Resource) -> tuple[str, str | None]:
    return resource["url"], _str(resource.get("version"))


def _as_list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
