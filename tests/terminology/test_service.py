"""The terminology engine: look-ups, hierarchy, compose rules, membership, expansion, maps.

Spec: http://hl7.org/fhir/R4/terminology-service.html and the CodeSystem, ValueSet and
ConceptMap pages it links. Every resource is built here; the bundled content is checked
only for loading and a few facts it must hold.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from terminology import (
    CodeMatch,
    Concept,
    Dependency,
    ExpansionTooLarge,
    InvalidDefinition,
    Terminology,
    TerminologyError,
    Translation,
    UnknownCode,
    UnknownCodeSystem,
    UnknownConceptMap,
    UnknownValueSet,
    UnsupportedFilter,
)
from terminology.results import Designation, Property

CONTENT = Path(__file__).resolve().parents[2] / "terminology" / "content"

SDOH = "http://example.org/CodeSystem/sdoh"
CI = "http://example.org/CodeSystem/case-insensitive"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
VS = "http://example.org/ValueSet/"
CM = "http://example.org/ConceptMap/"


def code_system(url: str = SDOH, **elements: Any) -> dict[str, Any]:
    return {"resourceType": "CodeSystem", "url": url, "status": "active", **elements}


def value_set(name: str, *, include: list[Any] | None = None, **elements: Any) -> dict[str, Any]:
    compose = {"include": include} if include is not None else None
    resource: dict[str, Any] = {"resourceType": "ValueSet", "url": VS + name, "status": "active"}
    if compose is not None:
        resource["compose"] = compose
    return {**resource, **elements}


def concept_map(name: str, *groups: Mapping[str, Any], **elements: Any) -> dict[str, Any]:
    return {
        "resourceType": "ConceptMap",
        "url": CM + name,
        "status": "active",
        "group": list(groups),
        **elements,
    }


SDOH_CS = code_system(
    version="1.0.0",
    name="SDOHExample",
    content="complete",
    caseSensitive=True,
    valueSet=VS + "all-sdoh",
    concept=[
        {
            "code": "food-insecurity",
            "display": "Food Insecurity",
            "concept": [
                {
                    "code": "food-worry",
                    "display": "Worried food would run out",
                    "designation": [{"language": "es", "value": "Preocupado por la comida"}],
                },
                {"code": "food-ran-out", "display": "Food ran out"},
            ],
        },
        {
            "code": "housing-instability",
            "display": "Housing Instability",
            "property": [{"code": "child", "valueCode": "inadequate-housing"}],
        },
        {
            "code": "homelessness",
            "display": "Homelessness",
            "property": [
                {"code": "parent", "valueCode": "housing-instability"},
                {"code": "severity", "valueCode": "high"},
                {"code": "weight", "valueInteger": 3},
            ],
        },
        {"code": "inadequate-housing", "display": "Inadequate Housing"},
        {
            "code": "transportation-insecurity",
            "display": "Transportation Insecurity",
            "property": [{"code": "severity", "valueCode": "low"}],
        },
    ],
)

CI_CS = code_system(
    CI,
    content="complete",
    caseSensitive=False,
    concept=[{"code": "ABC", "display": "Alpha"}, {"code": "Def", "display": "Delta"}],
)

# ICD-10-CM held only as a fragment: what is not here may still exist.
ICD_CS = code_system(
    ICD,
    version="2024",
    content="fragment",
    concept=[
        {
            "code": "Z59",
            "display": "Problems related to housing and economic circumstances",
            "concept": [
                {
                    "code": "Z59.4",
                    "display": "Lack of adequate food",
                    "concept": [
                        {"code": "Z59.41", "display": "Food insecurity"},
                        {"code": "Z59.48", "display": "Other specified lack of adequate food"},
                    ],
                }
            ],
        },
        {
            "code": "Z60",
            "concept": [{"code": "Z60.2", "display": "Problems related to living alone"}],
        },
    ],
)


def sdoh_filter(prop: str, op: str, value: str) -> dict[str, Any]:
    return {"system": SDOH, "filter": [{"property": prop, "op": op, "value": value}]}


VALUE_SETS = [
    value_set(
        "listed",
        include=[
            {
                "system": SDOH,
                "concept": [
                    {"code": "food-insecurity"},
                    {"code": "homelessness", "display": "Homeless"},
                ],
            }
        ],
    ),
    value_set("food", include=[sdoh_filter("concept", "is-a", "food-insecurity")]),
    value_set(
        "combined",
        version="2.0.0",
        compose={
            "include": [{"valueSet": [VS + "food"]}, {"system": CI}],
            "exclude": [{"system": SDOH, "concept": [{"code": "food-ran-out"}]}],
        },
    ),
    value_set("loinc-snomed", include=[{"system": LOINC}, {"system": SNOMED}]),
    value_set(
        "loinc-but",
        compose={
            "include": [{"system": LOINC}],
            "exclude": [{"system": LOINC, "concept": [{"code": "88122-7"}]}],
        },
    ),
    value_set(
        "icd-food",
        include=[
            {"system": ICD, "filter": [{"property": "concept", "op": "is-a", "value": "Z59.4"}]}
        ],
    ),
    value_set("icd-all", include=[{"system": ICD}]),
    value_set("ci-all", include=[{"system": CI}]),
    value_set("cycle-a", include=[{"valueSet": [VS + "cycle-b"]}]),
    value_set("cycle-b", include=[{"valueSet": [VS + "cycle-a"]}]),
    value_set(
        "with-missing-import",
        include=[{"valueSet": [VS + "missing"]}, {"system": SDOH, "concept": [{"code": "stress"}]}],
    ),
    value_set(
        "intersect",
        include=[{"system": SDOH, "valueSet": [VS + "food"], "concept": [{"code": "food-worry"}]}],
    ),
    value_set(
        "expanded",
        expansion={
            "timestamp": "2024-01-01",
            "contains": [
                {"system": SDOH, "abstract": True, "code": "food-insecurity"},
                {
                    "system": SDOH,
                    "code": "food-insecurity",
                    "display": "Food!",
                    "contains": [{"system": SDOH, "code": "food-worry", "display": "Worry"}],
                },
            ],
        },
    ),
    value_set("stub"),
    value_set("unsupported", include=[sdoh_filter("concept", "child-of", "food-insecurity")]),
]

MAPS = [
    concept_map(
        "sdoh-to-icd",
        {
            "source": SDOH,
            "target": ICD,
            "element": [
                {
                    "code": "food-insecurity",
                    "target": [
                        {
                            "code": "Z59.41",
                            "display": "Food insecurity",
                            "equivalence": "equivalent",
                        }
                    ],
                },
                {
                    "code": "food-worry",
                    "target": [
                        {"code": "Z59.4", "equivalence": "wider"},
                        {
                            "code": "Z59.48",
                            "equivalence": "narrower",
                            "dependsOn": [
                                {"property": "http://example.org/severity", "value": "high"}
                            ],
                        },
                    ],
                },
                {"code": "transportation-insecurity", "target": [{"equivalence": "unmatched"}]},
            ],
            "unmapped": {"mode": "other-map", "url": CM + "fallback"},
        },
        sourceUri=VS + "all-sdoh",
        targetUri=VS + "icd-all",
    ),
    concept_map(
        "fallback",
        {
            "source": SDOH,
            "target": ICD,
            "element": [{"code": "homelessness", "target": [{"code": "Z59.0"}]}],
            "unmapped": {"mode": "fixed", "code": "Z59.9", "display": "Unspecified"},
        },
    ),
    concept_map(
        "same-codes",
        {"source": CI, "target": SDOH, "unmapped": {"mode": "provided"}},
        {"source": CI, "element": [{"code": "abc"}]},
    ),
]


@pytest.fixture(scope="module")
def terminology() -> Terminology:
    return Terminology([SDOH_CS, CI_CS, ICD_CS, *VALUE_SETS, *MAPS])


def codes(expansion_contains: tuple[Concept, ...]) -> list[str]:
    return [c.code for c in expansion_contains]


# --- resources and versions ------------------------------------------------------------------


def test_resources_are_found_by_url_and_by_canonical_with_version(
    terminology: Terminology,
) -> None:
    assert terminology.code_system(SDOH) is SDOH_CS
    assert terminology.code_system(SDOH, "1.0.0") is SDOH_CS
    assert terminology.code_system(f"{SDOH}|1.0.0") is SDOH_CS
    assert terminology.code_system(SDOH, "9.9.9") is None
    assert terminology.value_set(VS + "combined|2.0.0") is not None
    assert terminology.concept_map(CM + "fallback") is not None
    assert terminology.concept_map(CM + "nowhere") is None


def test_extended_replaces_the_same_version_and_answers_the_newest() -> None:
    base = Terminology([code_system(version="1.9.0", concept=[{"code": "old"}])])
    newer = code_system(version="1.10.0", concept=[{"code": "new"}])
    replacement = code_system(version="1.9.0", concept=[{"code": "replaced"}])
    grown = base.extended([newer, replacement])

    # 1.10.0 is newer than 1.9.0 though it sorts before it as text.
    assert grown.lookup(SDOH, "new") is not None
    assert grown.lookup(SDOH, "replaced", version="1.9.0") is not None
    assert grown.lookup(SDOH, "old", version="1.9.0") is None
    # The original is untouched: a Terminology never changes once built.
    assert base.lookup(SDOH, "old") is not None
    assert base.code_system(SDOH, "1.10.0") is None


def test_versions_that_do_not_sort_make_the_last_given_the_newest() -> None:
    first = code_system(version="March 2024", concept=[{"code": "a"}])
    second = code_system(version="June 2023", concept=[{"code": "b"}])
    held = Terminology([first, second])
    assert held.code_system(SDOH) is second
    assert held.extended([first]).code_system(SDOH) is first


def test_a_pre_release_is_older_than_its_release() -> None:
    release = code_system(version="3.0.0", concept=[{"code": "a"}])
    ballot = code_system(version="3.0.0-ballot", concept=[{"code": "b"}])
    assert Terminology([release, ballot]).code_system(SDOH) is release


@pytest.mark.parametrize(
    "resource",
    [
        {"resourceType": "Patient", "id": "p"},
        {"resourceType": "CodeSystem", "status": "active"},
        {"resourceType": "ValueSet", "url": 7},
        {"resourceType": "ConceptMap", "url": "http://x|1"},
        {"resourceType": "CodeSystem", "url": "http://x", "version": 2},
        ["not", "an", "object"],
    ],
)
def test_resources_that_cannot_be_held_are_refused_with_a_reason(resource: Any) -> None:
    with pytest.raises(InvalidDefinition):
        Terminology([resource])


@pytest.mark.parametrize(
    ("resource", "defect"),
    [
        (value_set("bad", include=[{"valueSet": [VS + "bad"]}]), "cycle"),
        (value_set("bad", include=[{"concept": [{"code": "x"}]}]), "neither system nor valueSet"),
        (value_set("bad", include=[sdoh_filter("concept", "child-of", "x")]), "child-of"),
        (value_set("bad", include=[sdoh_filter("code", "regex", "(")]), "not a valid pattern"),
        ({"resourceType": "ValueSet", "status": "active"}, "needs a url"),
    ],
)
def test_problems_finds_what_makes_a_posted_definition_unusable(
    terminology: Terminology, resource: dict[str, Any], defect: str
) -> None:
    found = terminology.problems(resource)
    assert len(found) == 1 and defect in found[0].message


def test_problems_accepts_what_is_merely_not_held_here(terminology: Terminology) -> None:
    for resource in (
        value_set("ok", include=[{"valueSet": [VS + "later"]}, {"system": "http://elsewhere"}]),
        value_set(
            "ok",
            include=[
                {"system": LOINC, "filter": [{"property": "COMPONENT", "op": "=", "value": "x"}]}
            ],
        ),
        code_system("http://new", concept=[{"code": "a"}]),
        concept_map("ok", {"source": SDOH}),
    ):
        assert terminology.problems(resource) == ()


# --- $lookup ---------------------------------------------------------------------------------


def test_lookup_gives_display_designations_properties_and_both_directions_of_hierarchy(
    terminology: Terminology,
) -> None:
    worry = terminology.lookup(SDOH, "food-worry")
    assert worry is not None
    assert (worry.name, worry.version, worry.display) == (
        "SDOHExample",
        "1.0.0",
        "Worried food would run out",
    )
    assert worry.designations == (Designation("Preocupado por la comida", "es"),)
    assert worry.parents == ("food-insecurity",)

    homeless = terminology.lookup(SDOH, "homelessness")
    assert homeless is not None
    assert homeless.parents == ("housing-instability",)
    assert Property("severity", "code", "high") in homeless.properties
    assert Property("weight", "integer", 3) in homeless.properties

    housing = terminology.lookup(SDOH, "housing-instability")
    assert housing is not None
    # One child from its own "child" property, one from the child's "parent" property.
    assert set(housing.children) == {"inadequate-housing", "homelessness"}


def test_lookup_of_a_code_not_held_is_none_and_of_a_system_not_held_raises(
    terminology: Terminology,
) -> None:
    assert terminology.lookup(SDOH, "no-such-code") is None
    assert terminology.lookup(ICD, "Z99.89") is None  # a fragment: not known here
    with pytest.raises(UnknownCodeSystem, match="loinc"):
        terminology.lookup(LOINC, "88122-7")
    with pytest.raises(UnknownCodeSystem):
        terminology.lookup(SDOH, "food-worry", version="0.1.0")


def test_case_insensitive_code_systems_match_any_case_and_answer_their_own_spelling(
    terminology: Terminology,
) -> None:
    found = terminology.lookup(CI, "abc")
    assert found is not None and found.code == "ABC"
    assert terminology.lookup(SDOH, "FOOD-WORRY") is None  # case-sensitive


# --- hierarchy, $subsumes ------------------------------------------------------------------


def test_descendants_and_ancestors_follow_nesting_and_parent_child_properties(
    terminology: Terminology,
) -> None:
    assert terminology.descendants(SDOH, "food-insecurity") == {
        "food-insecurity",
        "food-worry",
        "food-ran-out",
    }
    assert terminology.descendants(SDOH, "housing-instability") == {
        "housing-instability",
        "homelessness",
        "inadequate-housing",
    }
    assert terminology.ancestors(SDOH, "food-ran-out") == {"food-ran-out", "food-insecurity"}
    assert terminology.ancestors(ICD, "Z59.41") == {"Z59.41", "Z59.4", "Z59"}
    assert terminology.descendants(SDOH, "not-held") == {"not-held"}
    with pytest.raises(UnknownCodeSystem):
        terminology.descendants(LOINC, "88122-7")


def test_cycles_in_parent_properties_end_the_walk() -> None:
    looped = code_system(
        concept=[
            {"code": "a", "property": [{"code": "parent", "valueCode": "b"}]},
            {"code": "b", "property": [{"code": "parent", "valueCode": "a"}]},
        ]
    )
    assert Terminology([looped]).descendants(SDOH, "a") == {"a", "b"}


@pytest.mark.parametrize(
    ("code_a", "code_b", "outcome"),
    [
        ("food-insecurity", "food-insecurity", "equivalent"),
        ("food-insecurity", "food-worry", "subsumes"),
        ("homelessness", "housing-instability", "subsumed-by"),
        ("food-worry", "homelessness", "not-subsumed"),
    ],
)
def test_subsumes(terminology: Terminology, code_a: str, code_b: str, outcome: str) -> None:
    assert terminology.subsumes(SDOH, code_a, code_b) == outcome


def test_subsumes_refuses_unknown_codes_and_systems(terminology: Terminology) -> None:
    with pytest.raises(UnknownCode, match="no-such"):
        terminology.subsumes(SDOH, "food-insecurity", "no-such")
    with pytest.raises(UnknownCode, match="only part"):
        terminology.subsumes(ICD, "Z59", "Z59.99")
    with pytest.raises(UnknownCodeSystem):
        terminology.subsumes(LOINC, "1-8", "2-6")


def test_a_hierarchy_that_does_not_mean_is_a_subsumes_nothing() -> None:
    grouped = code_system(
        hierarchyMeaning="grouped-by", concept=[{"code": "group", "concept": [{"code": "x"}]}]
    )
    held = Terminology([grouped])
    assert held.subsumes(SDOH, "group", "x") == "not-subsumed"
    child = held.lookup(SDOH, "x")
    assert child is not None and child.parents == ("group",)


# --- compose: filters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (("concept", "is-a", "food-insecurity"), ["food-insecurity", "food-worry", "food-ran-out"]),
        (("concept", "descendent-of", "food-insecurity"), ["food-worry", "food-ran-out"]),
        (
            ("concept", "is-not-a", "food-insecurity"),
            [
                "housing-instability",
                "homelessness",
                "inadequate-housing",
                "transportation-insecurity",
            ],
        ),
        (("concept", "generalizes", "food-worry"), ["food-insecurity", "food-worry"]),
        (("concept", "is-a", "not-a-code"), []),
        (("severity", "=", "high"), ["homelessness"]),
        (("concept", "=", "homelessness"), ["homelessness"]),
        (("concept", "in", "food-worry, homelessness,unknown"), ["food-worry", "homelessness"]),
        (("severity", "in", "low,high"), ["homelessness", "transportation-insecurity"]),
        (
            ("severity", "not-in", "low"),
            [
                "food-insecurity",
                "food-worry",
                "food-ran-out",
                "housing-instability",
                "homelessness",
                "inadequate-housing",
            ],
        ),
        (("code", "regex", "food-.*"), ["food-insecurity", "food-worry", "food-ran-out"]),
        (("code", "regex", "food"), []),  # the whole code must match
        (("display", "regex", ".*Housing.*"), ["housing-instability", "inadequate-housing"]),
        (("severity", "exists", "true"), ["homelessness", "transportation-insecurity"]),
        (
            ("parent", "exists", "false"),
            ["food-insecurity", "housing-instability", "transportation-insecurity"],
        ),
        (("parent", "=", "housing-instability"), ["homelessness", "inadequate-housing"]),
    ],
)
def test_filters(condition: tuple[str, str, str], expected: list[str]) -> None:
    held = Terminology([SDOH_CS, value_set("f", include=[sdoh_filter(*condition)])])
    assert codes(held.expand(VS + "f").contains) == expected


def test_several_filters_in_one_include_all_apply() -> None:
    include = {
        "system": SDOH,
        "filter": [
            {"property": "concept", "op": "is-a", "value": "housing-instability"},
            {"property": "severity", "op": "exists", "value": "false"},
        ],
    }
    held = Terminology([SDOH_CS, value_set("f", include=[include])])
    assert codes(held.expand(VS + "f").contains) == ["housing-instability", "inadequate-housing"]


def test_a_filter_not_implemented_is_refused_on_expand_and_cannot_tell_on_membership(
    terminology: Terminology,
) -> None:
    with pytest.raises(UnsupportedFilter, match="child-of"):
        terminology.expand(VS + "unsupported")
    assert terminology.member_of(VS + "unsupported", SDOH, "food-worry") is None
    assert terminology.member_of(VS + "unsupported", LOINC, "1-8") is False


@pytest.mark.parametrize(
    ("condition", "error"),
    [
        (("code", "regex", "(unclosed"), "not a valid pattern"),
        (("severity", "exists", "maybe"), "true or false"),
    ],
)
def test_malformed_filter_values_are_reported(condition: tuple[str, str, str], error: str) -> None:
    held = Terminology([SDOH_CS, value_set("f", include=[sdoh_filter(*condition)])])
    with pytest.raises(InvalidDefinition, match=error):
        held.expand(VS + "f")


def test_case_insensitive_filters_and_lists_ignore_case() -> None:
    include = {"system": CI, "filter": [{"property": "concept", "op": "in", "value": "abc,DEF"}]}
    held = Terminology([CI_CS, value_set("f", include=[include])])
    assert codes(held.expand(VS + "f").contains) == ["ABC", "Def"]


# --- compose: includes, excludes, imports --------------------------------------------------


def test_listed_concepts_keep_their_order_and_the_value_set_display_wins(
    terminology: Terminology,
) -> None:
    expansion = terminology.expand(VS + "listed")
    assert expansion.contains == (
        Concept(SDOH, "1.0.0", "food-insecurity", "Food Insecurity"),
        Concept(SDOH, "1.0.0", "homelessness", "Homeless"),
    )
    assert (expansion.url, expansion.total, expansion.offset) == (VS + "listed", 2, 0)


def test_imports_are_included_and_excludes_apply_after_every_include(
    terminology: Terminology,
) -> None:
    expansion = terminology.expand(VS + "combined")
    assert codes(expansion.contains) == ["food-insecurity", "food-worry", "ABC", "Def"]
    assert expansion.version == "2.0.0"


def test_system_and_value_set_in_one_include_intersect(terminology: Terminology) -> None:
    assert codes(terminology.expand(VS + "intersect").contains) == ["food-worry"]


def test_an_import_cycle_is_refused_clearly(terminology: Terminology) -> None:
    with pytest.raises(InvalidDefinition, match="cycle"):
        terminology.expand(VS + "cycle-a")
    assert terminology.member_of(VS + "cycle-a", SDOH, "food-worry") is None


def test_an_import_not_held_blocks_expansion_but_not_what_else_is_known(
    terminology: Terminology,
) -> None:
    with pytest.raises(UnknownValueSet, match="missing"):
        terminology.expand(VS + "with-missing-import")
    assert terminology.member_of(VS + "with-missing-import", SDOH, "stress") is True
    assert terminology.member_of(VS + "with-missing-import", SDOH, "food-worry") is None


def test_a_value_set_with_only_an_expansion_uses_it(terminology: Terminology) -> None:
    expansion = terminology.expand(VS + "expanded")
    assert expansion.contains == (
        Concept(SDOH, None, "food-insecurity", "Food!"),
        Concept(SDOH, None, "food-worry", "Worry"),
    )
    assert terminology.member_of(VS + "expanded", SDOH, "food-ran-out") is False


def test_a_code_system_value_set_exists_without_a_value_set_resource(
    terminology: Terminology,
) -> None:
    assert terminology.member_of(VS + "all-sdoh", SDOH, "homelessness") is True
    assert terminology.expand(VS + "all-sdoh").total == 7


# --- $expand ---------------------------------------------------------------------------------


def test_expand_pages_and_filters_by_text(terminology: Terminology) -> None:
    page = terminology.expand(VS + "all-sdoh", offset=2, count=2)
    assert (page.total, page.offset, codes(page.contains)) == (
        7,
        2,
        ["food-ran-out", "housing-instability"],
    )
    # Words of the display, by prefix, in any order; or the start of the code.
    assert codes(terminology.expand(VS + "all-sdoh", filter="run WORR").contains) == ["food-worry"]
    assert codes(terminology.expand(VS + "ci-all", filter="ab").contains) == ["ABC"]
    assert terminology.expand(VS + "all-sdoh", filter="insecurity").total == 2


def test_expand_refuses_more_codes_than_the_limit_unless_a_page_is_asked(
    terminology: Terminology,
) -> None:
    with pytest.raises(ExpansionTooLarge, match="more than the limit of 5"):
        terminology.expand(VS + "all-sdoh", limit=5)
    assert len(terminology.expand(VS + "all-sdoh", limit=5, count=100).contains) == 5


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("loinc-snomed", "all of 'http://loinc.org', which is not held here"),
        ("icd-all", "held here only in part \\(fragment\\)"),
        ("icd-food", "filters 'http://hl7.org/fhir/sid/icd-10-cm', which is held here only"),
        ("stub", "neither compose nor expansion"),
    ],
)
def test_value_sets_that_cannot_be_enumerated_say_why(
    terminology: Terminology, name: str, reason: str
) -> None:
    with pytest.raises(ExpansionTooLarge, match=reason):
        terminology.expand(VS + name)


def test_expand_of_an_unknown_value_set_raises(terminology: Terminology) -> None:
    with pytest.raises(UnknownValueSet, match="nowhere"):
        terminology.expand(VS + "nowhere")


# --- membership ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "system", "code", "expected"),
    [
        ("listed", SDOH, "homelessness", True),
        ("listed", SDOH, "food-worry", False),
        ("listed", LOINC, "homelessness", False),
        ("listed", None, "homelessness", True),  # a bare code element
        ("loinc-snomed", LOINC, "88122-7", True),  # any code of a whole system
        ("loinc-snomed", SNOMED, "1234", True),
        ("loinc-snomed", SDOH, "food-worry", False),
        ("loinc-snomed", None, "88122-7", None),  # whose code is it?
        ("loinc-but", LOINC, "88122-7", False),
        ("icd-food", ICD, "Z59.41", True),
        ("icd-food", ICD, "Z60.2", False),  # held, and not below Z59.4
        ("icd-food", ICD, "Z59.49", None),  # not held: cannot tell
        ("ci-all", CI, "abc", True),
        ("ci-all", CI, "xyz", False),  # complete code system: xyz does not exist
        ("combined", SDOH, "food-ran-out", False),
        ("nowhere", SDOH, "food-worry", None),
    ],
)
def test_member_of(
    terminology: Terminology, name: str, system: str | None, code: str, expected: bool | None
) -> None:
    assert terminology.member_of(VS + name, system, code) is expected


def test_member_of_accepts_a_versioned_canonical(terminology: Terminology) -> None:
    assert terminology.member_of(VS + "combined|2.0.0", CI, "DEF") is True
    assert terminology.member_of(VS + "combined|1.0.0", CI, "DEF") is None


def test_codes_in_writes_a_value_set_as_systems_codes_and_exclusions(
    terminology: Terminology,
) -> None:
    assert terminology.codes_in(VS + "loinc-but") == CodeMatch(
        systems=frozenset({LOINC}),
        codes=frozenset(),
        excluded=frozenset({(LOINC, "88122-7")}),
    )
    assert terminology.codes_in(VS + "combined") == CodeMatch(
        systems=frozenset(),
        codes=frozenset(
            {(SDOH, "food-insecurity"), (SDOH, "food-worry"), (CI, "ABC"), (CI, "Def")}
        ),
        excluded=frozenset(),
        case_insensitive=frozenset({CI}),
    )


def test_codes_in_refuses_what_cannot_be_written_as_codes(terminology: Terminology) -> None:
    with pytest.raises(ExpansionTooLarge, match="only in part"):
        terminology.codes_in(VS + "icd-food")
    with pytest.raises(UnknownValueSet):
        terminology.codes_in(VS + "nowhere")


def test_held_only_reads_a_filter_over_a_fragment_as_the_codes_held(
    terminology: Terminology,
) -> None:
    held = {(ICD, "Z59.4"), (ICD, "Z59.41"), (ICD, "Z59.48")}
    assert terminology.codes_in(VS + "icd-food", held_only=True).codes == held
    expansion = terminology.expand(VS + "icd-food", held_only=True)
    assert codes(expansion.contains) == ["Z59.4", "Z59.41", "Z59.48"]
    # A whole code system held in part still cannot be listed.
    with pytest.raises(ExpansionTooLarge):
        terminology.expand(VS + "icd-all", held_only=True)


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("with-missing-import", UnknownValueSet),
        ("unsupported", UnsupportedFilter),
        ("cycle-a", InvalidDefinition),
    ],
)
def test_held_only_still_raises_doubts_that_are_not_about_codes_held(
    terminology: Terminology, name: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        terminology.codes_in(VS + name, held_only=True)
    with pytest.raises(error):
        terminology.expand(VS + name, held_only=True)


# --- $validate-code --------------------------------------------------------------------------


def test_validate_code_against_a_code_system(terminology: Terminology) -> None:
    valid = terminology.validate_code(url=SDOH, system=SDOH, code="food-worry")
    assert (valid.result, valid.message, valid.display) == (
        True,
        None,
        "Worried food would run out",
    )

    unknown = terminology.validate_code(system=SDOH, code="food-wory")
    assert unknown.result is False and "food-wory" in (unknown.message or "")

    with pytest.raises(UnknownCodeSystem):
        terminology.validate_code(system=LOINC, code="88122-7")


def test_a_wrong_display_is_valid_with_a_warning_and_the_right_display(
    terminology: Terminology,
) -> None:
    checked = terminology.validate_code(system=SDOH, code="food-worry", display="Hungry")
    assert checked.result is True
    assert checked.display == "Worried food would run out"
    assert checked.message is not None and "Hungry" not in checked.message
    # Case, spacing and designations are not wrong displays.
    for display in ("worried  FOOD would run out", "Preocupado por la comida"):
        assert (
            terminology.validate_code(system=SDOH, code="food-worry", display=display).message
            is None
        )


def test_validate_code_cannot_tell_for_a_code_not_held_in_a_fragment(
    terminology: Terminology,
) -> None:
    checked = terminology.validate_code(system=ICD, code="Z59.49")
    assert checked.result is None
    assert "only in part" in (checked.message or "")
    assert terminology.validate_code(system=ICD, code="Z59.41").result is True


def test_validate_code_refuses_a_coding_of_another_system(terminology: Terminology) -> None:
    checked = terminology.validate_code(url=SDOH, system=CI, code="ABC")
    assert checked.result is False


def test_validate_code_against_a_value_set(terminology: Terminology) -> None:
    member = terminology.validate_code(value_set=VS + "listed", system=SDOH, code="homelessness")
    assert (member.result, member.display) == (True, "Homeless")

    outside = terminology.validate_code(value_set=VS + "listed", system=SDOH, code="food-worry")
    assert outside.result is False and "not in ValueSet" in (outside.message or "")

    not_a_code = terminology.validate_code(value_set=VS + "loinc-snomed", system=SDOH, code="x")
    assert not_a_code.result is False

    unknown = terminology.validate_code(value_set=VS + "icd-food", system=ICD, code="Z59.49")
    assert unknown.result is None and "Cannot tell" in (unknown.message or "")

    whole = terminology.validate_code(value_set=VS + "loinc-snomed", system=LOINC, code="1-8")
    assert whole.result is True

    with pytest.raises(UnknownValueSet):
        terminology.validate_code(value_set=VS + "nowhere", system=SDOH, code="food-worry")


# --- $translate ------------------------------------------------------------------------------


def test_translate_returns_each_target(terminology: Terminology) -> None:
    assert terminology.translate(system=SDOH, code="food-insecurity", url=CM + "sdoh-to-icd") == [
        Translation("equivalent", ICD, "Z59.41", "Food insecurity", CM + "sdoh-to-icd")
    ]


def test_translate_targets_with_depends_on_need_the_dependency(terminology: Terminology) -> None:
    without = terminology.translate(system=SDOH, code="food-worry", url=CM + "sdoh-to-icd")
    assert [(t.code, t.equivalence) for t in without] == [("Z59.4", "wider")]

    severity = Dependency("http://example.org/severity", "high")
    with_it = terminology.translate(
        system=SDOH, code="food-worry", url=CM + "sdoh-to-icd", dependencies=[severity]
    )
    assert [(t.code, t.equivalence) for t in with_it] == [
        ("Z59.4", "wider"),
        ("Z59.48", "narrower"),
    ]


def test_translate_reports_an_unmatched_target(terminology: Terminology) -> None:
    assert terminology.translate(
        system=SDOH, code="transportation-insecurity", url=CM + "sdoh-to-icd"
    ) == [Translation("unmatched", ICD, None, None, CM + "sdoh-to-icd")]


def test_unmapped_codes_follow_other_map_then_fixed(terminology: Terminology) -> None:
    followed = terminology.translate(system=SDOH, code="homelessness", url=CM + "sdoh-to-icd")
    assert followed == [Translation("equivalent", ICD, "Z59.0", None, CM + "fallback")]
    fixed = terminology.translate(system=SDOH, code="stress", url=CM + "sdoh-to-icd")
    assert fixed == [Translation("inexact", ICD, "Z59.9", "Unspecified", CM + "fallback")]


def test_unmapped_provided_keeps_the_code(terminology: Terminology) -> None:
    assert terminology.translate(system=CI, code="Def", url=CM + "same-codes") == [
        Translation("equivalent", SDOH, "Def", None, CM + "same-codes")
    ]


def test_translate_in_reverse_turns_the_equivalence_around(terminology: Terminology) -> None:
    back = terminology.translate(system=ICD, code="Z59.4", reverse=True)
    assert back == [Translation("narrower", SDOH, "food-worry", None, CM + "sdoh-to-icd")]


def test_translate_picks_maps_by_source_and_target_value_sets(terminology: Terminology) -> None:
    scoped = terminology.translate(
        system=SDOH, code="food-insecurity", source=VS + "all-sdoh", target=VS + "icd-all"
    )
    assert [t.concept_map for t in scoped] == [CM + "sdoh-to-icd"]
    assert terminology.translate(system=SDOH, code="food-insecurity", target=VS + "other") == []
    assert (
        terminology.translate(system=SDOH, code="food-insecurity", target_system="http://other")
        == []
    )


def test_translate_with_an_unknown_map_raises(terminology: Terminology) -> None:
    with pytest.raises(UnknownConceptMap, match="nowhere"):
        terminology.translate(system=SDOH, code="x", url=CM + "nowhere")
    broken = concept_map(
        "broken", {"source": SDOH, "unmapped": {"mode": "other-map", "url": CM + "gone"}}
    )
    with pytest.raises(UnknownConceptMap, match="gone"):
        terminology.extended([broken]).translate(system=SDOH, code="x", url=CM + "broken")


# --- odd content -----------------------------------------------------------------------------


ODD = [
    code_system("http://odd/empty"),
    code_system(
        "http://odd/strange",
        content=7,
        caseSensitive="no",
        concept=[
            {"code": 5, "concept": [{"code": "orphan", "display": 9}]},
            None,
            "text",
            {"code": " padded "},
            {"code": "ok", "property": [{"code": "parent"}, {"valueCode": "x"}, 3]},
            {"code": "ok", "display": "repeated"},
        ],
        hierarchyMeaning=["is-a"],
    ),
    value_set("odd-empty", compose={}),
    value_set("odd-include", compose={"include": [{}, None, {"system": 3}, {"valueSet": "x"}]}),
    value_set(
        "odd-filter",
        include=[
            {"system": "http://odd/strange", "filter": [{"op": "is-a"}, None, {"property": 1}]},
            {"system": "http://odd/strange", "concept": [{"code": ["x"]}, {"display": "y"}]},
        ],
    ),
    value_set("odd-expansion", expansion={"contains": [{"code": "x"}, 1], "total": "many"}),
    concept_map("odd", {"source": SDOH}, {"element": [{"code": "x", "target": "nope"}]}, None),
]


@pytest.mark.parametrize(
    "name", ["odd-empty", "odd-include", "odd-filter", "odd-expansion", "nowhere"]
)
def test_odd_value_sets_raise_only_terminology_errors(name: str) -> None:
    held = Terminology(ODD)
    assert held.member_of(VS + name, "http://odd/strange", "ok") in (True, False, None)
    assert held.member_of(VS + name, None, "ok") in (True, False, None)
    answers_or_our_error(held.expand, VS + name)
    answers_or_our_error(held.codes_in, VS + name)


def test_odd_code_systems_keep_what_is_usable() -> None:
    held = Terminology(ODD)
    assert held.lookup("http://odd/empty", "x") is None
    orphan = held.lookup("http://odd/strange", "orphan")
    assert orphan is not None and orphan.display is None and orphan.parents == ()
    assert held.lookup("http://odd/strange", " padded ") is None
    first = held.lookup("http://odd/strange", "ok")
    assert first is not None and first.display is None
    assert held.translate(system=SDOH, code="x") == []


# --- any structure: only our errors ----------------------------------------------------------

_codes = st.sampled_from(["a", "b", "c", "A", "", " b", 7, None])
_junk = st.sampled_from([None, 3, "x", [], {}])
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
_concept = st.recursive(
    st.fixed_dictionaries(
        {"code": _codes},
        optional={
            "display": st.sampled_from(["Alpha", "beta gamma", 3]),
            "property": st.lists(
                _junk
                | st.fixed_dictionaries(
                    {"code": st.sampled_from(["parent", "child", "p", 1])},
                    optional={
                        "valueCode": _codes,
                        "valueCoding": st.fixed_dictionaries({"code": _codes}) | _json,
                        "valueBoolean": st.booleans() | _json,
                        "valueInteger": st.integers() | _json,
                    },
                ),
                max_size=3,
            ),
        },
    ),
    lambda inner: st.fixed_dictionaries({"code": _codes, "concept": st.lists(inner, max_size=3)}),
    max_leaves=10,
)
_held = st.sampled_from(["http://h/cs", "http://h/fragment"])
_systems = _held | st.sampled_from([LOINC, 4, ""])
_filter = st.fixed_dictionaries(
    {
        "property": st.sampled_from(["concept", "code", "display", "parent", "child", "p", 1]),
        "op": st.sampled_from(
            ["=", "is-a", "descendent-of", "is-not-a", "regex", "in", "not-in", "exists"]
            + ["generalizes", "child-of", None]
        ),
        "value": st.sampled_from(["a", "a,b", "true", "false", "[", ".*", "(a|b)+", "", 2]),
    }
)
_listed = st.lists(st.fixed_dictionaries({"code": _codes}) | _json, max_size=3)
_imports = st.lists(st.sampled_from([VS + "h0", VS + "h1", VS + "gone", 5]), max_size=2)
# Mostly well-shaped includes over the code systems held, so that filters are evaluated;
# then anything at all.
_include = st.one_of(
    st.fixed_dictionaries(
        {"system": _held, "filter": st.lists(_filter | _junk, min_size=1, max_size=2)}
    ),
    st.fixed_dictionaries({"system": _systems}, optional={"concept": _listed}),
    st.fixed_dictionaries({"valueSet": _imports}, optional={"system": _held}),
    st.fixed_dictionaries(
        {},
        optional={
            "system": _systems,
            "version": st.sampled_from(["1", "2", 3]),
            "concept": _listed | _json,
            "filter": st.lists(_filter | _json, max_size=2) | _json,
            "valueSet": _imports | _json,
        },
    ),
    _json,
)
_compose = st.fixed_dictionaries(
    {"include": st.lists(_include, min_size=1, max_size=3)},
    optional={"exclude": st.lists(_include, max_size=2)},
) | st.fixed_dictionaries({}, optional={"include": _json, "exclude": _json})
_target = st.fixed_dictionaries(
    {},
    optional={
        "code": _codes,
        "equivalence": st.sampled_from(["equivalent", "unmatched", "wider", 3]),
        "dependsOn": st.lists(
            st.fixed_dictionaries({"property": st.just("e"), "value": _codes}) | _junk, max_size=2
        )
        | _junk,
    },
)
_element = st.fixed_dictionaries(
    {"code": st.sampled_from(["a", "b"]) | _codes},
    optional={"target": st.lists(_target | _junk, max_size=2) | _junk},
)
_unmapped = st.fixed_dictionaries(
    {"mode": st.sampled_from(["provided", "fixed", "other-map", 1])},
    optional={"code": _codes, "url": st.sampled_from([CM + "h", CM + "gone", 3])},
)
_group = st.one_of(
    st.fixed_dictionaries(
        {"source": _held, "element": st.lists(_element | _junk, min_size=1, max_size=3)},
        optional={"target": _systems, "unmapped": _unmapped | _junk},
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "source": _systems,
            "target": _systems,
            "element": st.lists(_element, max_size=3) | _junk,
            "unmapped": _unmapped | _junk,
        },
    ),
    _junk,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    concepts=st.lists(_concept, max_size=4),
    case_sensitive=st.sampled_from([True, False, None]),
    compose0=_compose,
    compose1=_compose,
    groups=st.lists(_group, max_size=2),
    probe=_codes,
    probe_system=st.sampled_from(["http://h/cs", "http://h/fragment", LOINC, None]),
)
def test_any_definition_yields_answers_or_terminology_errors(
    concepts: list[Any],
    case_sensitive: bool | None,
    compose0: Any,
    compose1: Any,
    groups: list[Any],
    probe: Any,
    probe_system: str | None,
) -> None:
    complete = code_system("http://h/cs", concept=concepts, content="complete")
    if case_sensitive is not None:
        complete["caseSensitive"] = case_sensitive
    fragment = code_system("http://h/fragment", concept=concepts, content="fragment")
    resources = [
        complete,
        fragment,
        value_set("h0", compose=compose0),
        value_set("h1", compose=compose1),
        concept_map("h", *groups),
    ]
    held = Terminology(resources)
    system = probe_system or "http://h/cs"
    for name in (VS + "h0", VS + "h1"):
        assert held.member_of(name, probe_system, probe) in (True, False, None)
        answers_or_our_error(held.expand, name, filter="a", count=5)
        answers_or_our_error(held.codes_in, name)
        answers_or_our_error(held.validate_code, value_set=name, system=system, code=probe)
    for cs in ("http://h/cs", "http://h/fragment"):
        answers_or_our_error(held.lookup, cs, probe)
        answers_or_our_error(held.subsumes, cs, probe, "a")
        answers_or_our_error(held.descendants, cs, "a")
        answers_or_our_error(held.ancestors, cs, "b")
        answers_or_our_error(held.validate_code, system=cs, code=probe, display="Alpha")
    for reverse in (False, True):
        for source in ("http://h/cs", "http://h/fragment", LOINC):
            answers_or_our_error(held.translate, system=source, code="a", reverse=reverse)
            answers_or_our_error(
                held.translate, system=source, code=probe, url=CM + "h", reverse=reverse
            )


def answers_or_our_error(call: Callable[..., object], *args: Any, **kwargs: Any) -> None:
    try:
        call(*args, **kwargs)
    except TerminologyError as exc:
        assert exc.message


# --- the bundled content ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundled() -> Terminology:
    assert any(CONTENT.glob("*.json")), "terminology/content ships no definitions"
    return Terminology.bundled()


def test_the_bundled_content_loads_and_every_value_set_compiles(bundled: Terminology) -> None:
    assert Terminology.bundled() is bundled  # loaded once
    for path in sorted(CONTENT.glob("ValueSet-*.json")):
        url = _url_of(path)
        assert bundled.value_set(url) is not None, path.name
        # Compiling never raises; expanding may only raise our own reasons.
        assert bundled.member_of(url, SDOH, "x") in (True, False, None)
        try:
            bundled.expand(url, count=10)
        except (ExpansionTooLarge, UnknownValueSet, UnsupportedFilter) as exc:
            assert exc.message


def test_the_bundled_icd_10_cm_places_food_insecurity_below_z59(bundled: Terminology) -> None:
    assert "Z59.41" in bundled.descendants(ICD, "Z59")
    assert bundled.subsumes(ICD, "Z59", "Z59.41") == "subsumes"


def test_the_bundled_sdoh_categories_hold_food_insecurity(bundled: Terminology) -> None:
    url = "http://hl7.org/fhir/us/sdoh-clinicalcare/ValueSet/SDOHCC-ValueSetSDOHCategory"
    temporary = (
        "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
    )
    assert bundled.member_of(url, temporary, "food-insecurity") is True
    assert bundled.member_of(url, temporary, "make-contact") is False
    assert bundled.expand(url).total == 24


def test_the_bundled_food_domain_lists_the_held_icd_codes_below_z59_4(
    bundled: Terminology,
) -> None:
    url = "http://sdoh-fhir.org/ValueSet/sdoh-domain-food-insecurity"
    assert bundled.member_of(url, ICD, "Z59.41") is True
    assert bundled.member_of(url, ICD, "Z59.5") is False
    assert {(ICD, "Z59.41"), (ICD, "Z59.48")} <= bundled.codes_in(url, held_only=True).codes


def _url_of(path: Path) -> str:
    url = json.loads(path.read_text(encoding="utf-8")).get("url")
    assert isinstance(url, str), path.name
    return url
