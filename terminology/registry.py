"""Canonical resources by url and version, with "the newest version" when none is asked.

A canonical reference may carry its version after a bar (``url|version``,
http://hl7.org/fhir/R4/references.html#canonical). The newest version is the highest by a
semver-like comparison when every version of that url reads as one; otherwise (dates, free
text, a missing version) it is the one given last, since the order of loading is the only
order left.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from terminology.errors import InvalidDefinition, quote

__all__ = ["CanonicalRegistry", "split_canonical", "version_key"]

Resource = Mapping[str, Any]

# 1, 1.2, 1.2.3, 1.2.3-ballot, 1.2.3+20240101: numbers compare as numbers; a pre-release
# sorts before its release, as in semver.
_SEMVER = re.compile(r"([0-9]+(?:\.[0-9]+)*)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?")


def split_canonical(canonical: str, version: str | None = None) -> tuple[str, str | None]:
    """``url|version`` to (url, version); an explicit ``version`` argument wins."""
    url, bar, embedded = canonical.partition("|")
    if version is None and bar and embedded:
        version = embedded
    return url, version


def version_key(version: str) -> tuple[tuple[int, ...], int, tuple[tuple[int, int | str], ...]]:
    """Sort key of a semver-like version; ValueError when it is not one."""
    match = _SEMVER.fullmatch(version)
    if match is None:
        raise ValueError(version)
    numbers = tuple(int(part) for part in match.group(1).split("."))
    # Trailing zeros do not make a version newer: 1.2 and 1.2.0 compare equal.
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers = numbers[:-1]
    pre = match.group(2)
    if pre is None:
        return numbers, 1, ()
    parts = tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split("."))
    return numbers, 0, parts


class CanonicalRegistry:
    """The CodeSystems (or ValueSets, or ConceptMaps) held, by url and version."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._by_url: dict[str, dict[str | None, Resource]] = {}
        self._newest: dict[str, Resource] = {}

    def add_all(self, resources: Iterable[Resource]) -> None:
        """Register resources; one with a url and version already held replaces it."""
        touched: set[str] = set()
        for resource in resources:
            url, version = _identity(self.kind, resource)
            versions = self._by_url.setdefault(url, {})
            # Re-inserted at the end: "the last given" is the newest when versions don't sort.
            versions.pop(version, None)
            versions[version] = resource
            touched.add(url)
        for url in touched:
            self._newest[url] = _newest(self._by_url[url])

    def copy(self) -> CanonicalRegistry:
        other = CanonicalRegistry(self.kind)
        other._by_url = {url: dict(versions) for url, versions in self._by_url.items()}
        other._newest = dict(self._newest)
        return other

    def get(self, canonical: str, version: str | None = None) -> Resource | None:
        """The resource at that url (and version; the newest when none is given)."""
        url, version = split_canonical(canonical, version)
        if version is None:
            return self._newest.get(url)
        versions = self._by_url.get(url)
        return None if versions is None else versions.get(version)

    def all(self) -> list[Resource]:
        return [resource for versions in self._by_url.values() for resource in versions.values()]

    def newest(self) -> list[Resource]:
        return list(self._newest.values())


def _identity(kind: str, resource: object) -> tuple[str, str | None]:
    if not isinstance(resource, Mapping):
        raise InvalidDefinition(f"A {kind} must be a JSON object")
    url = resource.get("url")
    if not isinstance(url, str) or not url or "|" in url:
        raise InvalidDefinition(
            f"A {kind} needs a url (a canonical without '|') to be used here; got {quote(url)}"
        )
    version = resource.get("version")
    if version is not None and (not isinstance(version, str) or not version):
        raise InvalidDefinition(f"{kind} {quote(url)} has a version that is not a string")
    return url, version


def _newest(versions: dict[str | None, Resource]) -> Resource:
    keys = list(versions)
    if None not in keys:
        try:
            best = max(keys, key=lambda v: version_key(v or ""))
        except ValueError:
            pass
        else:
            return versions[best]
    return versions[keys[-1]]
