"""``PersonRecord`` / ``ParsedMessage`` to FHIR R4 resources (feeds/iees/README.md, mapping
table and processing rules 4-6).

Pure: the result says what this message states, and the server applies it. Every resource has
a deterministic id derived from the feed's identifiers (``iees-<UUIDv5 of the
IndividualID>``, ``iees-case-<UUIDv5 of the case number>`` ...; never the identifiers), so
applying a message is an upsert by id and a resend changes nothing. What the message no
longer states is the server's to end: ``MappedMessage`` lists the program and RelatedPerson
ids that are current for this person (snapshot semantics), and the household memberships with
their period; an absent one is ended at ``end_date``.

Programs are dated against the message's own time (EVN-6), not the wall clock, so mapping is
reproducible: an IN1-13 before that date means the enrollment has ended.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass
from typing import Any

from mappers.iees.records import (
    AGENCIES,
    PROGRAMS,
    RELATIONSHIPS,
    Address,
    Event,
    HouseholdMember,
    MergeRecord,
    ParsedMessage,
    PersonName,
    PersonRecord,
    ProgramEnrollment,
)

__all__ = [
    "CASE_SYSTEM",
    "INDIVIDUAL_ID_SYSTEM",
    "MEDICAID_ID_SYSTEM",
    "PROGRAM_ENROLLMENT_PROFILE",
    "PROGRAM_SYSTEM",
    "US_CORE_PATIENT",
    "US_CORE_RELATED_PERSON",
    "MappedMessage",
    "Membership",
    "fhir_id",
    "group_id",
    "map_message",
    "map_person",
    "patient_id",
]

# Placeholder URIs of the proposed profile (README: "placeholder URI").
INDIVIDUAL_ID_SYSTEM = "https://kynect.example.org/fhir/sid/iees-individual-id"
MEDICAID_ID_SYSTEM = "https://kynect.example.org/fhir/sid/ky-medicaid-id"
CASE_SYSTEM = "https://kynect.example.org/fhir/sid/iees-case-number"
AGENCY_SYSTEM = "https://kynect.example.org/fhir/sid/ky-agency"
PROGRAM_SYSTEM = "https://kynect.example.org/fhir/CodeSystem/kyprog"

US_CORE_PATIENT = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"
US_CORE_RELATED_PERSON = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-relatedperson"
PROGRAM_ENROLLMENT_PROFILE = (
    "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/"
    "SDOHCC-ObservationProgramEnrollmentStatus"
)
_US_CORE_RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
_US_CORE_ETHNICITY = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity"
_CDC_RACE = "urn:oid:2.16.840.1.113883.6.238"
_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
_SDOHCC_CODES = (
    "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
)
_US_CORE_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-category"

# OMB categories (US Core race / ethnicity ombCategory); other CDC codes go to "detailed".
_OMB_RACE = {
    "1002-5": "American Indian or Alaska Native",
    "2028-9": "Asian",
    "2054-5": "Black or African American",
    "2076-8": "Native Hawaiian or Other Pacific Islander",
    "2106-3": "White",
}
_OMB_ETHNICITY = {"2135-2": "Hispanic or Latino", "2186-5": "Not Hispanic or Latino"}
# ISO 639-2 (PID-15) to BCP-47 for the languages Kentucky's programs see most; a code not
# here is kept as sent (three-letter subtags are valid BCP-47 where no two-letter one exists).
_LANGUAGES = {
    "eng": "en", "spa": "es", "ara": "ar", "bos": "bs", "chi": "zh", "zho": "zh", "fre": "fr",
    "fra": "fr", "ger": "de", "deu": "de", "hat": "ht", "hin": "hi", "jpn": "ja", "kor": "ko",
    "nep": "ne", "per": "fa", "fas": "fa", "por": "pt", "rus": "ru", "som": "so", "swa": "sw",
    "tgl": "tl", "ukr": "uk", "vie": "vi",
}  # fmt: skip
# HL7 table 0002 to v3-MaritalStatus.
_MARITAL = {"M": "M", "S": "S", "D": "D", "W": "W", "A": "L", "P": "T", "U": "U", "I": "I"}
_MARITAL_DISPLAY = {
    "M": "Married", "S": "Never Married", "D": "Divorced", "W": "Widowed", "L": "Legally Separated",
    "T": "Domestic partner", "U": "unmarried", "I": "Interlocutory",
}  # fmt: skip
# Source of Payment Typology codes, as US Core's Coverage examples use them.
_SOPT = {"MEDICAID": ("2", "MEDICAID"), "KCHIP": ("23", "Medicaid/SCHIP"),
         "KIHIPP": ("29", "Medicaid Other")}  # fmt: skip
# The SDOHCC category of each non-health program (none fits child care: left out).
_SDOH_CATEGORY = {"FOOD": ("food-insecurity", "Food Insecurity"),
                  "CASH": ("financial-insecurity", "Financial Insecurity")}  # fmt: skip
_SAFE = re.compile(r"[A-Za-z0-9.\-]+")


@dataclass(frozen=True, slots=True)
class Membership:
    """This person's membership of a household (Group ``group_id``, case ``case_number``).

    ``active`` is False when every program of the case has ended (the person dropped out of
    the case, rule 5): the server sets ``member.period.end`` and ``inactive``."""

    case_number: str
    group_id: str
    patient_id: str
    start: dt.date | None
    end: dt.date | None
    active: bool


@dataclass(frozen=True, slots=True)
class MappedMessage:
    """What one message (or one snapshot person) states, ready to upsert by id.

    ``resources``: Patient, agency Organizations, one Coverage (health) or program-enrollment
    Observation per program, one RelatedPerson per NK1, and one Group per case listing only
    this person (merge members by ``entity.reference``; never replace the list).
    ``current_program_ids`` / ``current_related_person_ids``: "Type/id" of what is current for
    this person; the server ends the person's others (``period.end`` = ``end_date``,
    Coverage ``cancelled``, Observation ``not-enrolled``, RelatedPerson ``active`` false).
    None means the source does not state them (A40; RelatedPersons in a snapshot file).
    ``merge``: an A40, the retired Patient to link ``replaced-by`` the survivor."""

    event: Event | None
    individual_id: str
    patient_id: str
    event_time: dt.datetime
    end_date: dt.date
    duplicate_key: tuple[str, str, str] | None
    resources: tuple[dict[str, Any], ...]
    current_program_ids: frozenset[str] | None
    current_related_person_ids: frozenset[str] | None
    memberships: tuple[Membership, ...]
    merge: MergeRecord | None = None

    @property
    def retired_patient_id(self) -> str | None:
        return patient_id(self.merge.retired_id) if self.merge else None


def fhir_id(prefix: str, *parts: str) -> str:
    """``prefix-<UUIDv5 of the parts>``: deterministic, and free of the identifiers it derives
    from. A resource id travels in URLs, logs and notifications, where an IndividualID or a
    case number must not (DESIGN.md decision 10). Organizations of the agencies (``iees-org``)
    keep their code, which names an agency, not a person."""
    if prefix == "iees-org":
        candidate = "-".join((prefix, *parts))
        if len(candidate) <= 64 and _SAFE.fullmatch(candidate):
            return candidate
    return f"{prefix}-{uuid.uuid5(_ID_NAMESPACE, chr(0x1F).join((prefix, *parts)))}"


_ID_NAMESPACE = uuid.UUID("6f1c4a52-8f3e-5b1e-9d7a-3c2b1a0e9f11")


def patient_id(individual_id: str) -> str:
    return fhir_id("iees", individual_id)


def group_id(case_number: str) -> str:
    return fhir_id("iees-case", case_number)


def map_message(parsed: ParsedMessage) -> MappedMessage:
    """The FHIR content of an accepted message (A28, A31, or A40)."""
    if parsed.event == "A40":
        # An A40 carries the survivor's identity, not its state: no programs or household
        # to end. The Patient is there for rule 6(d) (neither ID known: create it).
        return MappedMessage(
            event="A40",
            individual_id=parsed.person.individual_id,
            patient_id=patient_id(parsed.person.individual_id),
            event_time=parsed.event_time,
            end_date=parsed.event_time.date(),
            duplicate_key=parsed.header.duplicate_key,
            resources=(map_patient(parsed.person),),
            current_program_ids=None,
            current_related_person_ids=None,
            memberships=(),
            merge=parsed.merge,
        )
    return map_person(parsed.person, event=parsed.event, duplicate_key=parsed.header.duplicate_key)


def map_person(
    person: PersonRecord,
    *,
    event: Event | None = None,
    duplicate_key: tuple[str, str, str] | None = None,
    today: dt.date | None = None,
    end_date: dt.date | None = None,
) -> MappedMessage:
    """One person's complete current state to FHIR (the HL7 and the snapshot paths meet here).

    ``today`` is the date an enrollment's end is judged against (default: the record's own
    time, EVN-6); ``end_date`` the date to end what is no longer stated (default: today)."""
    today = today or person.as_of.date()
    pid = patient_id(person.individual_id)
    resources: list[dict[str, Any]] = [map_patient(person)]
    agencies = sorted({p.agency for p in person.programs})
    resources.extend(_organization(code) for code in agencies)
    program_ids: list[str] = []
    for program in person.programs:
        resource = (
            _coverage(person, program, today)
            if PROGRAMS[program.program].category == "HEALTH"
            else _enrollment(person, program, today)
        )
        resources.append(resource)
        program_ids.append(f"{resource['resourceType']}/{resource['id']}")
    related_ids: frozenset[str] | None = None
    if person.household is not None:
        related = [_related_person(person, member, today) for member in person.household]
        resources.extend(related)
        related_ids = frozenset(f"RelatedPerson/{r['id']}" for r in related)
    memberships = _memberships(person, today)
    resources.extend(_group(m) for m in memberships)
    return MappedMessage(
        event=event,
        individual_id=person.individual_id,
        patient_id=pid,
        event_time=person.as_of,
        end_date=end_date or today,
        duplicate_key=duplicate_key,
        resources=tuple(resources),
        current_program_ids=frozenset(program_ids),
        current_related_person_ids=related_ids,
        memberships=memberships,
    )


def map_patient(person: PersonRecord) -> dict[str, Any]:
    """The Patient; it claims US Core Patient only when it has what that profile requires
    (an identifier, a name and a gender)."""
    resource: dict[str, Any] = {"resourceType": "Patient", "id": patient_id(person.individual_id)}
    if person.name is not None and person.gender is not None:
        resource["meta"] = {"profile": [US_CORE_PATIENT]}
    extensions = [
        ext
        for ext in (
            _race_extension(_US_CORE_RACE, person.race, _OMB_RACE),
            _race_extension(_US_CORE_ETHNICITY, person.ethnicity, _OMB_ETHNICITY),
        )
        if ext is not None
    ]
    if extensions:
        resource["extension"] = extensions
    identifiers = [_identifier("PI", INDIVIDUAL_ID_SYSTEM, person.individual_id)]
    if person.medicaid_id:
        identifiers.append(_identifier("MA", MEDICAID_ID_SYSTEM, person.medicaid_id))
    resource["identifier"] = identifiers
    resource["active"] = True
    if person.name is not None:
        resource["name"] = [_human_name(person.name)]
    if person.telecom:
        resource["telecom"] = [
            {"system": t.system, "value": t.value, **({"use": t.use} if t.use else {})}
            for t in person.telecom
        ]
    if person.gender is not None:
        resource["gender"] = person.gender
    if person.birth_date is not None:
        resource["birthDate"] = person.birth_date
    if person.address is not None:
        resource["address"] = [_address(person.address)]
    marital = _MARITAL.get(person.marital_status)
    if marital is not None:
        resource["maritalStatus"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
                    "code": marital,
                    "display": _MARITAL_DISPLAY[marital],
                }
            ]
        }
    if person.language:
        code = _LANGUAGES.get(person.language.lower(), person.language.lower())
        if _SAFE.fullmatch(code):
            resource["communication"] = [
                {
                    "language": {"coding": [{"system": "urn:ietf:bcp:47", "code": code}]},
                    "preferred": True,
                }
            ]
    return resource


def _race_extension(
    url: str, codes: tuple[tuple[str, str], ...], omb: dict[str, str]
) -> dict[str, Any] | None:
    if not codes:
        return None
    parts: list[dict[str, Any]] = []
    texts: list[str] = []
    for code, display in codes:
        name = omb.get(code) or display or code
        coding = {"system": _CDC_RACE, "code": code, **({"display": name} if name else {})}
        parts.append({"url": "ombCategory" if code in omb else "detailed", "valueCoding": coding})
        texts.append(name)
    parts.append({"url": "text", "valueString": ", ".join(texts)})
    return {"url": url, "extension": parts}


def _identifier(kind: str, system: str, value: str) -> dict[str, Any]:
    return {
        "type": {"coding": [{"system": _V2_0203, "code": kind}]},
        "system": system,
        "value": value,
    }


def _human_name(name: PersonName) -> dict[str, Any]:
    result: dict[str, Any] = {"use": name.use}
    if name.family:
        result["family"] = name.family
    if name.given:
        result["given"] = list(name.given)
    return result


def _address(address: Address) -> dict[str, Any]:
    result: dict[str, Any] = {"use": address.use}
    if address.lines:
        result["line"] = list(address.lines)
    for key, value in (
        ("city", address.city),
        ("district", address.county_fips),  # the county, as its FIPS code (XAD.9)
        ("state", address.state),
        ("postalCode", address.postal_code),
        ("country", address.country),
    ):
        if value:
            result[key] = value
    return result


def _period(start: dt.date | None, end: dt.date | None) -> dict[str, str]:
    period = {}
    if start is not None:
        period["start"] = start.isoformat()
    if end is not None:
        period["end"] = end.isoformat()
    return period


def _ended(end: dt.date | None, today: dt.date) -> bool:
    return end is not None and end < today


def _organization(code: str) -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "id": fhir_id("iees-org", code.lower()),
        "identifier": [{"system": AGENCY_SYSTEM, "value": code}],
        "active": True,
        "name": AGENCIES.get(code, code),
    }


def _coverage(person: PersonRecord, program: ProgramEnrollment, today: dt.date) -> dict[str, Any]:
    """A health program (Medicaid, KCHIP, KI-HIPP) as Coverage (README table, IN1)."""
    info = PROGRAMS[program.program]
    pid = patient_id(person.individual_id)
    resource: dict[str, Any] = {
        "resourceType": "Coverage",
        "id": fhir_id(
            "iees-cov", person.individual_id, program.program.lower(), program.case_number
        ),
    }
    if program.member_id:
        resource["identifier"] = [
            {
                "type": {"coding": [{"system": _V2_0203, "code": "MB"}]},
                "system": MEDICAID_ID_SYSTEM,
                "value": program.member_id,
            }
        ]
    resource["status"] = "cancelled" if _ended(program.end, today) else "active"
    sopt_code, sopt_display = _SOPT[program.program]
    resource["type"] = {
        "coding": [
            {"system": "https://nahdo.org/sopt", "code": sopt_code, "display": sopt_display}
        ],
        "text": info.name,
    }
    head = program.head_individual_id or person.individual_id
    resource["subscriber"] = {"reference": f"Patient/{patient_id(head)}"}
    resource["subscriberId"] = head
    resource["beneficiary"] = {"reference": f"Patient/{pid}"}
    relationship = "self" if head == person.individual_id else program.subscriber_relationship
    if relationship:
        resource["relationship"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/subscriber-relationship",
                    "code": relationship,
                }
            ]
        }
    period = _period(program.start, program.end)
    if period:
        resource["period"] = period
    resource["payor"] = [
        {"reference": f"Organization/{fhir_id('iees-org', program.agency.lower())}"}
    ]
    classes = [
        _class("group", program.case_number, "IEES case"),
        _class("plan", program.program, info.name),
    ]
    if program.aid_category:
        classes.append(_class("subgroup", program.aid_category, None))
    resource["class"] = classes
    return resource


def _class(kind: str, value: str, name: str | None) -> dict[str, Any]:
    result: dict[str, Any] = {
        "type": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/coverage-class", "code": kind}
            ]
        },
        "value": value,
    }
    if name:
        result["name"] = name
    return result


def _enrollment(person: PersonRecord, program: ProgramEnrollment, today: dt.date) -> dict[str, Any]:
    """A non-health program (SNAP, KTAP, CCAP) as the SDOHCC program-enrollment Observation."""
    info = PROGRAMS[program.program]
    categories: list[dict[str, Any]] = [
        {"coding": [{"system": _US_CORE_CATEGORY, "code": "sdoh", "display": "SDOH"}]},
        {
            "coding": [
                {
                    "system": _SDOHCC_CODES,
                    "code": "program-enrollment",
                    "display": "Program Enrollment",
                }
            ]
        },
    ]
    sdoh = _SDOH_CATEGORY.get(info.category)
    if sdoh is not None:
        categories.append(
            {"coding": [{"system": _SDOHCC_CODES, "code": sdoh[0], "display": sdoh[1]}]}
        )
    enrolled = not _ended(program.end, today)
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": fhir_id(
            "iees-enr", person.individual_id, program.program.lower(), program.case_number
        ),
        "meta": {"profile": [PROGRAM_ENROLLMENT_PROFILE]},
        "status": "final",
        "category": categories,
        "code": {
            "coding": [{"system": PROGRAM_SYSTEM, "code": info.code, "display": info.name}],
            "text": info.name,
        },
        "subject": {"reference": f"Patient/{patient_id(person.individual_id)}"},
    }
    period = _period(program.start, program.end)
    if period:
        resource["effectivePeriod"] = period
    resource["performer"] = [
        {"reference": f"Organization/{fhir_id('iees-org', program.agency.lower())}"}
    ]
    resource["valueCodeableConcept"] = {
        "coding": [
            {
                "system": _SDOHCC_CODES,
                "code": "enrolled" if enrolled else "not-enrolled",
                "display": "Enrolled" if enrolled else "Not Enrolled",
            }
        ]
    }
    return resource


def _related_person(
    person: PersonRecord, member: HouseholdMember, today: dt.date
) -> dict[str, Any]:
    """An NK1: a household co-member. ``active`` false once NK1-9 has passed (the kinship
    stays; the co-membership ends, rule 5)."""
    resource: dict[str, Any] = {
        "resourceType": "RelatedPerson",
        "id": fhir_id("iees-rp", person.individual_id, member.individual_id),
        # US Core RelatedPerson asks for active, patient and (must support) a name.
        **({"meta": {"profile": [US_CORE_RELATED_PERSON]}} if member.name is not None else {}),
        "identifier": [_identifier("PI", INDIVIDUAL_ID_SYSTEM, member.individual_id)],
        "active": not _ended(member.end, today),
        "patient": {"reference": f"Patient/{patient_id(person.individual_id)}"},
    }
    known = RELATIONSHIPS.get(member.relationship)
    if known is not None:
        system, code, display = known[0]
        resource["relationship"] = [
            {"coding": [{"system": system, "code": code, "display": display}]}
        ]
    if member.name is not None:
        resource["name"] = [_human_name(member.name)]
    if member.gender is not None:
        resource["gender"] = member.gender
    if member.birth_date is not None:
        resource["birthDate"] = member.birth_date
    if member.address is not None:
        resource["address"] = [_address(member.address)]
    period = _period(member.start, member.end)
    if period:
        resource["period"] = period
    return resource


def _memberships(person: PersonRecord, today: dt.date) -> tuple[Membership, ...]:
    by_case: dict[str, list[ProgramEnrollment]] = {}
    for program in person.programs:
        by_case.setdefault(program.case_number, []).append(program)
    for case in person.case_numbers:
        by_case.setdefault(case, [])
    pid = patient_id(person.individual_id)
    result = []
    for case, programs in by_case.items():
        starts = [p.start for p in programs if p.start is not None]
        ended = bool(programs) and all(_ended(p.end, today) for p in programs)
        ends = [p.end for p in programs if p.end is not None]
        result.append(
            Membership(
                case_number=case,
                group_id=group_id(case),
                patient_id=pid,
                start=min(starts) if starts else None,
                end=max(ends) if ended and ends else None,
                active=not ended,
            )
        )
    return tuple(result)


def _group(membership: Membership) -> dict[str, Any]:
    """The household Group with this one member (SDOHCC-Group is a cohort, not a household:
    no profile is claimed, research/feeds.md §4.5)."""
    member: dict[str, Any] = {"entity": {"reference": f"Patient/{membership.patient_id}"}}
    period = _period(membership.start, membership.end)
    if period:
        member["period"] = period
    member["inactive"] = not membership.active
    return {
        "resourceType": "Group",
        "id": membership.group_id,
        "identifier": [{"system": CASE_SYSTEM, "value": membership.case_number}],
        "active": True,
        "type": "person",
        "actual": True,
        "code": {"text": "household"},
        "member": [member],
    }
