"""The feed's content as typed records, whatever it arrived as (HL7 v2, NDJSON or CSV).

``parse`` (HL7) and the snapshot readers produce ``PersonRecord``s; ``map_person`` turns one
into FHIR. Keeping one record type is what makes "the snapshot and the messages give the same
Patient" hold by construction rather than by two mappings kept in step by hand.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "AGENCIES",
    "IDENTIFIER",
    "PROGRAMS",
    "RELATIONSHIPS",
    "SEXES",
    "Address",
    "Header",
    "HouseholdMember",
    "MergeRecord",
    "ParsedMessage",
    "PersonName",
    "PersonRecord",
    "ProgramEnrollment",
    "ProgramInfo",
    "Telecom",
    "format_phone",
]

Event = Literal["A28", "A31", "A40"]
Category = Literal["HEALTH", "FOOD", "CASH", "CHILDCARE"]


@dataclass(frozen=True, slots=True)
class ProgramInfo:
    """One row of the profile's KYPROG table."""

    code: str
    name: str
    category: Category
    agency: str


# The KYPROG program table (feeds/iees/README.md, IN1-2 and IN1-15). A code not here is AE 103.
PROGRAMS: dict[str, ProgramInfo] = {
    p.code: p
    for p in (
        ProgramInfo("MEDICAID", "Kentucky Medicaid", "HEALTH", "KYDMS"),
        ProgramInfo("KCHIP", "Kentucky Children's Health Insurance Program", "HEALTH", "KYDMS"),
        ProgramInfo(
            "KIHIPP", "Kentucky Integrated Health Insurance Premium Payment", "HEALTH", "KYDMS"
        ),
        ProgramInfo("SNAP", "Supplemental Nutrition Assistance Program", "FOOD", "KYDCBS"),
        ProgramInfo("KTAP", "Kentucky Transitional Assistance Program", "CASH", "KYDCBS"),
        ProgramInfo("CCAP", "Child Care Assistance Program", "CHILDCARE", "KYDCBS"),
    )
}

# Administering agencies (IN1-3): the Coverage payor / Observation performer Organizations.
AGENCIES: dict[str, str] = {
    "KYDMS": "Kentucky Department for Medicaid Services",
    "KYDCBS": "Kentucky Department for Community Based Services",
}

# HL7 table 0063 (relationship) codes the profile uses, to v3-RoleCode (RelatedPerson) and to
# the inverse Coverage subscriber-relationship (IN1-17 is the head's relation TO the patient).
# Each value: (system, code, display) for RelatedPerson.relationship, and the
# subscriber-relationship of the patient to a head who stands in this relation.
_V3 = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
_V2_0131 = "http://terminology.hl7.org/CodeSystem/v2-0131"
RELATIONSHIPS: dict[str, tuple[tuple[str, str, str], str]] = {
    "SEL": ((_V3, "ONESELF", "self"), "self"),
    "SPO": ((_V3, "SPS", "spouse"), "spouse"),
    "DOM": ((_V3, "DOMPART", "domestic partner"), "common"),
    "CHD": ((_V3, "CHILD", "child"), "parent"),
    "MTH": ((_V3, "MTH", "mother"), "child"),
    "FTH": ((_V3, "FTH", "father"), "child"),
    "PAR": ((_V3, "PRN", "parent"), "child"),
    "SIB": ((_V3, "SIB", "sibling"), "other"),
    "GRD": ((_V3, "GUARD", "guardian"), "other"),
    "GRP": ((_V3, "GRPRN", "grandparent"), "other"),
    "FND": ((_V3, "FRND", "unrelated friend"), "other"),
    "OTH": ((_V2_0131, "O", "Other"), "other"),
}


# HL7 table 0001 (administrative sex) to FHIR gender.
SEXES = {"F": "female", "M": "male", "U": "unknown", "O": "other", "A": "other", "N": "unknown"}
# IndividualIDs and case numbers become parts of FHIR ids ("iees-<IndividualID>"): only
# [A-Za-z0-9.-], short enough that the ids stay within 64 characters.
IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-]{0,39}")


@dataclass(frozen=True, slots=True)
class Header:
    """What the ACK and the server need from MSH; raw (unescaped) component values."""

    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    message_time: str = ""
    message_code: str = ""
    trigger_event: str = ""
    structure: str = ""
    control_id: str = ""
    processing_id: str = ""
    version: str = ""

    @property
    def duplicate_key(self) -> tuple[str, str, str]:
        """(MSH-3, MSH-4, MSH-10): a repeat gets the stored original ACK (processing rule 2)."""
        return (self.sending_application, self.sending_facility, self.control_id)


@dataclass(frozen=True, slots=True)
class PersonName:
    family: str
    given: tuple[str, ...]
    use: str = "official"


@dataclass(frozen=True, slots=True)
class Address:
    lines: tuple[str, ...]
    city: str = ""
    state: str = ""
    postal_code: str = ""
    country: str = ""
    county_fips: str = ""
    use: str = "home"


@dataclass(frozen=True, slots=True)
class Telecom:
    system: Literal["phone", "email", "fax"]
    value: str
    use: str | None = None


@dataclass(frozen=True, slots=True)
class HouseholdMember:
    """An NK1: another current member of this person's household."""

    individual_id: str
    relationship: str  # HL70063
    name: PersonName | None = None
    gender: str | None = None
    birth_date: str | None = None
    address: Address | None = None
    start: dt.date | None = None
    end: dt.date | None = None


@dataclass(frozen=True, slots=True)
class ProgramEnrollment:
    """An IN1 (with its IN2) or a snapshot ``programs[]`` entry."""

    program: str  # a PROGRAMS key
    case_number: str
    start: dt.date | None
    end: dt.date | None
    agency: str
    aid_category: str = ""
    member_id: str = ""
    head_individual_id: str = ""
    # Coverage.relationship: this person's relation to the case head (subscriber-relationship
    # code: self, spouse, child, parent, common, other), "" when not stated.
    subscriber_relationship: str = ""


@dataclass(frozen=True, slots=True)
class PersonRecord:
    """One person's complete current state (snapshot semantics, README "Message per person").

    ``household`` is None when the source does not state household co-members (the batch
    files have no NK1): then the server must not end RelatedPersons for its absence."""

    individual_id: str
    as_of: dt.datetime  # EVN-6 (or EVN-2) / last_updated: the ordering key
    medicaid_id: str = ""
    name: PersonName | None = None
    birth_date: str | None = None  # FHIR date text (YYYY, YYYY-MM or YYYY-MM-DD)
    gender: str | None = None
    race: tuple[tuple[str, str], ...] = ()  # (CDC code, display as sent)
    ethnicity: tuple[tuple[str, str], ...] = ()
    address: Address | None = None
    telecom: tuple[Telecom, ...] = ()
    language: str = ""  # ISO 639-2 as sent
    marital_status: str = ""  # HL70002
    household: tuple[HouseholdMember, ...] | None = ()
    programs: tuple[ProgramEnrollment, ...] = ()
    # Cases the person belongs to beyond those of ``programs`` (a snapshot row with a case
    # number and no program).
    case_numbers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MergeRecord:
    """An A40 (or snapshot ``merge``): ``retired_id`` was merged into ``surviving_id``."""

    surviving_id: str
    retired_id: str
    merged_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """A message the profile accepts. ``event`` is the profile's event (A04 arrives as A28,
    A08 as A31); ``header.trigger_event`` keeps what was sent, for the ACK's MSH-9."""

    header: Header
    event: Event
    event_time: dt.datetime
    event_time_text: str  # EVN-6 (or EVN-2) as sent, for the stale warning's text
    person: PersonRecord
    merge: MergeRecord | None = None
    segments: int = field(default=0, compare=False)


def format_phone(digits: str) -> str:
    """NANP numbers as ``606-555-0142`` (the HL7 and the snapshot forms must meet)."""
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    if len(digits) == 10:
        return f"{digits[:3]}-{digits[3:6]}-{digits[6:]}"
    return digits
