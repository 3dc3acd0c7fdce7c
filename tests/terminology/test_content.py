"""The terminology content the server ships: valid R4 resources that agree with each other.

Read without the engine: every file is checked as JSON and against the base R4 models, and the
cross-references a terminology service relies on (value set and concept map codes, the ICD-10-CM
hierarchy, the SDOH domain roll-up) are checked against the code systems shipped beside them.
The SDOHCC facts are checked against the research note and the IG examples in ../shared.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from profiles.models import validate_resource

REPO = Path(__file__).resolve().parents[2]
CONTENT = REPO / "terminology" / "content"
SHARED = REPO / ".." / "shared"
RESEARCH = SHARED / "research" / "sdohcc.md"
EXAMPLES = SHARED / "conformance" / "sdohcc" / "examples"

FILES = sorted(CONTENT.glob("*.json"))
TEMP = "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
CATEGORY_VS = "http://hl7.org/fhir/us/sdoh-clinicalcare/ValueSet/SDOHCC-ValueSetSDOHCategory"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
SCT = "http://snomed.info/sct"
DOMAIN_MAP = "http://sdoh-fhir.org/ConceptMap/sdoh-domain"
OURS = "http://sdoh-fhir.org/"
CDCREC = "urn:oid:2.16.840.1.113883.6.238"
NULLFL = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"
R4_VS = "http://hl7.org/fhir/ValueSet/"
US_CORE_VS = "http://hl7.org/fhir/us/core/ValueSet/"
UCUM = "http://unitsofmeasure.org"
PROFILES = REPO / "profiles" / "definitions"
# Value sets that bundled profiles bind with strength required and that are not shipped, each
# with why; a required binding to a value set not held is only reported as "not known here".
REQUIRED_NOT_SHIPPED = {
    US_CORE_VS + "us-core-procedure-code": "7.0.0 composition not read in full (CPT, SNOMED CT "
    "is-a Procedure, HCPCS, ICD-10-PCS, ...); the SNOMED CT fragment holds no procedure "
    "hierarchy, so an is-a 71388002 filter would reject held procedures",
    US_CORE_VS + "us-core-survey-codes": "LOINC CLASSTYPE / CLASS property filters; the LOINC "
    "fragment carries no such properties",
    US_CORE_VS + "us-core-documentreference-type": "not written yet",
    US_CORE_VS + "detailed-race": "not written yet (CDC Race & Ethnicity is held in part)",
    US_CORE_VS + "detailed-ethnicity": "not written yet (CDC Race & Ethnicity is held in part)",
    "http://cts.nlm.nih.gov/fhir/ValueSet/2.16.840.1.113883.3.2074.1.1.3": "VSAC value set",
    "http://cts.nlm.nih.gov/fhir/ValueSet/2.16.840.1.113762.1.4.1021.24": "VSAC value set",
}
CLINICAL_FINDING = "404684003"
# Shipped SNOMED CT codes that are neither a finding nor about one SDOH domain.
SNOMED_NOT_ROLLED_UP = {
    "410606002",  # Social service procedure
    CLINICAL_FINDING,  # the is-a roots of US Core Condition Codes
    "243796009",
    "272379006",
    "160245001",  # No current problems or disability, listed in US Core Condition Codes
    "386053000",  # Evaluation procedure, listed in US Core ServiceRequest Category Codes
    "108252007",  # the R4 ServiceRequest categories that value set imports
    "363679005",
    "409063005",
    "409073007",
    "387713003",
}
# LOINC panels and sections of the instruments: about several domains, so not rolled up.
LOINC_PANELS = {"93025-5", "93043-8", "93042-0", "93041-2", "93040-4", "93039-6"}

Resource = dict[str, Any]


def _load(path: Path) -> Resource:
    data: Resource = json.loads(path.read_text(encoding="utf-8"))
    return data


@cache
def _all() -> tuple[Resource, ...]:
    return tuple(_load(path) for path in FILES)


def _of_type(resource_type: str) -> list[Resource]:
    return [r for r in _all() if r["resourceType"] == resource_type]


def _walk(
    concepts: list[Resource], parent: str | None = None
) -> Iterator[tuple[Resource, str | None]]:
    for concept in concepts:
        yield concept, parent
        yield from _walk(concept.get("concept", []), concept["code"])


@cache
def _codesystems() -> dict[str, Resource]:
    return {cs["url"]: cs for cs in _of_type("CodeSystem")}


def _concepts(system: str) -> dict[str, Resource]:
    return {concept["code"]: concept for concept, _ in _walk(_codesystems()[system]["concept"])}


def _parents(system: str) -> dict[str, str | None]:
    return {concept["code"]: parent for concept, parent in _walk(_codesystems()[system]["concept"])}


def _descendants_or_self(system: str, code: str) -> set[str]:
    parents = _parents(system)
    out = set()
    for candidate in parents:
        node: str | None = candidate
        while node is not None:
            if node == code:
                out.add(candidate)
                break
            node = parents[node]
    return out


def _domain_map() -> Resource:
    (concept_map,) = [m for m in _of_type("ConceptMap") if m["url"] == DOMAIN_MAP]
    return concept_map


def _group(source: str) -> Resource:
    (group,) = [g for g in _domain_map()["group"] if g["source"] == source]
    return group


def _research_section(title: str) -> str:
    if not RESEARCH.exists():
        pytest.skip(f"research note not found at {RESEARCH} (../shared is absent)")
    text = RESEARCH.read_text(encoding="utf-8")
    start = text.index(title)
    following = re.compile(r"\n#{2,3} ").search(text, start + len(title))
    return text[start : following.start() if following else len(text)]


def test_content_is_shipped() -> None:
    kinds = Counter(path.name.split("-", 1)[0] for path in FILES)
    assert kinds["CodeSystem"] >= 20 and kinds["ValueSet"] >= 30 and kinds["ConceptMap"] == 1


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_file_is_a_valid_r4_resource_of_the_type_its_name_says(path: Path) -> None:
    resource = _load(path)
    resource_type, _, resource_id = path.stem.partition("-")
    assert resource["resourceType"] == resource_type
    assert resource["id"] == resource_id
    assert resource_type in {"CodeSystem", "ValueSet", "ConceptMap"}
    validate_resource(resource)
    assert resource["status"] == "active"
    for element in ("url", "version", "name", "title", "publisher", "description"):
        assert isinstance(resource.get(element), str) and resource[element].strip(), element
    # R4 invariants csd-0 / vsd-0 / cmd-0: a computer-friendly name.
    assert re.fullmatch(r"[A-Z][A-Za-z0-9_]{0,254}", resource["name"]), resource["name"]
    if resource["url"].startswith(OURS):
        assert resource["publisher"] == "sdoh-fhir project"


def test_url_and_version_identify_one_resource() -> None:
    keys = Counter((r["resourceType"], r["url"], r["version"]) for r in _all())
    assert [key for key, n in keys.items() if n > 1] == []


@pytest.mark.parametrize("system", sorted(_codesystems()))
def test_codesystem_concepts_are_unique_displayed_and_counted(system: str) -> None:
    cs = _codesystems()[system]
    concepts = [concept for concept, _ in _walk(cs["concept"])]
    codes = Counter(concept["code"] for concept in concepts)
    assert [code for code, n in codes.items() if n > 1] == []
    assert [c["code"] for c in concepts if not c.get("display", "").strip()] == []
    assert cs["count"] == len(concepts)
    assert cs["content"] in {"complete", "fragment"}
    declared = {p["code"] for p in cs.get("property", [])}
    used = {p["code"] for c in concepts for p in c.get("property", [])}
    assert used <= declared
    if any("concept" in c for c in concepts):
        assert cs.get("hierarchyMeaning") == "is-a"


def test_temporary_codes_are_the_58_of_the_research_note() -> None:
    section = _research_section("### 3.1 CodeSystem")
    listed = dict(re.findall(r"`([a-z][a-z-]*)` \"([^\"]+)\"", section))
    assert len(listed) == 58
    shipped = {code: c["display"] for code, c in _concepts(TEMP).items()}
    assert shipped == listed
    assert _codesystems()[TEMP]["content"] == "complete"


def test_category_value_set_holds_the_24_domain_codes() -> None:
    (vs,) = [v for v in _of_type("ValueSet") if v["url"] == CATEGORY_VS]
    (include,) = vs["compose"]["include"]
    codes = [c["code"] for c in include["concept"]]
    assert include["system"] == TEMP and len(codes) == len(set(codes)) == 24
    assert {"sdoh-category-unspecified", "food-insecurity", "protective-factor"} <= set(codes)


def _compose_codes(vs: Resource) -> Iterator[tuple[str, str | None, str]]:
    """(system, version, code) of every concept and is-a/descendent-of/= filter in a compose."""
    for part in ("include", "exclude"):
        for item in vs["compose"].get(part, []):
            system = item.get("system")
            if system is None:
                continue
            for concept in item.get("concept", []):
                yield system, item.get("version"), concept["code"]
            for f in item.get("filter", []):
                if f["property"] == "concept" and f["op"] in {"is-a", "descendent-of", "="}:
                    yield system, item.get("version"), f["value"]


@pytest.mark.parametrize("vs", _of_type("ValueSet"), ids=lambda v: v["id"])
def test_value_set_codes_exist_in_the_shipped_code_system(vs: Resource) -> None:
    for system, version, code in _compose_codes(vs):
        if system not in _codesystems():
            continue  # not shipped: nothing to check against
        if version is not None:
            assert _codesystems()[system]["version"] == version, (vs["id"], system)
        assert code in _concepts(system), (vs["id"], system, code)
    for item in vs["compose"]["include"]:
        for imported in item.get("valueSet", []):
            assert imported in {v["url"] for v in _of_type("ValueSet")}, imported


def test_concept_map_sources_exist_and_targets_are_domain_codes() -> None:
    domains = {c["code"]: c["display"] for c in _concepts(TEMP).values()}
    (vs,) = [v for v in _of_type("ValueSet") if v["url"] == CATEGORY_VS]
    allowed = {c["code"] for c in vs["compose"]["include"][0]["concept"]}
    for group in _domain_map()["group"]:
        assert group["target"] == TEMP
        sources = _concepts(group["source"])
        for element in group["element"]:
            assert element["code"] in sources, (group["source"], element["code"])
            assert element["display"] == sources[element["code"]]["display"]
            assert element["target"], element["code"]
            for target in element["target"]:
                assert target["code"] in allowed, (element["code"], target["code"])
                assert target["display"] == domains[target["code"]]
                assert target["equivalence"] in {"equivalent", "wider", "relatedto"}
                for depends in target.get("dependsOn", []):
                    assert depends["system"] == LOINC
                    assert depends["value"] in _concepts(LOINC), depends["value"]
                    assert target["equivalence"] == "wider"


def test_each_domain_code_maps_to_itself() -> None:
    elements = {e["code"]: e["target"] for e in _group(TEMP)["element"]}
    assert len(elements) == 24
    for code, targets in elements.items():
        assert targets == [
            {"code": code, "display": targets[0]["display"], "equivalence": "equivalent"}
        ]


def test_icd10cm_codes_sit_under_their_category_and_block() -> None:
    parents = _parents(ICD10CM)
    concepts = _concepts(ICD10CM)
    assert parents["Z55-Z65"] == "Z00-Z99"
    z_codes = [code for code in parents if re.fullmatch(r"Z\d\d(\.\w+)?", code)]
    assert len(z_codes) > 100
    for code in z_codes:
        assert "Z55" <= code[:3] <= "Z65", code
        parent = parents[code]
        if "." not in code:
            assert parent == "Z55-Z65", code
        else:
            # Z59.811 sits under Z59.81, Z59.81 under Z59.8, Z59.8 under Z59.
            expected = code[:-1].rstrip(".")
            assert parent == expected, code
        billable = {p["code"]: p["valueBoolean"] for p in concepts[code]["property"]}["billable"]
        assert billable == ("concept" not in concepts[code]), code


def test_icd10cm_holds_the_fy2026_social_determinant_codes() -> None:
    concepts = _concepts(ICD10CM)
    assert concepts["Z59.41"]["display"] == "Food insecurity"
    assert (
        concepts["Z59.811"]["display"] == "Housing instability, housed, with risk of homelessness"
    )
    assert concepts["Z59.82"]["display"] == "Transportation insecurity"
    # FY2026 split financial insecurity (Z59.86) into subcodes, so Z59.86 is now a header.
    assert {"Z59.861", "Z59.868", "Z59.869"} <= set(concepts)
    assert {p["code"]: p["valueBoolean"] for p in concepts["Z59.86"]["property"]}[
        "billable"
    ] is False


def test_every_z55_z65_code_and_snomed_finding_rolls_up() -> None:
    mapped_icd = {e["code"] for e in _group(ICD10CM)["element"]}
    block = _descendants_or_self(ICD10CM, "Z55-Z65")
    assert block - mapped_icd == set()
    mapped_sct = {e["code"] for e in _group(SCT)["element"]}
    assert set(_concepts(SCT)) - mapped_sct == SNOMED_NOT_ROLLED_UP


def test_screening_questions_of_the_research_note_roll_up() -> None:
    section = _research_section("### 3.4 Screening instruments")
    codes = set(re.findall(r"\b(?:LA)?\d{1,6}-\d\b", section))
    loinc = _concepts(LOINC)
    assert codes - set(loinc) == set()
    questions = {c for c in codes if not c.startswith("LA")} - LOINC_PANELS
    mapped = {e["code"] for e in _group(LOINC)["element"]}
    assert questions - mapped == set()


def test_answers_that_indicate_a_need_roll_up_with_their_question() -> None:
    by_question = {e["code"]: e["target"] for e in _group(LOINC)["element"]}

    def domains(question: str, answer: str) -> set[str]:
        return {
            t["code"]
            for t in by_question[question]
            if any(d["value"] == answer for d in t.get("dependsOn", []))
        }

    assert domains("88122-7", "LA28397-0") == {"food-insecurity"}  # Often true
    assert domains("88122-7", "LA6729-3") == {"food-insecurity"}  # Sometimes true
    assert domains("88122-7", "LA28398-8") == set()  # Never true
    assert domains("71802-3", "LA31995-6") == {"homelessness", "housing-instability"}
    assert domains("71802-3", "LA31993-1") == set()  # steady place to live
    question_only = {t["code"] for t in by_question["71802-3"] if "dependsOn" not in t}
    assert question_only == {"homelessness", "housing-instability"}


def _members(vs: Resource) -> set[tuple[str, str]]:
    """The (system, code) pairs a compose selects, expanded over the shipped code systems."""

    def selected(items: list[Resource]) -> set[tuple[str, str]]:
        out = set()
        for item in items:
            system = item["system"]
            out |= {(system, c["code"]) for c in item.get("concept", [])}
            for f in item.get("filter", []):
                assert f["op"] == "is-a", f
                out |= {(system, code) for code in _descendants_or_self(system, f["value"])}
        return out

    compose = vs["compose"]
    return selected(compose["include"]) - selected(compose.get("exclude", []))


def test_domain_value_sets_agree_with_the_roll_up() -> None:
    rolled_up: dict[str, set[tuple[str, str]]] = {}
    for group in _domain_map()["group"]:
        if group["source"] == TEMP:
            continue
        for element in group["element"]:
            for target in element["target"]:
                if target["equivalence"] == "wider" and "dependsOn" not in target:
                    rolled_up.setdefault(target["code"], set()).add(
                        (group["source"], element["code"])
                    )
    domain_sets = [
        v for v in _of_type("ValueSet") if v["url"].startswith(OURS + "ValueSet/sdoh-domain-")
    ]
    assert len(domain_sets) >= 15
    for vs in domain_sets:
        domain = vs["url"].rsplit("sdoh-domain-", 1)[1]
        members = _members(vs)
        coded = {m for m in members if m[0] != LOINC}
        # The block itself is not a finding; every code and finding of the domain is listed.
        assert coded == rolled_up.get(domain, set()) - {(ICD10CM, "Z55-Z65")}, domain
        for _, code in members - coded:
            # An answer in a domain value set rolls up to that domain with its question.
            assert any(
                t["code"] == domain and d["value"] == code
                for e in _group(LOINC)["element"]
                for t in e["target"]
                for d in t.get("dependsOn", [])
            ), (domain, code)


def test_domain_value_sets_use_subtree_filters() -> None:
    (vs,) = [v for v in _of_type("ValueSet") if v["id"] == "sdoh-domain-food-insecurity"]
    filters = [f for i in vs["compose"]["include"] for f in i.get("filter", [])]
    assert {"property": "concept", "op": "is-a", "value": "Z59.4"} in filters
    assert (ICD10CM, "Z59.41") in _members(vs) and (ICD10CM, "Z59.0") not in _members(vs)


def _example_codings() -> Iterator[tuple[str, str, Resource]]:
    if not EXAMPLES.exists():
        pytest.skip(f"IG examples not found at {EXAMPLES} (../shared is absent)")

    def walk(node: Any) -> Iterator[Resource]:
        if isinstance(node, dict):
            if isinstance(node.get("system"), str) and isinstance(node.get("code"), str):
                yield node
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    for path in sorted(EXAMPLES.glob("*.json")):
        example = _load(path)
        example.pop("text", None)
        for coding in walk(example):
            yield path.name, example["resourceType"], coding


def test_codes_of_the_ig_examples_are_known() -> None:
    wanted_in_fragments = {"Condition", "Procedure", "ServiceRequest", "Goal", "Questionnaire"}
    unknown = []
    for name, resource_type, coding in _example_codings():
        cs = _codesystems().get(coding["system"])
        if cs is None:
            continue
        if cs["content"] == "fragment" and resource_type not in wanted_in_fragments:
            continue
        concept = _concepts(coding["system"]).get(coding["code"])
        if concept is None:
            unknown.append((name, coding["system"], coding["code"]))
        elif cs["content"] == "complete" and coding.get("display"):
            assert coding["display"].casefold() == concept["display"].casefold(), (name, coding)
    assert unknown == []


def _value_set(url: str) -> Resource:
    (vs,) = [v for v in _of_type("ValueSet") if v["url"] == url]
    return vs


def _listed(vs: Resource, system: str) -> set[str]:
    return {
        concept["code"]
        for item in vs["compose"]["include"]
        if item.get("system") == system
        for concept in item.get("concept", [])
    }


def test_r4_all_codes_value_sets_ship_their_complete_code_system() -> None:
    """A required R4 binding to "all codes of X" can only reject a code if X is held whole."""
    whole = [
        (vs["id"], item["system"])
        for vs in _of_type("ValueSet")
        if vs["url"].startswith(R4_VS)
        for item in vs["compose"]["include"]
        if "system" in item and not item.get("concept") and not item.get("filter")
    ]
    assert ("goal-status", "http://hl7.org/fhir/goal-status") in whole
    for vs_id, system in whole:
        if system == UCUM:
            continue  # a grammar: every UCUM expression is a member, nothing to enumerate
        cs = _codesystems()[system]
        assert (cs["content"], cs["version"]) == ("complete", "4.0.1"), vs_id
    assert ("ucum-units", UCUM) in whole and UCUM not in _codesystems()


def test_r4_code_systems_keep_their_hierarchy() -> None:
    assert _parents("http://hl7.org/fhir/goal-status")["on-hold"] == "accepted"
    assert _parents("http://hl7.org/fhir/encounter-status")["onleave"] is None
    # care-plan-intent lists order alone: the kinds of order are not care plan intents.
    listed = _listed(_value_set(R4_VS + "care-plan-intent"), "http://hl7.org/fhir/request-intent")
    assert listed == {"proposal", "plan", "order", "option"}
    assert _parents("http://hl7.org/fhir/request-intent")["original-order"] == "order"


def test_findings_sit_under_clinical_finding() -> None:
    """us-core-condition-code filters is-a Clinical finding; on a fragment, a held code the
    filter misses is answered "not in the value set", so every held finding must sit below it."""
    below = _descendants_or_self(SCT, CLINICAL_FINDING)
    named_findings = {
        code for code, concept in _concepts(SCT).items() if concept["display"].endswith("(finding)")
    }
    assert named_findings - {CLINICAL_FINDING} and named_findings <= below
    assert "410606002" not in below  # Social service procedure


def test_ig_example_conditions_are_us_core_condition_codes() -> None:
    if not EXAMPLES.exists():
        pytest.skip(f"IG examples not found at {EXAMPLES} (../shared is absent)")
    vs = _value_set(US_CORE_VS + "us-core-condition-code")
    roots = [
        f["value"]
        for item in vs["compose"]["include"]
        if item.get("system") == SCT
        for f in item.get("filter", [])
    ]
    assert roots == [CLINICAL_FINDING, "243796009", "272379006"]
    members = set().union(*(_descendants_or_self(SCT, root) for root in roots))
    members |= _listed(vs, SCT)
    conditions = [_load(path) for path in sorted(EXAMPLES.glob("Condition-*.json"))]
    codes = {
        coding["code"]
        for condition in conditions
        for coding in condition["code"]["coding"]
        if coding["system"] == SCT
    }
    assert len(codes) >= 3 and codes <= members
    whole = {item["system"] for item in vs["compose"]["include"] if set(item) == {"system"}}
    assert whole == {ICD10CM, "http://hl7.org/fhir/sid/icd-9-cm"}


def test_omb_value_sets_hold_the_us_core_expansion_and_the_ig_example_patient() -> None:
    race = _value_set(US_CORE_VS + "omb-race-category")
    ethnicity = _value_set(US_CORE_VS + "omb-ethnicity-category")
    races = {"1002-5", "2028-9", "2054-5", "2076-8", "2106-3", "2131-1"}
    assert _listed(race, CDCREC) == races and _listed(race, NULLFL) == {"UNK", "ASKU"}
    assert _listed(ethnicity, CDCREC) == {"2135-2", "2186-5"}
    assert _listed(ethnicity, NULLFL) == {"UNK", "ASKU"}
    if not EXAMPLES.exists():
        pytest.skip(f"IG examples not found at {EXAMPLES} (../shared is absent)")
    patient = _load(EXAMPLES / "Patient-pat-53234.json")
    by_url = {ext["url"].rsplit("/", 1)[1]: ext for ext in patient["extension"]}
    for extension, vs in (("us-core-race", race), ("us-core-ethnicity", ethnicity)):
        omb = [
            e["valueCoding"] for e in by_url[extension]["extension"] if e["url"] == "ombCategory"
        ]
        assert omb and {coding["code"] for coding in omb} <= _listed(vs, CDCREC)


def test_required_bindings_of_the_bundled_profiles_are_shipped_or_listed() -> None:
    """A required binding to a value set not held is checked by nobody; each one is named."""
    assert PROFILES.exists(), f"bundled profiles not found at {PROFILES}"
    shipped = {vs["url"] for vs in _of_type("ValueSet")}
    required = {
        binding["valueSet"].split("|")[0]
        for path in PROFILES.glob("*.json")
        for element in _load(path).get("differential", {}).get("element", [])
        for binding in [element.get("binding") or {}]
        if binding.get("strength") == "required" and binding.get("valueSet")
    }
    assert US_CORE_VS + "us-core-condition-code" in required
    assert required - shipped <= set(REQUIRED_NOT_SHIPPED), required - shipped
    assert not set(REQUIRED_NOT_SHIPPED) & shipped
