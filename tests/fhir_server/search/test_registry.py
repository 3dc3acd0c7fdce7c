"""Tests for the R4 search-parameter registry, its generator and the Patient compartment data.

Spec: http://hl7.org/fhir/R4/searchparameter-registry.html
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
from fhirpathpy import compile as fp_compile
from fhirpathpy import evaluate
from fhirpathpy.models import models

from fhir_server.search.registry import (
    SearchParam,
    SearchRegistry,
    expression_root,
    load_patient_compartment,
    split_union,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
GENERATOR = REPO_ROOT / "tools" / "gen_search_params.py"
SHARED_INPUT = REPO_ROOT / ".." / "shared" / "fhir-r4" / "search-parameters.json"
COMMON = ("_id", "_lastUpdated", "_tag", "_profile", "_security", "_source")


@pytest.fixture(scope="module")
def registry() -> SearchRegistry:
    return SearchRegistry.load_default()


@pytest.fixture(scope="module")
def data() -> dict:
    text = resources.files("fhir_server.search").joinpath("data", "search_parameters.json")
    return json.loads(text.read_text("utf-8"))


def test_patient_core_parameters(registry: SearchRegistry) -> None:
    name = registry.get("Patient", "name")
    assert name is not None and name.type == "string"
    assert name.resource_type == "Patient"
    birthdate = registry.get("Patient", "birthdate")
    assert birthdate is not None and birthdate.type == "date"
    assert birthdate.expression == "Patient.birthDate"
    assert "ge" in birthdate.comparators
    identifier = registry.get("Patient", "identifier")
    assert identifier is not None and identifier.type == "token"
    gp = registry.get("Patient", "general-practitioner")
    assert gp is not None and gp.type == "reference"
    assert set(gp.targets) == {"Organization", "Practitioner", "PractitionerRole"}
    assert registry.get("Patient", "no-such-param") is None


def test_observation_subject_targets(registry: SearchRegistry) -> None:
    subject = registry.get("Observation", "subject")
    assert subject is not None and subject.type == "reference"
    assert {"Patient", "Group"} <= set(subject.targets)
    assert subject.expression == "Observation.subject"


def test_composite_code_value_concept(registry: SearchRegistry) -> None:
    param = registry.get("Observation", "code-value-concept")
    assert param is not None and param.type == "composite"
    assert len(param.components) == 2
    code, value = param.components
    assert code.definition == "http://hl7.org/fhir/SearchParameter/clinical-code"
    assert code.expression == "code"
    assert value.definition.endswith("/Observation-value-concept")
    # Each component resolves to a parameter, preferring the composite's own resource type.
    resolved = registry.by_url(code.definition, "Observation")
    assert resolved is not None
    assert (resolved.resource_type, resolved.code, resolved.type) == (
        "Observation",
        "code",
        "token",
    )
    assert registry.by_url(value.definition) is not None
    assert registry.by_url("http://example.org/nope") is None


def test_expressions_are_restricted_to_their_type(registry: SearchRegistry) -> None:
    name = registry.get("Patient", "name")
    assert name is not None and name.expression == "Patient.name"
    assert "Practitioner" not in name.expression
    code = registry.get("Observation", "code")
    assert code is not None and code.expression == "Observation.code"
    med = registry.get("MedicationRequest", "code")
    assert med is not None and med.expression == "(MedicationRequest.medication as CodeableConcept)"
    patient = registry.get("Observation", "patient")
    assert patient is not None
    assert patient.expression == "Observation.subject.where(resolve() is Patient)"
    value = registry.get("Observation", "value-quantity")
    assert value is not None and value.type == "quantity"


def test_every_type_specific_expression_is_rooted_at_its_type(registry: SearchRegistry) -> None:
    unrooted = []
    for rt in registry.resource_types():
        for param in registry.for_type(rt).values():
            if param.expression is None:
                continue
            roots = {expression_root(p) for p in split_union(param.expression)}
            if roots != {rt}:
                unrooted.append((rt, param.code, param.expression))
    # R4 writes InsurancePlan's name relative to the resource; nothing else is unrooted.
    assert unrooted == [("InsurancePlan", "name", "name | alias")]


@pytest.mark.parametrize("resource_type", ["Patient", "Observation", "Bundle", "Binary", "Group"])
def test_common_parameters_apply_to_every_type(
    registry: SearchRegistry, resource_type: str
) -> None:
    params = registry.for_type(resource_type)
    for code in COMMON:
        param = params.get(code)
        assert param is not None, code
        assert param.resource_type == resource_type
        assert param.expression is not None
        assert param.expression.startswith(f"{resource_type}.")
    assert params["_lastUpdated"].expression == f"{resource_type}.meta.lastUpdated"
    assert params["_id"].type == "token"


def test_common_parameters_on_all_types(registry: SearchRegistry) -> None:
    assert len(registry.all_resource_types()) == 146  # every R4 resource type
    assert registry.resource_types() <= registry.all_resource_types()
    for rt in registry.all_resource_types():
        for code in COMMON:
            param = registry.get(rt, code)
            assert param is not None and param.expression is not None
            assert param.expression.startswith(f"{rt}."), (rt, code)


def test_common_expression_evaluates_on_the_concrete_type(registry: SearchRegistry) -> None:
    tag = registry.get("Patient", "_tag")
    assert tag is not None and tag.expression is not None
    patient = {"resourceType": "Patient", "meta": {"tag": [{"system": "s", "code": "c"}]}}
    assert evaluate(patient, tag.expression, model=models["r4"]) == [{"system": "s", "code": "c"}]


def test_text_only_on_domain_resources(registry: SearchRegistry) -> None:
    assert registry.get("Patient", "_text") is not None
    assert registry.get("Bundle", "_text") is None
    assert registry.get("Bundle", "_id") is not None


def test_unknown_type_has_no_parameters(registry: SearchRegistry) -> None:
    assert registry.for_type("NotAType") == {}
    assert registry.get("NotAType", "_id") is None
    assert "NotAType" not in registry.all_resource_types()


def test_resource_types(registry: SearchRegistry) -> None:
    types = registry.resource_types()
    assert {"Patient", "Observation", "Encounter", "QuestionnaireResponse"} <= types
    assert "Resource" not in types and "DomainResource" not in types
    assert "Binary" not in types  # R4 defines no Binary-specific parameter


def test_parameter_types_are_valid(registry: SearchRegistry) -> None:
    allowed = {"number", "date", "string", "token", "reference", "composite", "quantity", "uri"}
    allowed.add("special")
    for rt in registry.all_resource_types():
        for param in registry.for_type(rt).values():
            assert param.type in allowed
            if param.type == "composite":
                assert param.components
            if param.targets:
                assert param.type == "reference"


def test_with_param_adds_and_replaces(registry: SearchRegistry) -> None:
    custom = SearchParam(
        code="sdoh-category",
        resource_type="Observation",
        type="token",
        expression="Observation.category",
        url="http://example.org/SearchParameter/sdoh-category",
    )
    extended = registry.with_param(custom)
    assert extended.get("Observation", "sdoh-category") == custom
    assert extended.by_url(custom.url) == custom
    assert registry.get("Observation", "sdoh-category") is None  # original unchanged
    replaced = extended.with_param(SearchParam("name", "Patient", "string", "Patient.name.family"))
    name = replaced.get("Patient", "name")
    assert name is not None and name.expression == "Patient.name.family"
    assert replaced.get("Observation", "sdoh-category") == custom
    common = registry.with_param(SearchParam("_mine", "Resource", "token", "Resource.meta.x"))
    mine = common.get("Encounter", "_mine")
    assert mine is not None and mine.expression == "Encounter.meta.x"


def test_load_default_is_cached() -> None:
    assert SearchRegistry.load_default() is SearchRegistry.load_default()


def test_every_stored_expression_compiles(data: dict) -> None:
    documented = {(row["base"], row["code"]) for row in data["excluded"]}
    failures = []
    for row in data["params"]:
        exprs = [row.get("expression")] + [c["expression"] for c in row.get("component", [])]
        for expr in filter(None, exprs):
            try:
                fp_compile(expr, model=models["r4"])
            except Exception as exc:  # fhirpathpy raises bare Exceptions
                failures.append((row["base"], row["code"], expr, str(exc)))
    assert [f for f in failures if (f[0], f[1]) not in documented] == []
    for row in data["excluded"]:
        assert row["reason"]


def test_only_resolve_needs_a_custom_function(data: dict) -> None:
    # fhirpathpy has no resolve(); the evaluator must supply it (userInvocationTable).
    assert set(data["needsFunctions"]) <= {"resolve"}
    assert "Observation.patient" in data["needsFunctions"]["resolve"]


def test_data_keeps_facts_only(data: dict) -> None:
    allowed = {"base", "code", "type", "expression", "url", "target", "modifier", "comparator"}
    allowed |= {"component", "multipleOr", "multipleAnd"}
    for row in data["params"]:
        assert set(row) <= allowed
        assert row["url"].startswith("http://hl7.org/fhir/SearchParameter/")
    keys = [(row["base"], row["code"]) for row in data["params"]]
    assert keys == sorted(keys) and len(keys) == len(set(keys))
    assert set(r["base"] for r in data["params"]) - {"Resource", "DomainResource"} <= set(
        data["resourceTypes"]
    )


def test_patient_compartment() -> None:
    compartment = load_patient_compartment()
    assert set(compartment["Observation"]) == {"subject", "performer"}
    assert compartment["Encounter"] == ("patient",)
    assert compartment["Patient"] == ("link",)
    assert compartment["AllergyIntolerance"] == ("patient", "recorder", "asserter")
    assert "Practitioner" not in compartment and "Organization" not in compartment
    assert not any(name.startswith("_") for name in compartment)
    assert len(compartment) == 66


def test_patient_compartment_params_exist(registry: SearchRegistry) -> None:
    for rt, codes in load_patient_compartment().items():
        for code in codes:
            param = registry.get(rt, code)
            assert param is not None, (rt, code)
            assert param.type == "reference", (rt, code)
            assert "Patient" in param.targets, (rt, code)


def test_split_union() -> None:
    assert split_union("A.b | (C.d as X) | E.f.where(g = 'x|y')") == [
        "A.b",
        "(C.d as X)",
        "E.f.where(g = 'x|y')",
    ]
    assert split_union("Bundle.entry[0].resource") == ["Bundle.entry[0].resource"]
    assert expression_root("(ActivityDefinition.useContext.value as CodeableConcept)") == (
        "ActivityDefinition"
    )
    assert expression_root("Observation") == "Observation"


def _run_generator(output: Path) -> None:
    subprocess.run(
        [sys.executable, str(GENERATOR), str(SHARED_INPUT), "--output", str(output)],
        check=True,
        capture_output=True,
        cwd=REPO_ROOT,
    )


@pytest.mark.skipif(
    not SHARED_INPUT.is_file(), reason=f"R4 SearchParameter bundle not found at {SHARED_INPUT}"
)
def test_generator_is_deterministic_and_data_is_current(tmp_path: Path) -> None:
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    _run_generator(first)
    _run_generator(second)
    assert first.read_bytes() == second.read_bytes()
    packaged = resources.files("fhir_server.search").joinpath("data", "search_parameters.json")
    assert first.read_bytes() == packaged.read_bytes(), "re-run tools/gen_search_params.py"
