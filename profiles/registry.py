"""The profiles this process knows: the bundled StructureDefinitions and any posted ones.

A registry is immutable once built: ``extended`` makes a new one with more definitions (one
with the same url and version replaces the old), so a validation in progress never sees a
definition change under it. Definitions are compiled lazily, on the first ``get``, and the
compiled profile is kept; ``extended`` keeps every compiled profile that none of the new
definitions could change.

The R4 base types need no definition: ``http://hl7.org/fhir/StructureDefinition/Patient`` is
known, and conforming to it means conforming to the base structure, which the models check.

http://hl7.org/fhir/R4/structuredefinition.html
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson

from profiles.models import element_children
from profiles.structure import (
    BASE,
    InvalidDefinition,
    Profile,
    base_profile,
    check_definition,
    compile_profile,
    split_canonical,
)

__all__ = ["DEFINITIONS", "ProfileRegistry"]

# The StructureDefinitions the server ships, one JSON file each.
DEFINITIONS = Path(__file__).resolve().parent / "definitions"

_VERSION_PART = re.compile(r"[.\-+]")


class ProfileRegistry:
    """StructureDefinitions by canonical url and version, compiled on first use."""

    def __init__(self, definitions: Iterable[Mapping[str, Any]]) -> None:
        self._definitions: dict[str, dict[str | None, Mapping[str, Any]]] = {}
        self._compiled: dict[tuple[str, str | None], Profile] = {}
        for definition in definitions:
            self._add(definition)

    @classmethod
    def bundled(cls) -> ProfileRegistry:
        """Every ``profiles/definitions/*.json`` (read once per process)."""
        return _bundled()

    def extended(self, definitions: Iterable[Mapping[str, Any]]) -> ProfileRegistry:
        """A new registry with these definitions added, each compiled now, and so is every
        profile built on one of them: raises InvalidDefinition, naming the definition and the
        reason, for one it cannot use (or that would break a profile derived from it)."""
        added = list(definitions)
        new = ProfileRegistry(())
        new._definitions = {url: dict(versions) for url, versions in self._definitions.items()}
        for definition in added:
            new._add(definition)
        changed = {str(d["url"]) for d in added}
        new._compiled = {
            key: profile
            for key, profile in self._compiled.items()
            if not profile.depends_on & changed
        }
        for definition in added:
            new._compile(str(definition["url"]), _version(definition))
        for url, version in new._derived_from(changed):
            new._compile(url, version)
        return new

    def get(self, url: str, version: str | None = None) -> Profile | None:
        """The compiled profile; ``url`` may carry ``|version``. None if unknown.

        Raises InvalidDefinition if the stored definition cannot be compiled."""
        canonical, given = split_canonical(url)
        version = version or given
        definition = self._find(canonical, version)
        if definition is None:
            type_name = _base_type(canonical)
            return _base_profile(type_name) if type_name else None
        return self._compile(canonical, _version(definition))

    def known(self, url: str) -> bool:
        """Whether ``get`` finds a profile for ``url`` (without compiling it)."""
        canonical, version = split_canonical(url)
        return self._find(canonical, version) is not None or _base_type(canonical) is not None

    def urls(self) -> list[str]:
        """The canonical urls of the definitions held (not the implicit base types)."""
        return sorted(self._definitions)

    def type_of(self, url: str) -> str | None:
        """The type a profile (or base type) constrains; None if unknown."""
        canonical, version = split_canonical(url)
        definition = self._find(canonical, version) or self._find(canonical, None)
        if definition is not None:
            return str(definition.get("type"))
        return _base_type(canonical)

    # -- internals --

    def _add(self, definition: Mapping[str, Any]) -> None:
        if not isinstance(definition, Mapping) or definition.get("resourceType") != (
            "StructureDefinition"
        ):
            raise InvalidDefinition("not a StructureDefinition")
        url = definition.get("url")
        if not isinstance(url, str) or not url or "|" in url:
            raise InvalidDefinition("a StructureDefinition needs a url (without a |version)")
        versions = self._definitions.setdefault(url, {})
        version = _version(definition)
        versions.pop(version, None)  # the replacement counts as the newest given
        versions[version] = definition

    def _find(self, url: str, version: str | None) -> Mapping[str, Any] | None:
        versions = self._definitions.get(url)
        if not versions:
            return None
        if version is not None:
            return versions.get(version)
        return versions[_newest(list(versions))]

    def _compile(self, url: str, version: str | None) -> Profile:
        key = (url, version)
        profile = self._compiled.get(key)
        if profile is None:
            definition = self._definitions[url][version]
            check_definition(definition)  # its own faults first, then its ancestors'
            profile = compile_profile(self._chain(definition), self.type_of)
            self._compiled[key] = profile
        return profile

    def _derived_from(self, urls: set[str]) -> list[tuple[str, str | None]]:
        """(url, version) of each held definition whose ancestors include one of ``urls``."""
        derived = []
        for url, versions in self._definitions.items():
            for version, definition in versions.items():
                try:
                    chain = self._chain(definition)
                except InvalidDefinition:
                    continue  # already unusable, whatever was added
                if any(str(d.get("url")) in urls for d in chain[:-1]):
                    derived.append((url, version))
        return derived

    def _chain(self, definition: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        """The definition and its ancestors below the base type, root-most first."""
        chain = [definition]
        seen = {str(definition.get("url"))}
        while True:
            current = chain[-1]
            base = current.get("baseDefinition")
            if not isinstance(base, str) or not base:
                raise InvalidDefinition(f"StructureDefinition {current.get('url')}: no base")
            canonical, version = split_canonical(base)
            parent = self._find(canonical, version) or self._find(canonical, None)
            if parent is None:
                base_type = _base_type(canonical)
                if base_type is None:
                    raise InvalidDefinition(
                        f"StructureDefinition {current.get('url')}: its baseDefinition"
                        f" {base} is not known"
                    )
                if base_type != current.get("type"):
                    raise InvalidDefinition(
                        f"StructureDefinition {current.get('url')}: its baseDefinition"
                        f" {base} does not constrain {current.get('type')}"
                    )
                return chain[::-1]
            if canonical in seen:
                raise InvalidDefinition(
                    f"StructureDefinition {definition.get('url')}: its baseDefinitions loop"
                )
            seen.add(canonical)
            chain.append(parent)


def _version(definition: Mapping[str, Any]) -> str | None:
    version = definition.get("version")
    return version if isinstance(version, str) and version else None


def _newest(versions: list[str | None]) -> str | None:
    """The highest version by numeric parts (3.0.0 > 2.3.0); the last given when unsure."""
    keys = []
    for version in versions:
        parts = _VERSION_PART.split(version) if version else []
        if not parts or not all(p.isascii() and p.isdigit() for p in parts):
            return versions[-1]
        keys.append(tuple(int(p) for p in parts))
    return versions[max(range(len(versions)), key=keys.__getitem__)]


def _base_type(url: str) -> str | None:
    """``Patient`` for ``http://hl7.org/fhir/StructureDefinition/Patient``; None otherwise."""
    if not url.startswith(BASE):
        return None
    name = url[len(BASE) :]
    if name in ("Resource", "DomainResource"):
        return name
    return name if name[:1].isupper() and element_children(name) else None


@functools.lru_cache(maxsize=256)
def _base_profile(type_name: str) -> Profile:
    return base_profile(type_name)


@functools.cache
def _bundled() -> ProfileRegistry:
    definitions = []
    if DEFINITIONS.is_dir():
        for path in sorted(DEFINITIONS.glob("*.json")):
            try:
                definitions.append(orjson.loads(path.read_bytes()))
            except orjson.JSONDecodeError as exc:
                raise InvalidDefinition(f"{path.name} is not JSON: {exc}") from None
    return ProfileRegistry(definitions)
