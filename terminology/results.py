"""What the terminology operations answer: plain frozen dataclasses, no FHIR models.

Each mirrors the output parameters of its operation in FHIR R4, so the server can render a
Parameters resource from it without knowing how the answer was found:
http://hl7.org/fhir/R4/terminology-service.html
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CodeMatch",
    "Coding",
    "Concept",
    "Dependency",
    "Designation",
    "Expansion",
    "Lookup",
    "Property",
    "Translation",
    "Validation",
]


@dataclass(frozen=True, slots=True)
class Coding:
    system: str | None
    code: str | None
    display: str | None = None


@dataclass(frozen=True, slots=True)
class Designation:
    """CodeSystem.concept.designation: another name of a concept (a language, a use)."""

    value: str
    language: str | None = None
    use: Coding | None = None


PropertyValue = str | int | float | bool | Coding


@dataclass(frozen=True, slots=True)
class Property:
    """One concept property value; ``type`` is the value[x] suffix it came in as.

    ``type`` is one of code, Coding, string, integer, boolean, dateTime, decimal, so that
    ``"value" + type[0].upper() + type[1:]`` is the element name to render.
    """

    code: str
    type: str
    value: PropertyValue


@dataclass(frozen=True, slots=True)
class Lookup:
    """$lookup: http://hl7.org/fhir/R4/codesystem-operation-lookup.html"""

    system: str
    code: str
    name: str | None
    version: str | None
    display: str | None
    designations: tuple[Designation, ...] = ()
    properties: tuple[Property, ...] = ()
    parents: tuple[str, ...] = ()
    children: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Validation:
    """$validate-code on a CodeSystem or a ValueSet.

    ``result`` is True (valid), False (not valid) or None: *cannot tell*, when the answer
    depends on codes not held here (a code system held only in part, such as a fragment of
    ICD-10-CM; a value set defined by a filter over such a system; a value set stub with no
    content). The message then says why. R4 makes ``result`` mandatory: render None as
    ``result`` false with the message as a warning, or refuse, as the caller's policy says.

    A wrong display is ``result`` True with a message, as the specification allows
    (http://hl7.org/fhir/R4/valueset-operation-validate-code.html); ``display`` is always
    the right display when one is known.
    """

    result: bool | None
    message: str | None = None
    display: str | None = None
    system: str | None = None
    code: str | None = None
    version: str | None = None


@dataclass(frozen=True, slots=True)
class Concept:
    """One ValueSet.expansion.contains entry."""

    system: str
    version: str | None
    code: str
    display: str | None


@dataclass(frozen=True, slots=True)
class Expansion:
    """$expand: http://hl7.org/fhir/R4/valueset-operation-expand.html"""

    url: str
    version: str | None
    total: int
    offset: int
    contains: tuple[Concept, ...]


@dataclass(frozen=True, slots=True)
class CodeMatch:
    """A value set as the search layer can write it for ``:in`` / ``:not-in``.

    A (system, code) pair is in the value set when its system is in ``systems`` and the pair
    is not in ``excluded``, or when the pair is in ``codes``. Systems in
    ``case_insensitive`` compare codes without regard to case (CodeSystem.caseSensitive
    false); their codes here are spelled as the code system spells them.
    """

    systems: frozenset[str]
    codes: frozenset[tuple[str, str]]
    excluded: frozenset[tuple[str, str]]
    case_insensitive: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Dependency:
    """$translate ``dependency``: the value of another element the mapping may depend on.

    ``element`` is compared with ConceptMap...target.dependsOn.property; ``system`` (when the
    dependsOn has one) and ``code`` with its system and value. A CodeableConcept becomes one
    Dependency per coding.
    """

    element: str
    code: str
    system: str | None = None


@dataclass(frozen=True, slots=True)
class Translation:
    """One $translate match: http://hl7.org/fhir/R4/conceptmap-operation-translate.html

    ``code`` is None for an ``unmatched`` target (the map says there is no match). R4's
    ``result`` is true when any match has an equivalence other than unmatched or disjoint.
    """

    equivalence: str
    system: str | None
    code: str | None
    display: str | None
    concept_map: str
