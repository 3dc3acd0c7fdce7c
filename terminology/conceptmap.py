"""ConceptMap translation: $translate against the maps held.

Spec: http://hl7.org/fhir/R4/conceptmap.html and
http://hl7.org/fhir/R4/conceptmap-operation-translate.html.

- A map is chosen by url, or by its source and target value sets (sourceUri/sourceCanonical,
  targetUri/targetCanonical), or else every map held is tried; its groups are those whose
  source is the code's system (a group without source matches any) and, when asked, whose
  target is the wanted system.
- A target with ``dependsOn`` matches only when every dependsOn is met by a given
  dependency (same element, value and, when the dependsOn names one, system).
- A target with equivalence ``unmatched`` (or ``disjoint``) is returned as such: the map
  says there is no match, and R4's ``result`` is false unless another match is found.
- ``group.unmapped`` applies only when no element of the group has the code (an element
  whose targets are all ``unmatched`` *is* a mapping). R4 gives unmapped results no
  equivalence: ``provided`` is answered as equivalent (the code kept as it is), ``fixed`` as
  inexact (a catch-all code), and ``other-map`` asks the other map (cycles stop).
- ``reverse`` answers the source codes that map to the given target code, with the
  equivalence turned around (wider and narrower, subsumes and specializes swap); dependsOn
  and unmapped do not apply in reverse.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from terminology.codesystem import is_code
from terminology.errors import UnknownConceptMap, quote
from terminology.registry import split_canonical
from terminology.results import Dependency, Translation

__all__ = ["map_matches_scope", "translate_with"]

Resource = Mapping[str, Any]
Key = Callable[[str | None, str], str]
FindMap = Callable[[str], Resource | None]

_NO_MATCH = frozenset({"unmatched", "disjoint"})
_INVERSE = {
    "wider": "narrower",
    "narrower": "wider",
    "subsumes": "specializes",
    "specializes": "subsumes",
}


def map_matches_scope(
    concept_map: Resource, *, source: str | None, target: str | None, reverse: bool
) -> bool:
    """Whether a map goes from the value set ``source`` to ``target`` (swapped in reverse)."""
    code_side, other_side = ("target", "source") if reverse else ("source", "target")
    if source is not None and _scope(concept_map, code_side) != split_canonical(source)[0]:
        return False
    return target is None or _scope(concept_map, other_side) == split_canonical(target)[0]


def _scope(concept_map: Resource, side: str) -> str | None:
    for element in (f"{side}Uri", f"{side}Canonical"):
        value = concept_map.get(element)
        if isinstance(value, str):
            return split_canonical(value)[0]
    return None


def translate_with(
    concept_map: Resource,
    *,
    system: str,
    code: str,
    target_system: str | None,
    dependencies: Sequence[Dependency],
    reverse: bool,
    key: Key,
    find_map: FindMap,
    seen: frozenset[str] = frozenset(),
) -> list[Translation]:
    """The matches one map gives for a code (following other-map fallbacks)."""
    url: str = concept_map["url"]
    seen = seen | {url}
    found: list[Translation] = []
    for group in _as_list(concept_map.get("group")):
        if not isinstance(group, Mapping):
            continue
        source, target = _str(group.get("source")), _str(group.get("target"))
        if reverse:
            if target not in (None, system) or target_system not in (None, source):
                continue
            found.extend(_reverse(group, url, system, code, source, key))
            continue
        if source not in (None, system) or target_system not in (None, target):
            continue
        matches = _forward(group, url, system, code, target, dependencies, key)
        if matches is not None:
            found.extend(matches)
            continue
        found.extend(
            _unmapped(
                group,
                url,
                system=system,
                code=code,
                target=target,
                target_system=target_system,
                dependencies=dependencies,
                key=key,
                find_map=find_map,
                seen=seen,
            )
        )
    return found


def _forward(
    group: Mapping[str, Any],
    url: str,
    system: str,
    code: str,
    target: str | None,
    dependencies: Sequence[Dependency],
    key: Key,
) -> list[Translation] | None:
    """The targets of the group's element for the code; None when no element has it."""
    wanted = key(system, code)
    matches: list[Translation] | None = None
    for element in _as_list(group.get("element")):
        if not isinstance(element, Mapping):
            continue
        source_code = element.get("code")
        if not is_code(source_code) or key(system, source_code) != wanted:
            continue
        matches = matches if matches is not None else []
        for mapped in _as_list(element.get("target")):
            if not isinstance(mapped, Mapping):
                continue
            equivalence = _str(mapped.get("equivalence")) or "equivalent"
            mapped_code = mapped.get("code")
            if not is_code(mapped_code):
                if equivalence not in _NO_MATCH:
                    continue  # nothing to offer: a target with neither code nor a "no match"
                mapped_code = None
            if not _depends_met(mapped.get("dependsOn"), dependencies):
                continue
            matches.append(
                Translation(equivalence, target, mapped_code, _str(mapped.get("display")), url)
            )
    return matches


def _reverse(
    group: Mapping[str, Any],
    url: str,
    system: str,
    code: str,
    source: str | None,
    key: Key,
) -> Iterator[Translation]:
    wanted = key(system, code)
    for element in _as_list(group.get("element")):
        if not isinstance(element, Mapping) or not is_code(element.get("code")):
            continue
        for mapped in _as_list(element.get("target")):
            if not isinstance(mapped, Mapping):
                continue
            mapped_code = mapped.get("code")
            if not is_code(mapped_code) or key(system, mapped_code) != wanted:
                continue
            equivalence = _str(mapped.get("equivalence")) or "equivalent"
            yield Translation(
                _INVERSE.get(equivalence, equivalence),
                source,
                element["code"],
                _str(element.get("display")),
                url,
            )


def _unmapped(
    group: Mapping[str, Any],
    url: str,
    *,
    system: str,
    code: str,
    target: str | None,
    target_system: str | None,
    dependencies: Sequence[Dependency],
    key: Key,
    find_map: FindMap,
    seen: frozenset[str],
) -> list[Translation]:
    unmapped = group.get("unmapped")
    if not isinstance(unmapped, Mapping):
        return []
    mode = unmapped.get("mode")
    if mode == "provided":
        return [Translation("equivalent", target or system, code, None, url)]
    if mode == "fixed":
        fixed = unmapped.get("code")
        if not is_code(fixed):
            return []
        return [Translation("inexact", target, fixed, _str(unmapped.get("display")), url)]
    other_url = unmapped.get("url")
    if mode != "other-map" or not isinstance(other_url, str):
        return []
    other_url = split_canonical(other_url)[0]
    if other_url in seen:
        return []
    other = find_map(other_url)
    if other is None:
        raise UnknownConceptMap(
            other_url,
            reason=f"ConceptMap {quote(url)} sends unmapped codes to ConceptMap "
            f"{quote(other_url)}, which is not known here",
        )
    return translate_with(
        other,
        system=system,
        code=code,
        target_system=target_system,
        dependencies=dependencies,
        reverse=False,
        key=key,
        find_map=find_map,
        seen=seen,
    )


def _depends_met(depends_on: object, dependencies: Sequence[Dependency]) -> bool:
    for condition in _as_list(depends_on):
        if not isinstance(condition, Mapping):
            return False
        element, value = condition.get("property"), condition.get("value")
        system = _str(condition.get("system"))
        if not any(
            given.element == element
            and given.code == value
            and (system is None or given.system == system)
            for given in dependencies
        ):
            return False
    return True


def _as_list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
