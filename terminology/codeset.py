"""Sets of codes that may be only partly known: the compiled form of a value set.

Membership has three values: True, False and None (*cannot tell*). None arises where a value
set depends on codes not held here: a filter over a code system held only as a fragment, a
value set imported but not known, a filter this engine does not implement. Includes are
combined with Kleene's three-valued OR, excludes with AND NOT, and an include naming both a
system and value sets with AND, so that "cannot tell" survives exactly as far as it must
(http://hl7.org/fhir/R4/valueset.html#compositions).

A set is stored per system: a default value for the codes of that system, overridden for
listed codes, and a value for every system not mentioned (``rest``). Overrides keep insertion
order, which is the order of the expansion. Keys of codes are already normalized for case by
the caller (see CodeSystemIndex.key).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from terminology.errors import ExpansionTooLarge, TerminologyError

__all__ = ["EMPTY", "CodeSet", "Entry", "Tri", "difference", "intersection", "union"]

Tri = bool | None


@dataclass(frozen=True, slots=True)
class Entry:
    """How an included code is shown in an expansion."""

    code: str
    display: str | None
    version: str | None


@dataclass(frozen=True, slots=True)
class CodeSet:
    rest: Tri = False
    defaults: Mapping[str, Tri] = field(default_factory=dict)
    overrides: Mapping[tuple[str, str], Tri] = field(default_factory=dict)
    entries: Mapping[tuple[str, str], Entry] = field(default_factory=dict)
    # Why a system (None: every system not mentioned) cannot be enumerated, for the message.
    blockers: Mapping[str | None, TerminologyError] = field(default_factory=dict)

    def value(self, system: str, key: str) -> Tri:
        found = self.overrides.get((system, key), _ABSENT)
        if found is not _ABSENT:
            return found  # type: ignore[return-value]
        return self.defaults.get(system, self.rest)

    def enumeration_blocker(self) -> TerminologyError | None:
        """Why the set cannot be listed code by code, or None when it can."""
        if self.rest is not False:
            return self.blocker_for(None)
        for system, value in self.defaults.items():
            if value is not False:
                return self.blocker_for(system)
        for (system, _), value in self.overrides.items():
            if value is None:
                return self.blocker_for(system)
        return None

    def blocker_for(self, system: str | None) -> TerminologyError:
        """The error that explains why a system's codes (None: the rest) cannot be listed."""
        found = self.blockers.get(system) or self.blockers.get(None)
        if found is None and self.blockers:
            found = next(iter(self.blockers.values()))
        return found or ExpansionTooLarge("The value set cannot be enumerated here")

    def settled(self) -> CodeSet:
        """The set with *cannot tell* read as *not a member* where only unheld codes are in doubt.

        For a caller that accepts "the codes held here" (a search over a fragment of
        ICD-10-CM). Doubt of another kind (an import not held, a filter not implemented, a
        malformed definition) is still raised.
        """

        def settle(value: Tri, system: str | None) -> Tri:
            if value is not None:
                return value
            blocker = self.blocker_for(system)
            if not isinstance(blocker, ExpansionTooLarge):
                raise blocker
            return False

        return CodeSet(
            settle(self.rest, None),
            {system: settle(value, system) for system, value in self.defaults.items()},
            {pair: settle(value, pair[0]) for pair, value in self.overrides.items()},
            self.entries,
            self.blockers,
        )

    def members(self) -> list[tuple[str, str]]:
        """The (system, key) pairs that are members, in order; only for an enumerable set."""
        return [pair for pair, value in self.overrides.items() if value is True]


EMPTY = CodeSet()
_ABSENT = object()


def _or(a: Tri, b: Tri) -> Tri:
    if a is True or b is True:
        return True
    if a is None or b is None:
        return None
    return False


def _and(a: Tri, b: Tri) -> Tri:
    if a is False or b is False:
        return False
    if a is None or b is None:
        return None
    return True


def _and_not(a: Tri, b: Tri) -> Tri:
    return _and(a, None if b is None else not b)


def union(a: CodeSet, b: CodeSet) -> CodeSet:
    return _combine(a, b, _or)


def intersection(a: CodeSet, b: CodeSet) -> CodeSet:
    return _combine(a, b, _and)


def difference(a: CodeSet, b: CodeSet) -> CodeSet:
    return _combine(a, b, _and_not)


def _combine(a: CodeSet, b: CodeSet, op: Callable[[Tri, Tri], Tri]) -> CodeSet:
    if b is EMPTY and op is not _and:
        return a
    rest = op(a.rest, b.rest)
    systems = dict.fromkeys(
        [*a.defaults, *b.defaults, *(s for s, _ in a.overrides), *(s for s, _ in b.overrides)]
    )
    defaults: dict[str, Tri] = {}
    for system in systems:
        value = op(a.defaults.get(system, a.rest), b.defaults.get(system, b.rest))
        if value is not rest:
            defaults[system] = value
    overrides: dict[tuple[str, str], Tri] = {}
    entries: dict[tuple[str, str], Entry] = {}
    for pair in dict.fromkeys([*a.overrides, *b.overrides]):
        value = op(a.value(*pair), b.value(*pair))
        if value is defaults.get(pair[0], rest):
            continue
        overrides[pair] = value
        entry = a.entries.get(pair) or b.entries.get(pair)
        if entry is not None:
            entries[pair] = entry
    blockers = {**b.blockers, **a.blockers}
    return CodeSet(rest, defaults, overrides, entries, blockers)
