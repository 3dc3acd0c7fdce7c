"""Install a FHIR package (``sdoh-fhir profiles install PACKAGE.tgz``): its conformance resources.

A FHIR package is an NPM-style tarball (https://hl7.org/fhir/packages.html): a
``package/package.json`` and one resource per ``package/*.json`` file. The StructureDefinitions,
CodeSystems, ValueSets, ConceptMaps and SearchParameters in it are stored as their own ids, as
``PUT`` stores them (so installing again changes nothing), each checked as a write is: a
StructureDefinition the server cannot use refuses the whole install, which is one transaction.
Examples and other resources are not installed. The tarball is read in memory, never extracted.
"""

from __future__ import annotations

import asyncio
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fhir_server.conformance import Conformance
from fhir_server.core.errors import FhirError, Gone, NotFound
from fhir_server.search.registry import SearchRegistry
from fhir_server.storage.conformance import load_definitions
from fhir_server.storage.database import connect
from fhir_server.storage.repository import Indexer, Repository

__all__ = ["PackageError", "InstallSummary", "install_package", "read_package"]

INSTALLED_TYPES = ("CodeSystem", "ValueSet", "ConceptMap", "StructureDefinition", "SearchParameter")
# Larger members are not FHIR definitions anyone should install this way.
_MAX_MEMBER_BYTES = 64 * 1024 * 1024
_MAX_MEMBERS = 20_000


class PackageError(ValueError):
    """The package cannot be installed; nothing was stored."""


@dataclass
class InstallSummary:
    name: str
    version: str
    created: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)
    skipped: int = 0  # resources of other types (examples, ...)


@dataclass(frozen=True, slots=True)
class Package:
    name: str
    version: str
    resources: list[dict[str, Any]]  # the installable ones, definitions before what uses them
    skipped: int


def read_package(path: Path) -> Package:
    """The package's installable resources; ``PackageError`` says why one cannot be read."""
    try:
        archive = tarfile.open(path, "r:*")
    except (OSError, tarfile.TarError) as exc:
        raise PackageError(f"{path} is not a readable package tarball: {exc}") from None
    manifest: Mapping[str, Any] | None = None
    resources: list[dict[str, Any]] = []
    skipped = 0
    with archive:
        for count, member in enumerate(archive):
            if count >= _MAX_MEMBERS:
                raise PackageError(f"{path} has more than {_MAX_MEMBERS} files")
            name = member.name.removeprefix("./")
            folder, _, file = name.rpartition("/")
            if not member.isfile() or folder != "package" or not file.endswith(".json"):
                continue
            if member.size > _MAX_MEMBER_BYTES:
                raise PackageError(f"{name} is larger than {_MAX_MEMBER_BYTES} bytes")
            stream = archive.extractfile(member)
            if stream is None:
                continue
            try:
                data = orjson.loads(stream.read())
            except orjson.JSONDecodeError as exc:
                raise PackageError(f"{name} is not JSON: {exc}") from None
            if file == "package.json":
                manifest = data if isinstance(data, dict) else None
            elif file.startswith("."):
                continue  # .index.json and other tool files
            elif isinstance(data, dict) and data.get("resourceType") in INSTALLED_TYPES:
                if not isinstance(data.get("id"), str):
                    raise PackageError(f"{name}: a {data['resourceType']} without an id")
                resources.append(data)
            else:
                skipped += 1
    if manifest is None or not isinstance(manifest.get("name"), str):
        raise PackageError(f"{path} has no package/package.json with a name")
    return Package(manifest["name"], str(manifest.get("version", "")), _ordered(resources), skipped)


def _ordered(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Terminology first, then StructureDefinitions each after the one it derives from (when in
    the package), then SearchParameters."""
    rank = {t: i for i, t in enumerate(INSTALLED_TYPES)}
    resources = sorted(resources, key=lambda r: rank[r["resourceType"]])
    definitions = {r.get("url"): r for r in resources if r["resourceType"] == "StructureDefinition"}
    placed: list[dict[str, Any]] = []
    seen: set[int] = set()

    def place(resource: dict[str, Any], depth: int = 0) -> None:
        if id(resource) in seen or depth > 50:
            return
        parent = definitions.get(resource.get("baseDefinition"))
        if parent is not None and parent is not resource:
            place(parent, depth + 1)
        seen.add(id(resource))
        placed.append(resource)

    for resource in resources:
        place(resource)
    return placed


async def _install(url: str, package: Package, conformance: Conformance) -> InstallSummary:
    summary = InstallSummary(package.name, package.version, skipped=package.skipped)
    indexer = Indexer(SearchRegistry.load_default())
    async with await connect(url) as conn, conn.transaction():
        stored = await load_definitions(conn)
        repo = Repository(conn, indexer, conformance.with_definitions(stored))
        installed: list[dict[str, Any]] = []
        for resource in package.resources:
            resource_type, id = resource["resourceType"], resource["id"]
            try:
                before = (await repo.read(resource_type, id)).version_id
            except (NotFound, Gone):
                before = None
            try:
                outcome = await repo.update(resource_type, id, resource)
            except FhirError as exc:
                reasons = "; ".join(issue.diagnostics for issue in exc.issues[:3])
                raise PackageError(f"{resource_type}/{id} cannot be installed: {reasons}") from None
            if outcome.created:
                counts = summary.created
            elif outcome.resource.version_id == before:
                counts = summary.unchanged
            else:
                counts = summary.updated
            counts[resource_type] = counts.get(resource_type, 0) + 1
            if resource_type == "StructureDefinition":
                # What derives from it, later in the package, is checked against it.
                installed.append(resource)
                repo.conformance = conformance.with_definitions([*stored, *installed])
    return summary


def install_package(url: str, path: Path, conformance: Conformance) -> InstallSummary:
    """Store the package's conformance resources in the database at ``url``."""
    return asyncio.run(_install(url, read_package(path), conformance))
