"""The FHIR resource models (fhir.resources R4B): base validation and XML conversion.

This is the only module that imports fhir.resources. R4B is wire-compatible with R4 (4.0.1) for
the resources this server centres on; the server says ``fhirVersion: 4.0.1``.
http://hl7.org/fhir/R4/json.html, http://hl7.org/fhir/R4/xml.html
"""

from __future__ import annotations

import functools
import pkgutil
import types
import typing
from dataclasses import dataclass
from typing import Any

import fhir.resources.R4B as r4b
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.backboneelement import BackboneElement
from fhir.resources.R4B.resource import Resource
from fhir_core.types import FhirBase
from lxml import etree
from pydantic import ValidationError

from profiles.json_rules import check_json_rules, check_structure

__all__ = [
    "RESOURCE_TYPES",
    "ElementInfo",
    "InvalidXml",
    "ModelIssue",
    "ResourceInvalid",
    "mandatory_elements",
    "model_resource_types",
    "parse_xml",
    "summary_elements",
    "build_xml",
    "element_children",
    "validate_resource",
]


@dataclass(frozen=True, slots=True)
class ModelIssue:
    """One way a resource breaks the base R4 rules, at a FHIRPath-like element path."""

    expression: str
    message: str


class ResourceInvalid(ValueError):
    """The resource breaks the base specification; ``issues`` says where."""

    def __init__(self, issues: tuple[ModelIssue, ...]) -> None:
        super().__init__("; ".join(f"{i.expression}: {i.message}" for i in issues))
        self.issues = issues


class InvalidXml(ValueError):
    """The XML text is not a FHIR resource we can read."""


def model_resource_types() -> frozenset[str]:
    """The resource types the installed models define (slow: imports every model)."""
    names = set()
    for module in pkgutil.iter_modules(r4b.__path__):
        try:
            cls = get_fhir_model_class(_class_name(module.name))
        except (KeyError, ValueError, AttributeError):
            continue
        if issubclass(cls, Resource) and cls.__name__ not in {"Resource", "DomainResource"}:
            names.add(cls.__name__)
    return frozenset(names)


def _class_name(module_name: str) -> str:
    module = __import__(f"fhir.resources.R4B.{module_name}", fromlist=["*"])
    for attr in dir(module):
        if attr.lower() == module_name:
            return attr
    raise KeyError(module_name)


# Every resource type the R4B models define (tests check this list against the models).
RESOURCE_TYPES: frozenset[str] = frozenset(
    {
        "Account",
        "ActivityDefinition",
        "AdministrableProductDefinition",
        "AdverseEvent",
        "AllergyIntolerance",
        "Appointment",
        "AppointmentResponse",
        "AuditEvent",
        "Basic",
        "Binary",
        "BiologicallyDerivedProduct",
        "BodyStructure",
        "Bundle",
        "CapabilityStatement",
        "CarePlan",
        "CareTeam",
        "CatalogEntry",
        "ChargeItem",
        "ChargeItemDefinition",
        "Citation",
        "Claim",
        "ClaimResponse",
        "ClinicalImpression",
        "ClinicalUseDefinition",
        "CodeSystem",
        "Communication",
        "CommunicationRequest",
        "CompartmentDefinition",
        "Composition",
        "ConceptMap",
        "Condition",
        "Consent",
        "Contract",
        "Coverage",
        "CoverageEligibilityRequest",
        "CoverageEligibilityResponse",
        "DetectedIssue",
        "Device",
        "DeviceDefinition",
        "DeviceMetric",
        "DeviceRequest",
        "DeviceUseStatement",
        "DiagnosticReport",
        "DocumentManifest",
        "DocumentReference",
        "Encounter",
        "Endpoint",
        "EnrollmentRequest",
        "EnrollmentResponse",
        "EpisodeOfCare",
        "EventDefinition",
        "Evidence",
        "EvidenceReport",
        "EvidenceVariable",
        "ExampleScenario",
        "ExplanationOfBenefit",
        "FamilyMemberHistory",
        "Flag",
        "Goal",
        "GraphDefinition",
        "Group",
        "GuidanceResponse",
        "HealthcareService",
        "ImagingStudy",
        "Immunization",
        "ImmunizationEvaluation",
        "ImmunizationRecommendation",
        "ImplementationGuide",
        "Ingredient",
        "InsurancePlan",
        "Invoice",
        "Library",
        "Linkage",
        "List",
        "Location",
        "ManufacturedItemDefinition",
        "Measure",
        "MeasureReport",
        "Media",
        "Medication",
        "MedicationAdministration",
        "MedicationDispense",
        "MedicationKnowledge",
        "MedicationRequest",
        "MedicationStatement",
        "MedicinalProductDefinition",
        "MessageDefinition",
        "MessageHeader",
        "MolecularSequence",
        "NamingSystem",
        "NutritionOrder",
        "NutritionProduct",
        "Observation",
        "ObservationDefinition",
        "OperationDefinition",
        "OperationOutcome",
        "Organization",
        "OrganizationAffiliation",
        "PackagedProductDefinition",
        "Parameters",
        "Patient",
        "PaymentNotice",
        "PaymentReconciliation",
        "Person",
        "PlanDefinition",
        "Practitioner",
        "PractitionerRole",
        "Procedure",
        "Provenance",
        "Questionnaire",
        "QuestionnaireResponse",
        "RegulatedAuthorization",
        "RelatedPerson",
        "RequestGroup",
        "ResearchDefinition",
        "ResearchElementDefinition",
        "ResearchStudy",
        "ResearchSubject",
        "RiskAssessment",
        "Schedule",
        "SearchParameter",
        "ServiceRequest",
        "Slot",
        "Specimen",
        "SpecimenDefinition",
        "StructureDefinition",
        "StructureMap",
        "Subscription",
        "SubscriptionStatus",
        "SubscriptionTopic",
        "Substance",
        "SubstanceDefinition",
        "SupplyDelivery",
        "SupplyRequest",
        "Task",
        "TerminologyCapabilities",
        "TestReport",
        "TestScript",
        "ValueSet",
        "VerificationResult",
        "VisionPrescription",
    }
)


def validate_resource(data: dict[str, Any]) -> None:
    """Check ``data`` against the base R4 rules; raise ResourceInvalid with element paths."""
    resource_type = data.get("resourceType")
    if not isinstance(resource_type, str) or resource_type not in RESOURCE_TYPES:
        raise ResourceInvalid((ModelIssue("resourceType", "unknown or missing resourceType"),))
    # A resource the structure check passes, the models pass too (tests/profiles hold it to
    # that); it costs a twentieth of them. What it refuses, the models decide with their issues.
    if not check_structure(data):
        return
    # The models coerce ("true" to true, "2" to 2) and allow nulls and empties; R4 JSON does not.
    breaches = check_json_rules(data)
    if breaches:
        raise ResourceInvalid(tuple(ModelIssue(path, message) for path, message in breaches))
    try:
        get_fhir_model_class(resource_type).model_validate(data)
    except ValidationError as exc:
        raise ResourceInvalid(_issues(resource_type, exc)) from None
    except (ValueError, TypeError, KeyError) as exc:
        # The models raise a few plain errors from their own validators.
        raise ResourceInvalid((ModelIssue(resource_type, str(exc)[:500]),)) from None


def _issues(resource_type: str, exc: ValidationError) -> tuple[ModelIssue, ...]:
    issues = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False)[:50]:
        path = resource_type
        for part in error["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            elif part != "__root__":
                path += f".{part}"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown element"
        issues.append(ModelIssue(path, message))
    return tuple(issues)


@functools.lru_cache(maxsize=256)
def summary_elements(resource_type: str) -> frozenset[str]:
    """Top-level JSON names a ``_summary=true`` response keeps (isSummary in the specification)."""
    if resource_type not in RESOURCE_TYPES:
        return frozenset({"resourceType", "id", "meta"})
    names = {"resourceType"}
    for field in get_fhir_model_class(resource_type).model_fields.values():
        extra = field.json_schema_extra
        if isinstance(extra, dict) and extra.get("summary_element_property") and field.alias:
            names.update({field.alias, f"_{field.alias}"})
    return frozenset(names)


@functools.lru_cache(maxsize=256)
def mandatory_elements(resource_type: str) -> frozenset[str]:
    """Top-level elements with min 1: kept in every subsetted (_elements, _summary) resource."""
    if resource_type not in RESOURCE_TYPES:
        return frozenset()
    names = set()
    for field in get_fhir_model_class(resource_type).model_fields.values():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        # Required primitives are optional in the models (their _x companion may stand in).
        required = (
            field.is_required()
            or extra.get("element_required")
            or extra.get("one_of_many_required") is True  # a required choice, e.g. medication[x]
        )
        if field.alias and required:
            names.update({field.alias, f"_{field.alias}"})
    return frozenset(names)


def _safe_parser() -> etree.XMLParser:
    # No DTDs, no entities, no network: XXE and entity expansion are refused.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
    )


def parse_xml(text: bytes) -> dict[str, Any]:
    """FHIR XML to the JSON form (a dict), validating it on the way."""
    if b"<!DOCTYPE" in text[:2048] or b"<!ENTITY" in text:
        raise InvalidXml("DOCTYPE and entity declarations are not allowed")
    try:
        root = etree.fromstring(text, parser=_safe_parser())
    except etree.XMLSyntaxError as exc:
        raise InvalidXml(f"malformed XML: {exc.msg}") from None
    tag = etree.QName(root)
    if tag.namespace != "http://hl7.org/fhir" or tag.localname not in RESOURCE_TYPES:
        raise InvalidXml(
            "the root element is not a FHIR resource in the http://hl7.org/fhir namespace"
        )
    cls = get_fhir_model_class(tag.localname)
    try:
        model = cls.model_validate_xml(text, xmlparser=_safe_parser())
    except ValidationError as exc:
        raise ResourceInvalid(_issues(tag.localname, exc)) from None
    except (ValueError, TypeError, KeyError, AttributeError, etree.LxmlError) as exc:
        raise InvalidXml(f"cannot read the XML as a {tag.localname}: {str(exc)[:300]}") from None
    result: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return result


def build_xml(data: dict[str, Any], *, pretty: bool = False) -> bytes:
    """A stored resource (JSON form) as FHIR XML."""
    cls = get_fhir_model_class(data["resourceType"])
    xml: bytes | str = cls.model_validate(data).model_dump_xml(pretty_print=pretty)
    return xml if isinstance(xml, bytes) else xml.encode()


# --- element facts, for the profile validator ------------------------------------------------

# The R4 (and R4B) complex datatypes: a model class with one of these names is that type; any
# other nested class is a backbone element of its resource (or an Element, e.g. Timing.repeat).
# http://hl7.org/fhir/R4/datatypes.html
_DATATYPES = frozenset(
    {
        "Address", "Age", "Annotation", "Attachment", "BackboneElement", "CodeableConcept",
        "CodeableReference", "Coding", "ContactDetail", "ContactPoint", "Contributor", "Count",
        "DataRequirement", "Distance", "Dosage", "Duration", "Element", "ElementDefinition",
        "Expression", "Extension", "HumanName", "Identifier", "MarketingStatus", "Meta", "Money",
        "Narrative", "ParameterDefinition", "Period", "Population", "ProdCharacteristic",
        "ProductShelfLife", "Quantity", "Range", "Ratio", "RatioRange", "Reference",
        "RelatedArtifact", "SampledData", "Signature", "SubstanceAmount", "Timing",
        "TriggerDefinition", "UsageContext",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ElementInfo:
    """One element of an R4 type as the models define it.

    ``types`` maps each JSON name of the element to its FHIR type code (one entry, or one per
    type of a choice element: ``valueQuantity`` -> ``Quantity``); ``children_of`` maps a type
    code to the name ``element_children`` takes for that type's elements (a datatype, or a
    backbone element's model class such as ``ObservationComponent``). Resource-typed elements
    (``contained``) have no entry there: their elements depend on the instance.
    """

    name: str  # the FHIRPath name: "value" for value[x]
    is_list: bool
    choice: bool
    types: dict[str, str]
    children_of: dict[str, str]


@functools.lru_cache(maxsize=1024)  # bounded: type names come from posted definitions
def element_children(type_name: str) -> dict[str, ElementInfo]:
    """The elements of an R4 resource type, datatype or backbone class, by FHIRPath name.

    Empty for a name the models do not define (and for primitive types, whose only elements
    are ``id`` and ``extension``: ask for ``Element``). Callers must not mutate the answer.
    """
    cls = _model_class(type_name) if type_name.isidentifier() else None
    if cls is None:
        return {}
    elements: dict[str, ElementInfo] = {}
    choices: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
    for field in cls.model_fields.values():
        alias = field.alias
        if not alias or alias.startswith("_") or alias in ("fhir_comments", "resource_type"):
            continue
        described = _describe_field(field.annotation)
        if described is None:
            continue
        code, is_list, child = described
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        base = extra.get("one_of_many")
        children_of = {code: child} if child else {}
        if isinstance(base, str) and base:
            json_types, kids = choices.setdefault(base, ({}, {}))
            json_types[alias] = code
            kids.update(children_of)
            continue
        elements[alias] = ElementInfo(alias, is_list, False, {alias: code}, children_of)
    for base, (json_types, kids) in choices.items():
        elements[base] = ElementInfo(base, False, True, json_types, kids)
    return elements


def _model_class(name: str) -> type[Any] | None:
    try:
        return get_fhir_model_class(name)
    except (ValueError, KeyError, AttributeError, ImportError):
        return None


def _describe_field(annotation: Any) -> tuple[str, bool, str | None] | None:
    """(FHIR type code, is_list, name for element_children or None) of a model field."""
    is_list = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Union or origin is types.UnionType:
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return None
            annotation = members[0]
        elif origin is list:
            is_list = True
            annotation = typing.get_args(annotation)[0]
        else:
            break
    if annotation is bool:
        return "boolean", is_list, "Element"
    if annotation is str:
        return "string", is_list, "Element"
    if typing.get_origin(annotation) is typing.Annotated:
        for marker in typing.get_args(annotation)[1:]:
            visit = getattr(marker, "__visit_name__", None)
            if isinstance(visit, str):
                return visit, is_list, "Element"
        return "string", is_list, "Element"  # e.g. uuid: a string in JSON
    if isinstance(annotation, type) and issubclass(annotation, FhirBase):
        cls = annotation.get_model_klass()
        name = cls.__name__
        if name == "Resource":
            return "Resource", is_list, None
        if name in _DATATYPES:
            return name, is_list, name
        if issubclass(cls, BackboneElement):
            return "BackboneElement", is_list, name
        return "Element", is_list, name
    return None
