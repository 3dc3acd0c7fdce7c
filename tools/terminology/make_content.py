# ruff: noqa: E501
"""Generate terminology/content/*.json: run by hand from the repository root after an edit here,
then review the diff (``.venv/bin/python tools/terminology/make_content.py``).

Facts come from the sources listed in terminology/content/README.md.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "terminology" / "content"
# Z55-Z65 codes and descriptions, from the CDC ICD-10-CM tabular list (see the content README).
ICD = json.loads((Path(__file__).resolve().parent / "icd_z55_z65.json").read_text())

OURS = "sdoh-fhir project"
HL7_PC = "HL7 International / Patient Care"
HL7_CGP = "HL7 International / Cross-Group Projects"
HL7_FHIR = "HL7 (FHIR Project)"
HL7_THO = "HL7 International / Terminology Infrastructure"
DATE = "2026-01-01"

TEMP = "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
SDC_TEMP = "http://hl7.org/fhir/uv/sdc/CodeSystem/temp"
LOINC = "http://loinc.org"
SCT = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
CDCREC = "urn:oid:2.16.840.1.113883.6.238"
NULLFL = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"
DAR = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
USCORE_CAT = "http://hl7.org/fhir/us/core/CodeSystem/us-core-category"
USCORE_COND_CAT = "http://hl7.org/fhir/us/core/CodeSystem/condition-category"
USCORE_DOCREF_CAT = "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category"
THO_OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
ICD9CM = "http://hl7.org/fhir/sid/icd-9-cm"
UCUM = "http://unitsofmeasure.org"
THO_COND_CAT = "http://terminology.hl7.org/CodeSystem/condition-category"
SERVICE_TYPE = "http://terminology.hl7.org/CodeSystem/service-type"
SDOHCC_VS = "http://hl7.org/fhir/us/sdoh-clinicalcare/ValueSet/"
LOINC_COPYRIGHT = (
    "This material contains content from LOINC (http://loinc.org). LOINC is copyright "
    "(c) 1995-2025, Regenstrief Institute, Inc. and the Logical Observation Identifiers Names "
    "and Codes (LOINC) Committee and is available at no cost under the license at "
    "http://loinc.org/license. LOINC(R) is a registered United States trademark of "
    "Regenstrief Institute, Inc."
)
SNOMED_COPYRIGHT = (
    "This material includes SNOMED Clinical Terms(R) (SNOMED CT(R)), which is used by permission "
    "of SNOMED International. All rights reserved. SNOMED CT(R) was originally created by the "
    "College of American Pathologists. Use in the United States is under the National Library "
    "of Medicine's SNOMED CT affiliate license (UMLS Metathesaurus License)."
)

# --------------------------------------------------------------------------- helpers


def c(code: str, display: str, *children: dict, **extra) -> dict:
    out: dict = {"code": code, "display": display}
    out.update(extra)
    if children:
        out["concept"] = list(children)
    return out


def count(concepts: list[dict]) -> int:
    return sum(1 + count(x.get("concept", [])) for x in concepts)


def codesystem(
    id_: str,
    url: str,
    version: str,
    name: str,
    title: str,
    publisher: str,
    content: str,
    concepts: list[dict],
    description: str,
    *,
    hierarchical: bool = False,
    copyright_: str | None = None,
    properties: list[dict] | None = None,
    case_sensitive: bool = True,
) -> dict:
    cs: dict = {
        "resourceType": "CodeSystem",
        "id": id_,
        "url": url,
        "version": version,
        "name": name,
        "title": title,
        "status": "active",
        "experimental": False,
        "date": DATE,
        "publisher": publisher,
        "description": description,
    }
    if copyright_:
        cs["copyright"] = copyright_
    cs["caseSensitive"] = case_sensitive
    if hierarchical:
        cs["hierarchyMeaning"] = "is-a"
    cs["content"] = content
    cs["count"] = count(concepts)
    if properties:
        cs["property"] = properties
    cs["concept"] = concepts
    return cs


def valueset(
    id_: str,
    url: str,
    version: str,
    name: str,
    title: str,
    publisher: str,
    description: str,
    include: list[dict],
    exclude: list[dict] | None = None,
    copyright_: str | None = None,
) -> dict:
    vs: dict = {
        "resourceType": "ValueSet",
        "id": id_,
        "url": url,
        "version": version,
        "name": name,
        "title": title,
        "status": "active",
        "experimental": False,
        "date": DATE,
        "publisher": publisher,
        "description": description,
    }
    if copyright_:
        vs["copyright"] = copyright_
    compose: dict = {"include": include}
    if exclude:
        compose["exclude"] = exclude
    vs["compose"] = compose
    return vs


def inc(system: str, *codes: str, version: str | None = None) -> dict:
    out: dict = {"system": system}
    if version:
        out["version"] = version
    if codes:
        out["concept"] = [{"code": x} for x in codes]
    return out


def isa(system: str, code: str) -> dict:
    return {"system": system, "filter": [{"property": "concept", "op": "is-a", "value": code}]}


FILES: dict[str, dict] = {}


def add(resource: dict) -> None:
    name = f"{resource['resourceType']}-{resource['id']}.json"
    assert name not in FILES, name
    FILES[name] = resource


# --------------------------------------------------------------------------- SDOHCC temporary codes

DOMAINS = [
    ("sdoh-category-unspecified", "SDOH Category Unspecified"),
    ("food-insecurity", "Food Insecurity"),
    ("housing-instability", "Housing Instability"),
    ("homelessness", "Homelessness"),
    ("inadequate-housing", "Inadequate Housing"),
    ("transportation-insecurity", "Transportation Insecurity"),
    ("financial-insecurity", "Financial Insecurity"),
    ("material-hardship", "Material Hardship"),
    ("educational-attainment", "Educational Attainment"),
    ("employment-status", "Employment Status"),
    ("veteran-status", "Veteran Status"),
    ("stress", "Stress"),
    ("social-connection", "Social Connection"),
    ("intimate-partner-violence", "Intimate Partner Violence"),
    ("elder-abuse", "Elder Abuse"),
    ("personal-health-literacy", "Personal Health Literacy"),
    ("health-insurance-coverage-status", "Health Insurance Coverage Status"),
    ("medical-cost-burden", "Medical Cost Burden"),
    ("digital-literacy", "Digital Literacy"),
    ("digital-access", "Digital Access"),
    ("utility-insecurity", "Utility Insecurity"),
    ("language-access", "Language Access"),
    ("incarceration-status", "Incarceration Status"),
    ("protective-factor", "Protective Factor"),
]
DOMAIN_DISPLAY = dict(DOMAINS)
WORKFLOW = [
    ("resulting-activity", "Resulting Activity"),
    ("sdoh-condition-category", "Current Condition Category From SDOH Category"),
    ("payer-coverage", "Coverage By Payer Organization"),
    ("general-information", "General Information"),
    ("make-contact", "Make Contact"),
    ("review-material", "Review Material"),
    ("risk-questionnaire", "Risk Questionnaire"),
    ("feedback-questionnaire", "Feedback Questionnaire"),
    ("application-questionnaire", "Application Questionnaire"),
    ("personal-characteristics-questionnaire", "Personal Characteristics Questionnaire"),
    ("contact-entity", "Contact Entity"),
    ("general-information-response", "General Information Response"),
    ("questionnaire-category", "Questionnaire Category"),
    ("questionnaire-pdf", "Questionnaire PDF"),
    ("questionnaire-url", "Questionnaire URL"),
    ("questionnaire-pdf-completed", "Questionnaire PDF Completed"),
    ("contacting-subject-prohibited", "Contacting Subject Prohibited"),
]
METHODS = [
    ("self-reported", "Self Reported"),
    ("reported-by-related-person", "Reported By Related Person"),
    ("observed", "Observed"),
    ("administrative", "Administrative"),
    ("derived-specify", "Derived Specify"),
    ("other-specify", "Other Specify"),
]
OTHER = [
    ("personal-characteristic", "Personal Characteristic"),
    ("chosen-contact", "Chosen Contact"),
    ("additional-content", "Additional Content"),
    ("program-enrollment", "Program Enrollment Status"),
    ("enrolled", "Enrolled"),
    ("not-enrolled", "Not Enrolled"),
    ("not-enrolled-on-waitlist", "Not Enrolled - On Waitlist"),
    ("no-capacity", "No Capacity"),
    ("capacity", "Has Capacity"),
    ("waitlist", "No Capacity - Has Waitlist"),
    ("additional-assessment-required", "Additional Assessment Required"),
]
TEMP_CODES = DOMAINS + WORKFLOW + METHODS + OTHER
assert len(TEMP_CODES) == 58

add(
    codesystem(
        "SDOHCC-CodeSystemTemporaryCodes",
        TEMP,
        "0.1.0",
        "SDOHCCCodeSystemTemporaryCodes",
        "SDOHCC CodeSystem Temporary Codes",
        HL7_PC,
        "complete",
        [c(code, display) for code, display in TEMP_CODES],
        "Codes the SDOH Clinical Care IG (3.0.0) defines until they move to a permanent code "
        "system: the 24 SDOH domain (category) codes, workflow, observation-method, enrollment "
        "and capacity codes.",
    )
)

# --------------------------------------------------------------------------- small HL7 code systems

add(
    codesystem(
        "observation-category",
        THO_OBS_CAT,
        "4.0.1",
        "ObservationCategoryCodes",
        "Observation Category Codes",
        HL7_THO,
        "complete",
        [
            c("social-history", "Social History"),
            c("vital-signs", "Vital Signs"),
            c("imaging", "Imaging"),
            c("laboratory", "Laboratory"),
            c("procedure", "Procedure"),
            c("survey", "Survey"),
            c("exam", "Exam"),
            c("therapy", "Therapy"),
            c("activity", "Activity"),
        ],
        "Observation categories (FHIR R4 / HL7 Terminology).",
    )
)
add(
    codesystem(
        "condition-category",
        THO_COND_CAT,
        "4.0.1",
        "ConditionCategoryCodes",
        "Condition Category Codes",
        HL7_THO,
        "complete",
        [
            c("problem-list-item", "Problem List Item"),
            c("encounter-diagnosis", "Encounter Diagnosis"),
        ],
        "Condition categories (FHIR R4 / HL7 Terminology).",
    )
)
add(
    codesystem(
        "us-core-category",
        USCORE_CAT,
        "7.0.0",
        "USCoreCategory",
        "US Core Category",
        HL7_CGP,
        "complete",
        [
            c("sdoh", "SDOH"),
            c("functional-status", "Functional Status"),
            c("disability-status", "Disability Status"),
            c("cognitive-status", "Cognitive Status"),
            c("treatment-intervention-preference", "Treatment Intervention Preference"),
            c("care-experience-preference", "Care Experience Preference"),
        ],
        "Category codes used across US Core 7.0.0 profiles (sdoh and the screening/assessment "
        "categories).",
    )
)
add(
    codesystem(
        "us-core-condition-category",
        USCORE_COND_CAT,
        "7.0.0",
        "USCoreConditionCategoryExtensionCodes",
        "US Core Condition Category Extension Codes",
        HL7_CGP,
        "complete",
        [c("health-concern", "Health Concern")],
        "The US Core condition category code for health concerns.",
    )
)
add(
    codesystem(
        "us-core-documentreference-category",
        USCORE_DOCREF_CAT,
        "7.0.0",
        "USCoreDocumentReferencesCategoryCodes",
        "US Core DocumentReferences Category Codes",
        HL7_CGP,
        "complete",
        [c("clinical-note", "Clinical Note")],
        "The US Core 'starter set' of DocumentReference categories (clinical-note).",
    )
)
add(
    codesystem(
        "task-code",
        "http://hl7.org/fhir/CodeSystem/task-code",
        "4.0.1",
        "TaskCode",
        "Task Codes",
        HL7_FHIR,
        "complete",
        [
            c("approve", "Activate/approve the focal resource"),
            c("fulfill", "Fulfill the focal request"),
            c("abort", "Mark the focal resource as no longer active"),
            c("replace", "Replace the focal resource with the input resource"),
            c("change", "Change the focal resource"),
            c("suspend", "Suspend the focal resource"),
            c("resume", "Re-activate the focal resource"),
        ],
        "Codes indicating the type of action a Task expects (FHIR R4).",
    )
)
add(
    codesystem(
        "task-status",
        "http://hl7.org/fhir/task-status",
        "4.0.1",
        "TaskStatus",
        "TaskStatus",
        HL7_FHIR,
        "complete",
        [
            c("draft", "Draft"),
            c("requested", "Requested"),
            c("received", "Received"),
            c("accepted", "Accepted"),
            c("rejected", "Rejected"),
            c("ready", "Ready"),
            c("cancelled", "Cancelled"),
            c("in-progress", "In Progress"),
            c("on-hold", "On Hold"),
            c("failed", "Failed"),
            c("completed", "Completed"),
            c("entered-in-error", "Entered in Error"),
        ],
        "The current status of a Task (FHIR R4).",
    )
)
add(
    codesystem(
        "request-priority",
        "http://hl7.org/fhir/request-priority",
        "4.0.1",
        "RequestPriority",
        "RequestPriority",
        HL7_FHIR,
        "complete",
        [c("routine", "Routine"), c("urgent", "Urgent"), c("asap", "ASAP"), c("stat", "STAT")],
        "How quickly a request should be addressed (FHIR R4).",
    )
)
add(
    codesystem(
        "request-status",
        "http://hl7.org/fhir/request-status",
        "4.0.1",
        "RequestStatus",
        "RequestStatus",
        HL7_FHIR,
        "complete",
        [
            c("draft", "Draft"),
            c("active", "Active"),
            c("on-hold", "On Hold"),
            c("revoked", "Revoked"),
            c("completed", "Completed"),
            c("entered-in-error", "Entered in Error"),
            c("unknown", "Unknown"),
        ],
        "The status of a request such as a ServiceRequest (FHIR R4).",
    )
)
add(
    codesystem(
        "request-intent",
        "http://hl7.org/fhir/request-intent",
        "4.0.1",
        "RequestIntent",
        "RequestIntent",
        HL7_FHIR,
        "complete",
        [
            c("proposal", "Proposal"),
            c("plan", "Plan"),
            c("directive", "Directive"),
            c(
                "order",
                "Order",
                c("original-order", "Original Order"),
                c("reflex-order", "Reflex Order"),
                c("filler-order", "Filler Order", c("instance-order", "Instance Order")),
            ),
            c("option", "Option"),
        ],
        "The kind of request (FHIR R4), with its order hierarchy.",
        hierarchical=True,
    )
)
add(
    codesystem(
        "event-status",
        "http://hl7.org/fhir/event-status",
        "4.0.1",
        "EventStatus",
        "EventStatus",
        HL7_FHIR,
        "complete",
        [
            c("preparation", "Preparation"),
            c("in-progress", "In Progress"),
            c("not-done", "Not Done"),
            c("on-hold", "On Hold"),
            c("stopped", "Stopped"),
            c("completed", "Completed"),
            c("entered-in-error", "Entered in Error"),
            c("unknown", "Unknown"),
        ],
        "The status of an event such as a Procedure (FHIR R4).",
    )
)
add(
    codesystem(
        "observation-status",
        "http://hl7.org/fhir/observation-status",
        "4.0.1",
        "ObservationStatus",
        "ObservationStatus",
        HL7_FHIR,
        "complete",
        [
            c("registered", "Registered"),
            c("preliminary", "Preliminary"),
            c("final", "Final"),
            c("amended", "Amended", c("corrected", "Corrected")),
            c("cancelled", "Cancelled"),
            c("entered-in-error", "Entered in Error"),
            c("unknown", "Unknown"),
        ],
        "The status of an observation (FHIR R4); corrected is a kind of amended.",
        hierarchical=True,
    )
)
add(
    codesystem(
        "condition-clinical",
        "http://terminology.hl7.org/CodeSystem/condition-clinical",
        "4.0.1",
        "ConditionClinicalStatusCodes",
        "Condition Clinical Status Codes",
        HL7_THO,
        "complete",
        [
            c("active", "Active", c("recurrence", "Recurrence"), c("relapse", "Relapse")),
            c("inactive", "Inactive", c("remission", "Remission"), c("resolved", "Resolved")),
        ],
        "The clinical status of a condition, with its hierarchy.",
        hierarchical=True,
    )
)
add(
    codesystem(
        "condition-ver-status",
        "http://terminology.hl7.org/CodeSystem/condition-ver-status",
        "4.0.1",
        "ConditionVerificationStatus",
        "ConditionVerificationStatus",
        HL7_THO,
        "complete",
        [
            c(
                "unconfirmed",
                "Unconfirmed",
                c("provisional", "Provisional"),
                c("differential", "Differential"),
            ),
            c("confirmed", "Confirmed"),
            c("refuted", "Refuted"),
            c("entered-in-error", "Entered in Error"),
        ],
        "The verification status of a condition, with its hierarchy.",
        hierarchical=True,
    )
)
add(
    codesystem(
        "sdc-temp",
        SDC_TEMP,
        "3.0.0",
        "SDCTemporaryCodes",
        "SDC Temporary Codes",
        "HL7 International / FHIR Infrastructure",
        "fragment",
        [
            c("complete-questionnaire", "Complete Questionnaire"),
            c("questionnaire", "Questionnaire"),
            c("questionnaire-response", "Questionnaire Response"),
        ],
        "The three Structured Data Capture temporary codes the SDOHCC patient Task uses.",
    )
)
add(
    codesystem(
        "v3-ActCode",
        "http://terminology.hl7.org/CodeSystem/v3-ActCode",
        "4.0.1",
        "ActCode",
        "ActCode",
        HL7_THO,
        "fragment",
        [c("IDSCL", "information disclosure")],
        "The ActCode the SDOHCC Consent profile fixes as its category (IDSCL).",
    )
)
add(
    codesystem(
        "consentscope",
        "http://terminology.hl7.org/CodeSystem/consentscope",
        "4.0.1",
        "ConsentScopeCodes",
        "Consent Scope Codes",
        HL7_THO,
        "complete",
        [
            c("adr", "Advanced Care Directive"),
            c("research", "Research"),
            c("patient-privacy", "Privacy Consent"),
            c("treatment", "Treatment"),
        ],
        "Consent scopes; the SDOHCC Consent example uses patient-privacy.",
    )
)
add(
    codesystem(
        "consentpolicycodes",
        "http://terminology.hl7.org/CodeSystem/consentpolicycodes",
        "4.0.1",
        "ConsentPolicyRuleCodes",
        "Consent PolicyRule Codes",
        HL7_THO,
        "fragment",
        [c("hipaa-auth", "HIPAA Authorization")],
        "The consent policy rule the SDOHCC Consent example uses (satisfies R4 ppc-1).",
    )
)
add(
    codesystem(
        "data-absent-reason",
        DAR,
        "4.0.1",
        "DataAbsentReason",
        "DataAbsentReason",
        HL7_THO,
        "complete",
        [
            c(
                "unknown",
                "Unknown",
                c("asked-unknown", "Asked But Unknown"),
                c("temp-unknown", "Temporarily Unknown"),
                c("not-asked", "Not Asked"),
                c("asked-declined", "Asked But Declined"),
            ),
            c("masked", "Masked"),
            c("not-applicable", "Not Applicable"),
            c("unsupported", "Unsupported"),
            c("as-text", "As Text"),
            c(
                "error",
                "Error",
                c("not-a-number", "Not a Number (NaN)"),
                c("negative-infinity", "Negative Infinity (NINF)"),
                c("positive-infinity", "Positive Infinity (PINF)"),
            ),
            c("not-performed", "Not Performed"),
            c("not-permitted", "Not Permitted"),
        ],
        "Why a value is missing, with its hierarchy.",
        hierarchical=True,
    )
)
add(
    codesystem(
        "v3-NullFlavor",
        NULLFL,
        "4.0.1",
        "NullFlavor",
        "NullFlavor",
        HL7_THO,
        "fragment",
        [
            c(
                "NI",
                "NoInformation",
                c("INV", "invalid", c("OTH", "other")),
                c("UNK", "unknown", c("ASKU", "asked but unknown"), c("NASK", "not asked")),
                c("MSK", "masked"),
                c("NA", "not applicable"),
            )
        ],
        "The NullFlavors the SDOHCC value sets use (OTH, UNK) and their parents and siblings.",
        hierarchical=True,
    )
)
add(
    codesystem(
        "cdc-race-ethnicity",
        CDCREC,
        "1.2",
        "RaceAndEthnicityCDC",
        "Race & Ethnicity - CDC",
        "Centers for Disease Control and Prevention",
        "fragment",
        [
            c(
                "1000-9",
                "Race",
                c(
                    "1002-5",
                    "American Indian or Alaska Native",
                    c("1088-4", "Cherokee"),
                    c("1102-3", "Cheyenne"),
                    c("1586-7", "Shoshone"),
                ),
                c("2028-9", "Asian", c("2036-2", "Filipino")),
                c("2054-5", "Black or African American"),
                c("2076-8", "Native Hawaiian or Other Pacific Islander"),
                c("2106-3", "White"),
                c("2131-1", "Other Race"),
            ),
            c(
                "2133-7",
                "Ethnicity",
                c(
                    "2135-2",
                    "Hispanic or Latino",
                    c("2148-5", "Mexican"),
                    c("2159-2", "Nicaraguan"),
                    c("2182-4", "Cuban"),
                    c("2184-0", "Dominican"),
                ),
                c("2186-5", "Not Hispanic or Latino"),
            ),
        ],
        "The OMB race and ethnicity categories, and the detailed codes the SDOHCC examples use "
        "(placed under their OMB category; intermediate CDC levels are left out).",
        hierarchical=True,
    )
)
add(
    codesystem(
        "service-type",
        SERVICE_TYPE,
        "1.1.1",
        "ServiceType",
        "Service type",
        HL7_THO,
        "fragment",
        [
            c("252", "Assessment"),
            c("238", "Adult Day Programs"),
            c("289", "Clothing"),
            c("317", "Detoxification"),
            c("103", "Early childhood intervention"),
            c("337", "Family Law"),
            c("152", "Food safety"),
            c("391", "Nursing Home"),
            c("61", "Occupational therapy"),
            c("156", "Respite care"),
            c("224", "Support groups"),
        ],
        "The 11 service types of SDOHCC-ValueSetHealthcareServiceType.",
    )
)
add(
    codesystem(
        "administrative-gender",
        "http://hl7.org/fhir/administrative-gender",
        "4.0.1",
        "AdministrativeGender",
        "AdministrativeGender",
        HL7_FHIR,
        "complete",
        [c("male", "Male"), c("female", "Female"), c("other", "Other"), c("unknown", "Unknown")],
        "The gender of a person for administrative purposes (FHIR R4).",
    )
)

# R4 resource-status code systems bound (required) by the US Core profiles; codes, displays and
# hierarchy as in FHIR R4 4.0.1 (see the content README for the pages read).


def r4_codesystem(
    id_: str, name: str, concepts: list[dict], description: str, *, hierarchical: bool = False
) -> None:
    """An R4 code system at http://hl7.org/fhir/<id>: complete, so its value set can reject."""
    add(
        codesystem(
            id_,
            "http://hl7.org/fhir/" + id_,
            "4.0.1",
            name,
            name,
            HL7_FHIR,
            "complete",
            concepts,
            description,
            hierarchical=hierarchical,
        )
    )


r4_codesystem(
    "care-team-status",
    "CareTeamStatus",
    [
        c("proposed", "Proposed"),
        c("active", "Active"),
        c("suspended", "Suspended"),
        c("inactive", "Inactive"),
        c("entered-in-error", "Entered in Error"),
    ],
    "The status of a care team (FHIR R4).",
)
r4_codesystem(
    "contact-point-system",
    "ContactPointSystem",
    [
        c("phone", "Phone"),
        c("fax", "Fax"),
        c("email", "Email"),
        c("pager", "Pager"),
        c("url", "URL"),
        c("sms", "SMS"),
        c("other", "Other"),
    ],
    "The telecommunications form of a contact point (FHIR R4).",
)
r4_codesystem(
    "contact-point-use",
    "ContactPointUse",
    [
        c("home", "Home"),
        c("work", "Work"),
        c("temp", "Temp"),
        c("old", "Old"),
        c("mobile", "Mobile"),
    ],
    "The use of a contact point (FHIR R4).",
)
r4_codesystem(
    "document-reference-status",
    "DocumentReferenceStatus",
    [
        c("current", "Current"),
        c("superseded", "Superseded"),
        c("entered-in-error", "Entered in Error"),
    ],
    "The status of a document reference (FHIR R4).",
)
r4_codesystem(
    "encounter-status",
    "EncounterStatus",
    [
        c("planned", "Planned"),
        c("arrived", "Arrived"),
        c("triaged", "Triaged"),
        c("in-progress", "In Progress"),
        c("onleave", "On Leave"),
        c("finished", "Finished"),
        c("cancelled", "Cancelled"),
        c("entered-in-error", "Entered in Error"),
        c("unknown", "Unknown"),
    ],
    "The current state of an encounter (FHIR R4).",
)
r4_codesystem(
    "goal-status",
    "GoalLifecycleStatus",
    [
        c("proposed", "Proposed"),
        c("planned", "Planned"),
        c(
            "accepted",
            "Accepted",
            c("active", "Active"),
            c("on-hold", "On Hold"),
            c("completed", "Completed"),
        ),
        c("cancelled", "Cancelled"),
        c("entered-in-error", "Entered in Error"),
        c("rejected", "Rejected"),
    ],
    "The lifecycle state of a goal (FHIR R4); active, on-hold and completed are kinds of accepted.",
    hierarchical=True,
)
r4_codesystem(
    "questionnaire-answers-status",
    "QuestionnaireResponseStatus",
    [
        c("in-progress", "In Progress"),
        c("completed", "Completed"),
        c("amended", "Amended"),
        c("entered-in-error", "Entered in Error"),
        c("stopped", "Stopped"),
    ],
    "The lifecycle status of a questionnaire response (FHIR R4).",
)
r4_codesystem(
    "narrative-status",
    "NarrativeStatus",
    [
        c("generated", "Generated"),
        c("extensions", "Extensions"),
        c("additional", "Additional"),
        c("empty", "Empty"),
    ],
    "The status of a resource narrative (FHIR R4); US Core Narrative Status allows two of them.",
)

# --------------------------------------------------------------------------- ICD-10-CM Z55-Z65

BILLABLE = {
    "code": "billable",
    "uri": "http://sdoh-fhir.org/CodeSystem/property/billable",
    "description": "True for a code that is valid for submission on a claim (a leaf of the "
    "tabular list); false for chapter, block, category and subcategory headers.",
    "type": "boolean",
}
NOT_SELECTABLE = {
    "code": "notSelectable",
    "uri": "http://hl7.org/fhir/concept-properties#notSelectable",
    "description": "Chapter and block: groupings of the tabular list, not ICD-10-CM codes.",
    "type": "boolean",
}


def icd_concept(node: dict) -> dict:
    children = [icd_concept(x) for x in node["children"]]
    out = {
        "code": node["code"],
        "display": node["display"],
        "property": [{"code": "billable", "valueBoolean": not children}],
    }
    if children:
        out["concept"] = children
    return out


def icd_codes(nodes: list[dict]) -> list[str]:
    out = []
    for n in nodes:
        out.append(n["code"])
        out.extend(icd_codes(n["children"]))
    return out


ICD_TREE = [
    {
        "code": ICD["chapter"]["code"],
        "display": ICD["chapter"]["display"],
        "property": [
            {"code": "billable", "valueBoolean": False},
            {"code": "notSelectable", "valueBoolean": True},
        ],
        "concept": [
            {
                "code": ICD["block"]["code"],
                "display": ICD["block"]["display"],
                "property": [
                    {"code": "billable", "valueBoolean": False},
                    {"code": "notSelectable", "valueBoolean": True},
                ],
                "concept": [icd_concept(x) for x in ICD["categories"]],
            }
        ],
    }
]
ALL_Z = icd_codes(ICD["categories"])
add(
    codesystem(
        "icd-10-cm",
        ICD10CM,
        "2026",
        "ICD10CM",
        "ICD-10-CM (fragment: Z55-Z65)",
        "National Center for Health Statistics (NCHS), CDC",
        "fragment",
        ICD_TREE,
        "Every code of the ICD-10-CM block Z55-Z65 (persons with potential health hazards "
        "related to socioeconomic and psychosocial circumstances) in the FY2026 release (tabular "
        "list of the April 1, 2026 update), nested chapter > block > category > subcategory > "
        "code, with the official tabular descriptions. ICD-10-CM is in the public domain.",
        hierarchical=True,
        case_sensitive=False,
        properties=[BILLABLE, NOT_SELECTABLE],
        copyright_="ICD-10-CM is published by the National Center for Health Statistics (CDC) "
        "and is in the public domain.",
    )
)

# --------------------------------------------------------------------------- LOINC fragment

LOINC_CONCEPTS = [
    # Hunger Vital Sign
    ("88121-9", "Hunger Vital Sign [HVS]"),
    (
        "88122-7",
        "Within the past 12 months we worried whether our food would run out before we got "
        "money to buy more [U.S. FSS]",
    ),
    (
        "88123-5",
        "Within the past 12 months the food we bought just didn't last and we didn't have money "
        "to get more [U.S. FSS]",
    ),
    ("88124-3", "Food insecurity risk [HVS]"),
    # PRAPARE panel and sections
    (
        "93025-5",
        "Protocol for Responding to and Assessing Patients' Assets, Risks, and Experiences [PRAPARE]",
    ),
    ("93043-8", "Personal characteristics [PRAPARE]"),
    ("93042-0", "Family and home [PRAPARE]"),
    ("93041-2", "Money and resources [PRAPARE]"),
    ("93040-4", "Social and emotional health [PRAPARE]"),
    ("93039-6", "Optional additional questions [PRAPARE]"),
    # PRAPARE questions
    ("56051-6", "Hispanic or Latino"),
    ("32624-9", "Race"),
    (
        "93035-4",
        "Has season or migrant farm work been your or your family's main source of income at "
        "any point in past 2 years [PRAPARE]",
    ),
    ("93034-7", "Have you been discharged from the armed forces of the United States?"),
    ("54899-0", "Preferred language"),
    ("63512-8", "How many people are living or staying at this address [#]"),
    ("71802-3", "Housing status"),
    ("93033-9", "Are you worried about losing your housing [PRAPARE]"),
    ("56799-0", "Address"),
    ("82589-3", "Highest level of education"),
    ("67875-5", "Employment status - current"),
    ("76437-3", "Primary insurance"),
    (
        "63586-2",
        "What was your best estimate of the total income of all family members from all "
        "sources, before taxes, in last year [PhenX]",
    ),
    (
        "93031-3",
        "Have you or any family members you live with been unable to get any of the following "
        "when it was really needed in past 1 year [PRAPARE]",
    ),
    (
        "93030-5",
        "Has lack of transportation kept you from medical appointments, meetings, work, or from "
        "getting things needed for daily living",
    ),
    (
        "93029-7",
        "How often do you see or talk to people that you care about and feel close to [PRAPARE]",
    ),
    ("93038-8", "Stress level"),
    (
        "93028-9",
        "Have you spent more than 2 nights in a row in a jail, prison, detention center, or "
        "juvenile correctional facility in past 1 year [PRAPARE]",
    ),
    ("93027-1", "Are you a refugee"),
    ("93026-3", "Do you feel physically and emotionally safe where you currently live [PRAPARE]"),
    ("76501-6", "Within the last year, have you been afraid of your partner or ex-partner"),
    # AHC HRSN questions the IG names (88122-7 and 71802-3 are above)
    (
        "96779-4",
        "Has the electric, gas, oil, or water company threatened to shut off services in your "
        "home in past 12 months",
    ),
    (
        "69861-3",
        "Because of a physical, mental, or emotional condition, do you have difficulty doing "
        "errands alone such as visiting a doctor's office or shopping",
    ),
    # NHANES social connection
    ("76506-5", "Social connection and isolation panel"),
    ("63503-7", "Marital status [NHANES]"),
    (
        "76508-1",
        "In a typical week, how many times do you talk on the telephone with family, friends, or "
        "neighbors [NHANES III]",
    ),
    ("76509-9", "How often do you get together with friends or relatives [NHANES III]"),
    ("76510-7", "How often do you attend church or religious services [NHANES]"),
    (
        "76511-5",
        "Do you belong to any clubs or organizations such as church groups unions, fraternal or "
        "athletic groups, or school groups [NHANES III]",
    ),
    ("76512-3", "Social isolation score [NHANES]"),
    # personal characteristics
    ("69490-1", "Ethnicity OMB.1997"),
    ("72826-1", "Race OMB.1997"),
    ("76691-5", "Gender identity"),
    ("90778-2", "Personal pronouns - Reported"),
    ("99502-7", "Recorded sex or gender"),
    ("76690-7", "Sexual orientation"),
    # answers
    ("LA28397-0", "Often true"),
    ("LA6729-3", "Sometimes true"),
    ("LA28398-8", "Never true"),
    ("LA15775-2", "Don't know/refused"),
    ("LA19952-3", "At risk"),
    ("LA19983-8", "No risk"),
    ("LA33-6", "Yes"),
    ("LA32-8", "No"),
    ("LA30122-8", "I choose not to answer this question"),
    ("LA6156-9", "Asian"),
    ("LA14045-1", "Native Hawaiian"),
    ("LA30187-1", "Pacific Islander"),
    ("LA14042-8", "Black/African American"),
    ("LA4457-3", "White"),
    ("LA4-4", "American Indian/Alaskan Native"),
    ("LA46-8", "Other"),
    ("LA43-5", "English"),
    ("LA30188-9", "Language other than English"),
    ("LA30189-7", "I have housing"),
    (
        "LA30190-5",
        "I do not have housing (staying with others, in a hotel, in a shelter, living outside "
        "on the street, on a beach, in a car, or in a park)",
    ),
    ("LA31993-1", "I have a steady place to live"),
    ("LA31994-9", "I have a place to live today, but I am worried about losing it in the future"),
    (
        "LA31995-6",
        "I do not have a steady place to live (I am temporarily staying with others, in a "
        "hotel, in a shelter, living outside on the street, on a beach, in a car, abandoned "
        "building, bus or train station, or in a park)",
    ),
    ("LA30191-3", "Less than high school degree"),
    ("LA30192-1", "High school diploma or GED"),
    ("LA30193-9", "More than high school"),
    ("LA17956-6", "Unemployed"),
    ("LA30138-4", "Part-time or temporary work"),
    ("LA30136-8", "Full-time work"),
    (
        "LA30137-6",
        "Otherwise unemployed but not seeking work (ex: student, retired, disabled, unpaid "
        "primary care giver)",
    ),
    ("LA30194-7", "None/uninsured"),
    ("LA17849-3", "Medicaid"),
    ("LA30195-4", "CHIP Medicaid"),
    ("LA15652-3", "Medicare"),
    ("LA30196-2", "Other public insurance (not CHIP)"),
    ("LA30197-0", "Other public insurance (CHIP)"),
    ("LA6350-8", "Private insurance"),
    ("LA30125-1", "Food"),
    ("LA30126-9", "Clothing"),
    ("LA30124-4", "Utilities"),
    ("LA30127-7", "Child care"),
    ("LA30128-5", "Medicine or Any Health Care (Medical, Dental, Mental Health, Vision)"),
    ("LA30129-3", "Phone"),
    ("LA30133-5", "Yes, it has kept me from medical appointments or from getting my medications"),
    (
        "LA30134-3",
        "Yes, it has kept me from non-medical meetings, appointments, work, or from getting "
        "things that I need",
    ),
    ("LA30257-2", "Patient unable to respond"),
    ("LA27722-0", "Less than once a week"),
    ("LA30130-1", "1 or 2 times a week"),
    ("LA30131-9", "3 to 5 times a week"),
    ("LA30132-7", "5 or more times a week"),
    ("LA6568-5", "Not at all"),
    ("LA13863-8", "A little bit"),
    ("LA13909-9", "Somewhat"),
    ("LA13902-4", "Quite a bit"),
    ("LA13914-9", "Very much"),
    ("LA14072-5", "Unsure"),
    ("LA32002-0", "Already shut off"),
    ("LA48-4", "Married"),
    ("LA29518-0", "he/him/his/his/himself"),
    ("LA29519-8", "she/her/her/hers/herself"),
    ("LA29520-6", "they/them/their/theirs/themselves"),
]
add(
    codesystem(
        "loinc",
        LOINC,
        "2.78",
        "LOINC",
        "LOINC (fragment: SDOH screening instruments)",
        "Regenstrief Institute, Inc.",
        "fragment",
        [c(code, display) for code, display in LOINC_CONCEPTS],
        "The LOINC panels, questions and answers of the screening instruments the SDOH Clinical "
        "Care IG uses (Hunger Vital Sign, PRAPARE, the AHC HRSN questions the IG names, the "
        "NHANES social connection panel) and the personal-characteristic codes, so that they can "
        "be looked up and displayed offline.",
        copyright_=LOINC_COPYRIGHT,
    )
)

# --------------------------------------------------------------------------- SNOMED CT fragment

SNOMED_CONCEPTS = [
    # findings per domain
    ("733423003", "Food insecurity (finding)"),
    ("699653008", "Inadequate oral food intake for physiological needs"),
    ("32911000", "Homeless (finding)"),
    ("1156191002", "Housing instability (finding)"),
    ("105531004", "Housing unsatisfactory (finding)"),
    ("713458007", "Lack of access to transportation (finding)"),
    ("266934004", "Transport problem (finding)"),
    ("160695008", "Transport too expensive"),
    ("1184702004", "Financial insecurity (finding)"),
    ("73438004", "Unemployed (finding)"),
    ("224295006", "Only received primary school education (finding)"),
    ("73595000", "Stress (finding)"),
    ("422650009", "Social isolation (finding)"),
    ("423315002", "Limited social contact (finding)"),
    ("706893006", "Victim of intimate partner abuse (finding)"),
    ("1137434003", "Has access to transportation (finding)"),
    # goal, procedures and service requests of the IG examples
    ("1078229009", "Food security"),
    ("410606002", "Social service procedure"),
    ("710925007", "Provision of food"),
    ("467681000124101", "Assistance with application for Summer Food Service Program"),
    ("467751000124104", "Assistance with application for garden program"),
    ("467771000124109", "Assistance with application for food pantry program"),
]
# The top concepts US Core's is-a filters name, and the codes US Core value sets list (neither
# is an SDOH finding, so neither is in the roll-up below).
CLINICAL_FINDING = "404684003"
SNOMED_US_CORE = [
    (CLINICAL_FINDING, "Clinical finding (finding)"),
    ("243796009", "Context-dependent categories"),
    ("272379006", "Events"),
    ("160245001", "No current problems or disability"),
    ("386053000", "Evaluation procedure (procedure)"),
    # R4 servicerequest-category, imported by us-core-servicerequest-category
    ("108252007", "Laboratory procedure"),
    ("363679005", "Imaging"),
    ("409063005", "Counselling"),
    ("409073007", "Education"),
    ("387713003", "Surgical procedure"),
]
# Held codes in the Clinical finding hierarchy (semantic tag "finding"), nested under it so that
# an is-a 404684003 filter (us-core-condition-code) holds for them: a fragment's held codes that
# fail a filter are answered "not in the value set". Intermediate SNOMED levels are left out.
SNOMED_FINDINGS = {
    "733423003",
    "699653008",
    "32911000",
    "1156191002",
    "105531004",
    "713458007",
    "266934004",
    "160695008",
    "1184702004",
    "73438004",
    "224295006",
    "73595000",
    "422650009",
    "423315002",
    "706893006",
    "1137434003",
    "1078229009",
}


def snomed_tree() -> list[dict]:
    """The held codes with every finding under Clinical finding, the rest at the top."""
    findings = [c(code, d) for code, d in SNOMED_CONCEPTS if code in SNOMED_FINDINGS]
    others = [c(code, d) for code, d in SNOMED_CONCEPTS if code not in SNOMED_FINDINGS]
    roots = [
        c(code, d, *findings) if code == CLINICAL_FINDING else c(code, d)
        for code, d in SNOMED_US_CORE
    ]
    return roots + others


add(
    codesystem(
        "snomed-ct",
        SCT,
        "http://snomed.info/sct/731000124108",
        "SNOMEDCT",
        "SNOMED CT (fragment: SDOH findings and the SDOHCC example codes)",
        "SNOMED International",
        "fragment",
        snomed_tree(),
        "The SNOMED CT codes of the SDOH Clinical Care IG examples (Conditions, Observations, "
        "Procedures, ServiceRequests, Goal) and SDOH findings commonly used per domain, with "
        "their fully specified name where we read it, else the preferred term the IG uses; "
        "findings sit under Clinical finding (intermediate levels left out, so is-a still "
        "holds); and the codes US Core 7.0.0 value sets name (is-a filter roots, listed "
        "ServiceRequest categories).",
        hierarchical=True,
        copyright_=SNOMED_COPYRIGHT,
    )
)

# --------------------------------------------------------------------------- SDOHCC value sets


def sdohcc_vs(id_: str, title: str, description: str, include: list[dict]) -> None:
    add(
        valueset(
            id_,
            SDOHCC_VS + id_,
            "3.0.0",
            id_.replace("-", ""),
            title,
            HL7_PC,
            description,
            include,
        )
    )


sdohcc_vs(
    "SDOHCC-ValueSetSDOHCategory",
    "SDOHCC ValueSet SDOH Category",
    "The 24 SDOH domain (category) codes.",
    [inc(TEMP, *[code for code, _ in DOMAINS])],
)
sdohcc_vs(
    "SDOHCC-ValueSetReferralTaskStatus",
    "SDOHCC ValueSet Referral Task Status",
    "Statuses of the referral-management Task: every R4 task-status except ready and received.",
    [
        inc(
            "http://hl7.org/fhir/task-status",
            "draft",
            "requested",
            "accepted",
            "rejected",
            "cancelled",
            "in-progress",
            "on-hold",
            "failed",
            "completed",
            "entered-in-error",
        )
    ],
)
sdohcc_vs(
    "SDOHCC-ValueSetTaskStatus",
    "SDOHCC ValueSet Task Status",
    "Statuses of a Task for the patient.",
    [
        inc(
            "http://hl7.org/fhir/task-status",
            "ready",
            "in-progress",
            "completed",
            "cancelled",
            "on-hold",
            "failed",
            "entered-in-error",
        )
    ],
)
sdohcc_vs(
    "SDOHCC-ValueSetTaskCode",
    "SDOHCC ValueSet Task Code",
    "Codes for the kind of Task a patient is asked to do.",
    [
        inc(TEMP, "make-contact", "review-material", "general-information"),
        inc(SDC_TEMP, "complete-questionnaire"),
    ],
)
sdohcc_vs(
    "SDOHCC-ValueSetTaskPriority",
    "SDOHCC ValueSet Task Priority",
    "Priorities of a patient Task: routine or urgent.",
    [inc("http://hl7.org/fhir/request-priority", "routine", "urgent")],
)
sdohcc_vs(
    "SDOHCC-ValueSetSDOHQuestionnaireCategory",
    "SDOHCC ValueSet SDOH Questionnaire Category",
    "Categories of the questionnaire a patient Task asks for.",
    [
        inc(
            TEMP,
            "risk-questionnaire",
            "feedback-questionnaire",
            "application-questionnaire",
            "personal-characteristics-questionnaire",
            "other-specify",
        )
    ],
)
sdohcc_vs(
    "SDOHCC-ValueSetObservationStatus",
    "SDOHCC ValueSet Observation Status",
    "Statuses allowed for SDOHCC screening-response and personal-characteristic Observations.",
    [
        inc(
            "http://hl7.org/fhir/observation-status",
            "final",
            "corrected",
            "entered-in-error",
            "unknown",
        )
    ],
)
sdohcc_vs(
    "SDOHCC-ValueSetLOINCSNOMEDCT",
    "SDOHCC ValueSet LOINC SNOMEDCT",
    "All of LOINC and all of SNOMED CT.",
    [inc(LOINC), inc(SCT)],
)
sdohcc_vs(
    "SDOHCC-ValueSetCapacityStatus",
    "SDOHCC ValueSet Capacity Status",
    "Capacity statuses of a HealthcareService.",
    [inc(TEMP, "no-capacity", "capacity", "waitlist", "additional-assessment-required")],
)
sdohcc_vs(
    "SDOHCC-ValueSetEnrollmentStatus",
    "SDOHCC ValueSet Enrollment Status",
    "Program enrollment statuses.",
    [inc(TEMP, "enrolled", "not-enrolled", "not-enrolled-on-waitlist")],
)
sdohcc_vs(
    "SDOHCC-ValueSetEnrollmentCategory",
    "SDOHCC ValueSet Enrollment Category",
    "The category of a program-enrollment Observation.",
    [inc(TEMP, "program-enrollment")],
)
sdohcc_vs(
    "SDOHCC-ValueSetServiceCategory",
    "SDOHCC ValueSet Service Category",
    "The HealthcareService category for social care services (US Core sdoh).",
    [inc(USCORE_CAT, "sdoh", version="7.0.0")],
)
sdohcc_vs(
    "SDOHCC-ValueSetHealthcareServiceType",
    "SDOHCC ValueSet Healthcare Service Type",
    "Types of health care service.",
    [
        inc(
            SERVICE_TYPE,
            "252",
            "238",
            "289",
            "317",
            "103",
            "337",
            "152",
            "391",
            "61",
            "156",
            "224",
            version="1.1.1",
        )
    ],
)
sdohcc_vs(
    "SDOHCC-ValueSetObservationMethod",
    "SDOHCC ValueSet Observation Method",
    "How a personal characteristic was observed.",
    [
        inc(
            TEMP,
            "self-reported",
            "reported-by-related-person",
            "administrative",
            "derived-specify",
            "other-specify",
            "observed",
        ),
        inc(NULLFL, "UNK"),
    ],
)
sdohcc_vs(
    "SDOHCC-ValueSetObservationDataAbsentReason",
    "SDOHCC ValueSet Observation Data Absent Reason",
    "Reasons a personal characteristic is missing.",
    [
        inc(
            DAR,
            "unknown",
            "asked-unknown",
            "temp-unknown",
            "not-asked",
            "asked-declined",
            "masked",
        )
    ],
)
sdohcc_vs(
    "SDOHCC-ValueSetObservationDerivedFromIdType",
    "SDOHCC ValueSet Observation Derived From Id Type",
    "Identifier types of the document a recorded sex or gender was taken from.",
    [
        inc(
            "http://terminology.hl7.org/CodeSystem/v2-0203",
            "BCT",
            "DL",
            "PPN",
            "SB",
            "MCT",
            "MI",
            "SR",
            "WP",
        )
    ],
)
sdohcc_vs(
    "SDOHCC-ValueSetOMBRaceCategories",
    "SDOHCC ValueSet OMB Race Categories",
    "The five OMB race categories.",
    [inc(CDCREC, "1002-5", "2028-9", "2054-5", "2076-8", "2106-3")],
)
sdohcc_vs(
    "SDOHCC-ValueSetOMBEthnicityCategories",
    "SDOHCC ValueSet OMB Ethnicity Categories",
    "The two OMB ethnicity categories.",
    [inc(CDCREC, "2135-2", "2186-5")],
)
sdohcc_vs(
    "SDOHCC-ValueSetPronounsValue",
    "SDOHCC ValueSet Pronouns Value",
    "Personal pronouns.",
    [inc(LOINC, "LA29518-0", "LA29519-8", "LA29520-6"), inc(NULLFL, "OTH", "UNK")],
)

# --------------------------------------------------------------------------- US Core and R4 value sets

USCORE_VS = "http://hl7.org/fhir/us/core/ValueSet/"
add(
    valueset(
        "us-core-problem-or-health-concern",
        USCORE_VS + "us-core-problem-or-health-concern",
        "7.0.0",
        "USCoreProblemOrHealthConcern",
        "US Core Problem or Health Concern",
        HL7_CGP,
        "Condition categories for problems and health concerns (SDOH-Con-2 uses memberOf on it).",
        [inc(THO_COND_CAT, "problem-list-item"), inc(USCORE_COND_CAT, "health-concern")],
    )
)
for id_, title, name in (
    (
        "us-core-screening-assessment-condition-category",
        "US Core Screening Assessment Condition Category",
        "USCoreScreeningAssessmentConditionCategory",
    ),
    (
        "us-core-screening-assessment-observation-category",
        "US Core Screening Assessment Observation Category",
        "USCoreScreeningAssessmentObservationCategory",
    ),
):
    add(
        valueset(
            id_,
            USCORE_VS + id_,
            "7.0.0",
            name,
            title,
            HL7_CGP,
            "Category codes of the US Core 7.0.0 screening and assessment profiles: every code "
            "of US Core Category 7.0.0 (sdoh, functional-status, disability-status, "
            "cognitive-status, treatment-intervention-preference, care-experience-preference).",
            [inc(USCORE_CAT, version="7.0.0")],
        )
    )

R4_VS = [
    (
        "condition-clinical",
        "http://terminology.hl7.org/CodeSystem/condition-clinical",
        "ConditionClinicalStatusCodes",
        "Condition Clinical Status Codes",
    ),
    (
        "condition-ver-status",
        "http://terminology.hl7.org/CodeSystem/condition-ver-status",
        "ConditionVerificationStatus",
        "ConditionVerificationStatus",
    ),
    ("task-status", "http://hl7.org/fhir/task-status", "TaskStatus", "TaskStatus"),
    (
        "request-priority",
        "http://hl7.org/fhir/request-priority",
        "RequestPriority",
        "RequestPriority",
    ),
    ("request-status", "http://hl7.org/fhir/request-status", "RequestStatus", "RequestStatus"),
    ("request-intent", "http://hl7.org/fhir/request-intent", "RequestIntent", "RequestIntent"),
    ("event-status", "http://hl7.org/fhir/event-status", "EventStatus", "EventStatus"),
    (
        "observation-status",
        "http://hl7.org/fhir/observation-status",
        "ObservationStatus",
        "ObservationStatus",
    ),
    (
        "administrative-gender",
        "http://hl7.org/fhir/administrative-gender",
        "AdministrativeGender",
        "AdministrativeGender",
    ),
    ("data-absent-reason", DAR, "DataAbsentReason", "DataAbsentReason"),
    (
        "care-team-status",
        "http://hl7.org/fhir/care-team-status",
        "CareTeamStatus",
        "CareTeamStatus",
    ),
    (
        "contact-point-system",
        "http://hl7.org/fhir/contact-point-system",
        "ContactPointSystem",
        "ContactPointSystem",
    ),
    (
        "contact-point-use",
        "http://hl7.org/fhir/contact-point-use",
        "ContactPointUse",
        "ContactPointUse",
    ),
    (
        "document-reference-status",
        "http://hl7.org/fhir/document-reference-status",
        "DocumentReferenceStatus",
        "DocumentReferenceStatus",
    ),
    (
        "encounter-status",
        "http://hl7.org/fhir/encounter-status",
        "EncounterStatus",
        "EncounterStatus",
    ),
    (
        "goal-status",
        "http://hl7.org/fhir/goal-status",
        "GoalLifecycleStatus",
        "GoalLifecycleStatus",
    ),
    (
        "questionnaire-answers-status",
        "http://hl7.org/fhir/questionnaire-answers-status",
        "QuestionnaireResponseStatus",
        "QuestionnaireResponseStatus",
    ),
]
for id_, system, name, title in R4_VS:
    add(
        valueset(
            id_,
            "http://hl7.org/fhir/ValueSet/" + id_,
            "4.0.1",
            name,
            title,
            HL7_FHIR,
            f"All codes of {system} (FHIR R4 required binding).",
            [inc(system)],
        )
    )
add(
    valueset(
        "care-plan-intent",
        "http://hl7.org/fhir/ValueSet/care-plan-intent",
        "4.0.1",
        "CarePlanIntent",
        "Care Plan Intent",
        HL7_PC,
        "The intents a CarePlan may have (FHIR R4 required binding): four request-intent codes, "
        "listed, so the kinds of order (original-order, ...) and directive are not included.",
        [inc("http://hl7.org/fhir/request-intent", "proposal", "plan", "order", "option")],
    )
)
add(
    valueset(
        "ucum-units",
        "http://hl7.org/fhir/ValueSet/ucum-units",
        "4.0.1",
        "UCUMCodes",
        "UCUM Codes",
        HL7_FHIR,
        "All UCUM unit expressions (FHIR R4 required binding of the SDOHCC screening response "
        "valueQuantity). UCUM is a grammar, not a list, so no CodeSystem is shipped: every "
        "code of the system is taken as a member and the value set cannot be expanded.",
        [inc(UCUM)],
        copyright_="UCUM is copyright (c) 1999-2009 Regenstrief Institute, Inc. and The UCUM "
        "Organization, Indianapolis, IN. All rights reserved.",
    )
)
add(
    valueset(
        "servicerequest-category",
        "http://hl7.org/fhir/ValueSet/servicerequest-category",
        "4.0.1",
        "ServiceRequestCategoryCodes",
        "Service Request Category Codes",
        "HL7 International / Orders and Observations",
        "The example SNOMED CT ServiceRequest categories of FHIR R4; US Core ServiceRequest "
        "Category Codes imports it.",
        [inc(SCT, "108252007", "363679005", "409063005", "409073007", "387713003")],
        copyright_=SNOMED_COPYRIGHT,
    )
)


def us_core_vs(
    id_: str,
    name: str,
    title: str,
    description: str,
    include: list[dict],
    copyright_: str | None = None,
) -> None:
    """A US Core 7.0.0 value set at its own canonical; our file, US Core's composition."""
    add(
        valueset(
            id_,
            USCORE_VS + id_,
            "7.0.0",
            name,
            title,
            HL7_CGP,
            description,
            include,
            copyright_=copyright_,
        )
    )


# US Core 7.0.0 composes the two OMB value sets by importing VSAC value sets (race categories
# 2.16.840.1.114222.4.11.836 or ethnicity categories .837, and Null Flavor
# 2.16.840.1.113762.1.4.1021.102); VSAC content is not shipped, so their members are listed.
us_core_vs(
    "omb-race-category",
    "OmbRaceCategories",
    "OMB Race Categories",
    "The five OMB race categories, Other Race (its use is discouraged for statistical "
    "analysis), and the NullFlavors UNK and ASKU: the US Core 7.0.0 expansion of its two VSAC "
    "imports, listed here.",
    [
        inc(CDCREC, "1002-5", "2028-9", "2054-5", "2076-8", "2106-3", "2131-1"),
        inc(NULLFL, "UNK", "ASKU"),
    ],
)
us_core_vs(
    "omb-ethnicity-category",
    "OmbEthnicityCategories",
    "OMB Ethnicity Categories",
    "The two OMB ethnicity categories and the NullFlavors UNK and ASKU: the members of its two "
    "US Core 7.0.0 VSAC imports, listed here.",
    [inc(CDCREC, "2135-2", "2186-5"), inc(NULLFL, "UNK", "ASKU")],
)
us_core_vs(
    "us-core-narrative-status",
    "NarrativeStatus",
    "US Core Narrative Status",
    "The narrative statuses US Core allows: additional and generated.",
    [inc("http://hl7.org/fhir/narrative-status", "additional", "generated")],
)
us_core_vs(
    "us-core-simple-observation-category",
    "USCoreSimpleObservationCategory",
    "US Core Simple Observation Category",
    "Categories of the US Core Simple Observation profile: every code of US Core Category "
    "7.0.0 and of the HL7 observation-category code system.",
    [inc(USCORE_CAT, version="7.0.0"), inc(THO_OBS_CAT)],
)
us_core_vs(
    "us-core-servicerequest-category",
    "USCoreServiceRequestCategoryCodes",
    "US Core ServiceRequest Category Codes",
    "ServiceRequest categories: every code of US Core Category 7.0.0, the SNOMED CT codes "
    "Evaluation procedure and Social service procedure, and the R4 ServiceRequest categories "
    "(13 concepts).",
    [
        inc(USCORE_CAT, version="7.0.0"),
        inc(SCT, "386053000", "410606002"),
        {"valueSet": ["http://hl7.org/fhir/ValueSet/servicerequest-category"]},
    ],
    copyright_=SNOMED_COPYRIGHT,
)
us_core_vs(
    "us-core-documentreference-category",
    "USCoreDocumentReferenceCategory",
    "US Core DocumentReference Category",
    "The US Core DocumentReference categories: every code of US Core DocumentReferences "
    "Category Codes (clinical-note).",
    [inc(USCORE_DOCREF_CAT, version="7.0.0")],
)
us_core_vs(
    "us-core-condition-code",
    "USCoreConditionCodes",
    "US Core Condition Codes",
    "Codes for a problem or diagnosis: SNOMED CT 160245001 and every SNOMED CT clinical "
    "finding, situation (243796009) and event (272379006), and all of ICD-10-CM and ICD-9-CM. "
    "Codes of these systems that are not held here are answered 'cannot tell', except that "
    "the whole-system includes take every ICD code as a member.",
    [
        inc(SCT, "160245001"),
        isa(SCT, CLINICAL_FINDING),
        isa(SCT, "243796009"),
        isa(SCT, "272379006"),
        inc(ICD10CM),
        inc(ICD9CM),
    ],
    copyright_=SNOMED_COPYRIGHT,
)
us_core_vs(
    "us-core-goal-description",
    "USCoreGoalCodes",
    "US Core Goal Codes",
    "Codes for a goal: all of SNOMED CT and all of LOINC.",
    [inc(SCT), inc(LOINC)],
    copyright_=SNOMED_COPYRIGHT + " " + LOINC_COPYRIGHT,
)

# --------------------------------------------------------------------------- SDOH domain roll-up

# ICD-10-CM: code -> domains; an unlisted code takes the entry of its nearest listed ancestor.
# A header maps to the domains its own meaning falls in (Z59.7, billable before FY2025, covers
# both insurance and welfare); a header whose children fall in different domains and whose
# meaning fits none of them ("other problems related to ...") maps to sdoh-category-unspecified.
U = "sdoh-category-unspecified"
ICD_DOMAINS: dict[str, list[str]] = {
    "Z55-Z65": [U],
    "Z55": ["educational-attainment"],
    "Z55.6": ["personal-health-literacy"],
    "Z56": ["employment-status"],
    "Z57": [U],
    "Z58": [U],
    "Z59": [U],
    "Z59.0": ["homelessness"],
    "Z59.1": ["inadequate-housing"],
    "Z59.12": ["inadequate-housing", "utility-insecurity"],
    "Z59.2": [U],
    "Z59.3": [U],
    "Z59.4": ["food-insecurity"],
    "Z59.5": ["financial-insecurity"],
    "Z59.6": ["financial-insecurity"],
    "Z59.7": ["financial-insecurity", "health-insurance-coverage-status"],
    "Z59.71": ["health-insurance-coverage-status"],
    "Z59.72": ["financial-insecurity"],
    "Z59.8": [U],
    "Z59.81": ["housing-instability"],
    "Z59.82": ["transportation-insecurity"],
    "Z59.86": ["financial-insecurity"],
    "Z59.861": ["financial-insecurity", "utility-insecurity"],
    "Z59.87": ["material-hardship"],
    "Z59.89": [U],
    "Z59.9": [U],
    "Z60": [U],
    "Z60.2": ["social-connection"],
    "Z60.4": ["social-connection"],
    "Z60.8": ["social-connection"],
    "Z62": [U],
    "Z62.815": ["intimate-partner-violence"],
    "Z63": [U],
    "Z63.7": ["stress"],
    "Z64": [U],
    "Z65": [U],
    "Z65.1": ["incarceration-status"],
    "Z65.2": ["incarceration-status"],
}
PARENT: dict[str, str] = {}


def index_parents(nodes: list[dict], parent: str) -> None:
    for n in nodes:
        PARENT[n["code"]] = parent
        index_parents(n["children"], n["code"])


index_parents(ICD["categories"], "Z55-Z65")


def icd_domains(code: str) -> list[str]:
    while code not in ICD_DOMAINS:
        code = PARENT[code]
    return ICD_DOMAINS[code]


ICD_MAP = {code: icd_domains(code) for code in ["Z55-Z65", *ALL_Z]}

SNOMED_MAP: dict[str, list[tuple[str, str]]] = {
    "733423003": [("food-insecurity", "wider")],
    "699653008": [("food-insecurity", "wider")],
    "32911000": [("homelessness", "wider")],
    "1156191002": [("housing-instability", "wider")],
    "105531004": [("inadequate-housing", "wider")],
    "713458007": [("transportation-insecurity", "wider")],
    "266934004": [("transportation-insecurity", "wider")],
    "160695008": [("transportation-insecurity", "wider"), ("financial-insecurity", "wider")],
    "1184702004": [("financial-insecurity", "wider")],
    "73438004": [("employment-status", "wider")],
    "224295006": [("educational-attainment", "wider")],
    "73595000": [("stress", "wider")],
    "422650009": [("social-connection", "wider")],
    "423315002": [("social-connection", "wider")],
    "706893006": [("intimate-partner-violence", "wider")],
    "1137434003": [("protective-factor", "wider")],
    "1078229009": [("food-insecurity", "relatedto")],
    "710925007": [("food-insecurity", "relatedto")],
    "467681000124101": [("food-insecurity", "relatedto")],
    "467751000124104": [("food-insecurity", "relatedto")],
    "467771000124109": [("food-insecurity", "relatedto")],
}

# LOINC question -> domains it is about (relatedto)
LOINC_QUESTION_MAP: dict[str, list[str]] = {
    "88121-9": ["food-insecurity"],
    "88122-7": ["food-insecurity"],
    "88123-5": ["food-insecurity"],
    "88124-3": ["food-insecurity"],
    "56051-6": [U],
    "32624-9": [U],
    "93035-4": [U],
    "93034-7": ["veteran-status"],
    "54899-0": ["language-access"],
    "63512-8": [U],
    "71802-3": ["homelessness", "housing-instability"],
    "93033-9": ["housing-instability"],
    "56799-0": [U],
    "82589-3": ["educational-attainment"],
    "67875-5": ["employment-status"],
    "76437-3": ["health-insurance-coverage-status"],
    "63586-2": [U],
    "93031-3": ["material-hardship"],
    "93030-5": ["transportation-insecurity"],
    "93029-7": ["social-connection"],
    "93038-8": ["stress"],
    "93028-9": ["incarceration-status"],
    "93027-1": [U],
    "93026-3": [U],
    "76501-6": ["intimate-partner-violence"],
    "96779-4": ["utility-insecurity"],
    "69861-3": [U],
    "76506-5": ["social-connection"],
    "63503-7": ["social-connection"],
    "76508-1": ["social-connection"],
    "76509-9": ["social-connection"],
    "76510-7": ["social-connection"],
    "76511-5": ["social-connection"],
    "76512-3": ["social-connection"],
}
# (question, answer) -> domains the answer indicates a need in (wider)
LOINC_ANSWER_MAP: dict[tuple[str, str], list[str]] = {
    ("88122-7", "LA28397-0"): ["food-insecurity"],
    ("88122-7", "LA6729-3"): ["food-insecurity"],
    ("88123-5", "LA28397-0"): ["food-insecurity"],
    ("88123-5", "LA6729-3"): ["food-insecurity"],
    ("88124-3", "LA19952-3"): ["food-insecurity"],
    ("71802-3", "LA30190-5"): ["homelessness"],
    ("71802-3", "LA31995-6"): ["homelessness", "housing-instability"],
    ("71802-3", "LA31994-9"): ["housing-instability"],
    ("93033-9", "LA33-6"): ["housing-instability"],
    ("82589-3", "LA30191-3"): ["educational-attainment"],
    ("67875-5", "LA17956-6"): ["employment-status"],
    ("76437-3", "LA30194-7"): ["health-insurance-coverage-status"],
    ("93031-3", "LA30125-1"): ["food-insecurity", "material-hardship"],
    ("93031-3", "LA30126-9"): ["material-hardship"],
    ("93031-3", "LA30124-4"): ["utility-insecurity", "material-hardship"],
    ("93031-3", "LA30127-7"): ["material-hardship"],
    ("93031-3", "LA30128-5"): ["material-hardship"],
    ("93031-3", "LA30129-3"): ["material-hardship"],
    ("93031-3", "LA46-8"): ["material-hardship"],
    ("93030-5", "LA30133-5"): ["transportation-insecurity"],
    ("93030-5", "LA30134-3"): ["transportation-insecurity"],
    ("93029-7", "LA27722-0"): ["social-connection"],
    ("93038-8", "LA13902-4"): ["stress"],
    ("93038-8", "LA13914-9"): ["stress"],
    ("93028-9", "LA33-6"): ["incarceration-status"],
    ("93034-7", "LA33-6"): ["veteran-status"],
    ("93027-1", "LA33-6"): [U],
    ("93026-3", "LA32-8"): [U],
    ("76501-6", "LA33-6"): ["intimate-partner-violence"],
    ("96779-4", "LA33-6"): ["utility-insecurity"],
    ("96779-4", "LA32002-0"): ["utility-insecurity"],
    ("69861-3", "LA33-6"): [U],
}
ANSWER_PROPERTY = "http://sdoh-fhir.org/ConceptMap/sdoh-domain/answer"

LOINC_DISPLAY = dict(LOINC_CONCEPTS)
SNOMED_DISPLAY = dict(SNOMED_CONCEPTS)
ICD_DISPLAY: dict[str, str] = {ICD["block"]["code"]: ICD["block"]["display"]}


def index_display(nodes: list[dict]) -> None:
    for n in nodes:
        ICD_DISPLAY[n["code"]] = n["display"]
        index_display(n["children"])


index_display(ICD["categories"])


def target(domain: str, equivalence: str, **extra) -> dict:
    out = {"code": domain, "display": DOMAIN_DISPLAY[domain], "equivalence": equivalence}
    out.update(extra)
    return out


icd_group = {
    "source": ICD10CM,
    "sourceVersion": "2026",
    "target": TEMP,
    "element": [
        {
            "code": code,
            "display": ICD_DISPLAY[code],
            "target": [target(d, "wider") for d in domains],
        }
        for code, domains in ICD_MAP.items()
    ],
}
snomed_group = {
    "source": SCT,
    "target": TEMP,
    "element": [
        {
            "code": code,
            "display": SNOMED_DISPLAY[code],
            "target": [target(d, eq) for d, eq in targets],
        }
        for code, targets in SNOMED_MAP.items()
    ],
}
loinc_elements = []
for question, domains in LOINC_QUESTION_MAP.items():
    targets = [target(d, "relatedto") for d in domains]
    for (q, answer), answer_domains in LOINC_ANSWER_MAP.items():
        if q != question:
            continue
        for d in answer_domains:
            targets.append(
                target(
                    d,
                    "wider",
                    dependsOn=[
                        {
                            "property": ANSWER_PROPERTY,
                            "system": LOINC,
                            "value": answer,
                            "display": LOINC_DISPLAY[answer],
                        }
                    ],
                )
            )
    loinc_elements.append({"code": question, "display": LOINC_DISPLAY[question], "target": targets})
assert {q for q, _ in LOINC_ANSWER_MAP} <= set(LOINC_QUESTION_MAP)
loinc_group = {"source": LOINC, "target": TEMP, "element": loinc_elements}
temp_group = {
    "source": TEMP,
    "target": TEMP,
    "element": [
        {"code": code, "display": display, "target": [target(code, "equivalent")]}
        for code, display in DOMAINS
    ],
}
add(
    {
        "resourceType": "ConceptMap",
        "id": "sdoh-domain",
        "url": "http://sdoh-fhir.org/ConceptMap/sdoh-domain",
        "version": "0.1.0",
        "name": "SDOHDomainRollUp",
        "title": "SDOH domain roll-up",
        "status": "active",
        "experimental": False,
        "date": DATE,
        "publisher": OURS,
        "description": (
            "Rolls ICD-10-CM Z55-Z65 codes, SNOMED CT findings, LOINC screening questions (and "
            "question + answer pairs) and the SDOHCC category codes up to the 24 SDOH domain "
            "codes of SDOHCC-ValueSetSDOHCategory. Equivalence: 'wider' = the source is a "
            "finding (or an answer indicating a need) within the domain; 'relatedto' = a "
            "screening question, goal or intervention about the domain; 'equivalent' = the "
            "domain code itself. A question + answer pair is the question as source element "
            "with target.dependsOn property " + ANSWER_PROPERTY + " (system http://loinc.org, "
            "value = the LA answer code). A source may roll up to several domains."
        ),
        "copyright": LOINC_COPYRIGHT + " " + SNOMED_COPYRIGHT,
        "targetUri": SDOHCC_VS + "SDOHCC-ValueSetSDOHCategory",
        "group": [icd_group, snomed_group, loinc_group, temp_group],
    }
)

# --------------------------------------------------------------------------- per-domain value sets

ICD_CHILDREN: dict[str, list[str]] = {}


def index_children(nodes: list[dict], parent: str) -> None:
    ICD_CHILDREN[parent] = [n["code"] for n in nodes]
    for n in nodes:
        index_children(n["children"], n["code"])


index_children(ICD["categories"], "Z55-Z65")


def subtree(code: str) -> list[str]:
    out = [code]
    for child in ICD_CHILDREN.get(code, []):
        out.extend(subtree(child))
    return out


def icd_compose(members: set[str]) -> tuple[list[dict], list[dict]]:
    """Whole subtrees as is-a filters (a nearly whole one with an exclude), the rest listed."""
    includes: list[dict] = []
    excludes: list[str] = []
    covered: set[str] = set()
    for code in ["Z55-Z65", *ALL_Z]:
        if code in covered or code not in members or code == "Z55-Z65":
            continue
        tree = subtree(code)
        missing = [x for x in tree if x not in members]
        if len(tree) > 1 and len(missing) * 4 <= len(tree):
            includes.append(isa(ICD10CM, code))
            excludes.extend(missing)
            covered.update(tree)
    rest = sorted(members - covered, key=ALL_Z.index)
    if rest:
        includes.append(inc(ICD10CM, *rest))
    exclude = [inc(ICD10CM, *excludes)] if excludes else []
    return includes, exclude


domain_members: dict[str, dict[str, set[str]]] = {
    d: {"icd": set(), "sct": set(), "loinc": set()} for d, _ in DOMAINS
}
for code, domains in ICD_MAP.items():
    if code == "Z55-Z65":
        continue
    for d in domains:
        domain_members[d]["icd"].add(code)
for code, sct_targets in SNOMED_MAP.items():
    for d, eq in sct_targets:
        if eq == "wider":
            domain_members[d]["sct"].add(code)
# Only answers whose meaning does not depend on the question (not Yes/No/Often true...).
DOMAIN_SPECIFIC_ANSWERS = {
    "LA30190-5",
    "LA31994-9",
    "LA31995-6",
    "LA30191-3",
    "LA17956-6",
    "LA30194-7",
    "LA30125-1",
    "LA30126-9",
    "LA30124-4",
    "LA30127-7",
    "LA30128-5",
    "LA30129-3",
    "LA30133-5",
    "LA30134-3",
    "LA32002-0",
}
for (_, answer), domains in LOINC_ANSWER_MAP.items():
    if answer in DOMAIN_SPECIFIC_ANSWERS:
        for d in domains:
            domain_members[d]["loinc"].add(answer)

EMPTY_DOMAINS = []
for domain, display in DOMAINS:
    members = domain_members[domain]
    if not any(members.values()):
        EMPTY_DOMAINS.append(domain)
        continue
    includes: list[dict] = []
    excludes: list[dict] = []
    if members["icd"]:
        i, e = icd_compose(members["icd"])
        includes.extend(i)
        excludes.extend(e)
    if members["sct"]:
        includes.append(inc(SCT, *sorted(members["sct"], key=list(SNOMED_DISPLAY).index)))
    if members["loinc"]:
        includes.append(inc(LOINC, *sorted(members["loinc"], key=list(LOINC_DISPLAY).index)))
    id_ = f"sdoh-domain-{domain}"
    add(
        valueset(
            id_,
            f"http://sdoh-fhir.org/ValueSet/{id_}",
            "0.1.0",
            "SDOHDomain" + "".join(p.capitalize() for p in domain.split("-")),
            f"SDOH domain: {display}",
            OURS,
            f"Codes that place a record in the SDOH domain '{display}' "
            f"({TEMP}#{domain}): ICD-10-CM Z55-Z65 codes, SNOMED CT findings and LOINC answer "
            "codes that by themselves indicate this domain. Answers such as Yes or Often true "
            "only mean something with their question: see ConceptMap "
            "http://sdoh-fhir.org/ConceptMap/sdoh-domain.",
            includes,
            excludes or None,
            copyright_=(LOINC_COPYRIGHT + " " if members["loinc"] else "")
            + (SNOMED_COPYRIGHT if members["sct"] else "")
            or None,
        )
    )

# --------------------------------------------------------------------------- write

for old in OUT.glob("*.json"):
    old.unlink()
OUT.mkdir(parents=True, exist_ok=True)
for name, resource in sorted(FILES.items()):
    (OUT / name).write_text(json.dumps(resource, indent=2, ensure_ascii=False) + "\n")
print(len(FILES), "files; domains without a value set:", EMPTY_DOMAINS)
