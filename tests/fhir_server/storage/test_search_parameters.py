"""The registry the stored SearchParameters give: pending until indexed, never over a built-in."""

from __future__ import annotations

from typing import Any

from fhir_server.search.registry import SearchRegistry
from fhir_server.storage.search_parameters import StoredDefinition, build_registry

BASE = SearchRegistry.load_default()


def _stored(body: dict[str, Any], state: str | None = "completed") -> StoredDefinition:
    return StoredDefinition("sp", 2, body, "job-1", state, None, 2)


def _definition(**changes: Any) -> dict[str, Any]:
    return {
        "resourceType": "SearchParameter",
        "url": "http://example.org/SearchParameter/zip",
        "status": "active",
        "code": "zip",
        "base": ["Patient"],
        "type": "string",
        "expression": "Patient.address.postalCode",
    } | changes


def test_ready_once_its_job_completed_for_this_version() -> None:
    ready = build_registry(BASE, [_stored(_definition())]).get("Patient", "zip")
    assert ready is not None and ready.pending is None
    running = build_registry(BASE, [_stored(_definition(), "running")]).get("Patient", "zip")
    assert running is not None and "being indexed" in (running.pending or "")
    older = StoredDefinition("sp", 3, _definition(), "job-1", "completed", None, 2)
    assert build_registry(BASE, [older]).get("Patient", "zip").pending  # type: ignore[union-attr]


def test_a_definition_never_displaces_a_built_in_parameter() -> None:
    for body in (
        _definition(code="name"),  # a valid override
        _definition(code="name", type="special"),  # one that cannot be indexed
    ):
        registry = build_registry(BASE, [_stored(body)])
        assert registry.get("Patient", "name") == BASE.get("Patient", "name")


def test_one_that_cannot_be_indexed_says_why_and_drafts_are_left_out() -> None:
    refused = build_registry(BASE, [_stored(_definition(expression="Patient.("))])
    param = refused.get("Patient", "zip")
    assert param is not None and "cannot be indexed" in (param.pending or "")
    draft = build_registry(BASE, [_stored(_definition(status="draft"))])
    assert draft.get("Patient", "zip") is None
