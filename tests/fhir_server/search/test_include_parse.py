"""Parsing _include and _revinclude values against the registry."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_server.search.include import Include, InvalidInclude, parse_includes, split_includes
from fhir_server.search.registry import SearchRegistry

REGISTRY = SearchRegistry.load_default()


def test_forms() -> None:
    (include,) = parse_includes("Observation", [("_include", "Observation:subject")], REGISTRY)
    assert include == Include(
        "Observation", ("subject",), None, False, False, "Observation:subject"
    )
    (typed,) = parse_includes(
        "Task", [("_include:iterate", "ServiceRequest:subject:Patient")], REGISTRY
    )
    assert (typed.source_type, typed.target_type, typed.iterate) == (
        "ServiceRequest",
        "Patient",
        True,
    )
    (reverse,) = parse_includes("Patient", [("_revinclude", "Task:subject")], REGISTRY)
    assert reverse.reverse and reverse.params == ("subject",)
    (wildcard,) = parse_includes("Task", [("_include", "*")], REGISTRY)
    assert {"focus", "subject", "owner"} <= set(wildcard.params)


@pytest.mark.parametrize(
    "key, value",
    [
        ("_include", "Observation"),
        ("_include", "Observation:code"),
        ("_include", "Patient:organization"),  # not the searched type, no :iterate
        ("_include", "Observation:subject:Nope"),
        ("_include", "Observation:performer:Location"),  # never a target of performer
        ("_include:deep", "Observation:subject"),
        ("_revinclude", "Nope:subject"),
        ("_revinclude", "*"),
    ],
)
def test_refusals(key: str, value: str) -> None:
    with pytest.raises(InvalidInclude):
        parse_includes("Observation", [(key, value)], REGISTRY)


def test_split_keeps_order() -> None:
    items = [("a", "1"), ("_include", "x"), ("b", "2"), ("_revinclude:iterate", "y")]
    assert split_includes(items) == (
        [("_include", "x"), ("_revinclude:iterate", "y")],
        [("a", "1"), ("b", "2")],
    )


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["_include", "_revinclude", "_include:iterate", "_revinclude:x"]),
    st.text(alphabet=st.sampled_from(list("PatientObservation:*subjec-_ ")), max_size=40),
)
def test_arbitrary_values_parse_or_say_why(key: str, value: str) -> None:
    try:
        includes = parse_includes("Observation", [(key, value)], REGISTRY)
    except InvalidInclude as exc:
        assert str(exc)
    else:
        assert len(includes) == 1 and includes[0].params
