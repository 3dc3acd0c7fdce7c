"""The IEES eligibility feed (KY-IEES-PERSON-ELIG, feeds/iees/README.md) to FHIR R4.

Pure transforms, no database or sockets:

* ``parse(bytes) -> ParsedMessage`` for one HL7 v2.5.1 ADT A28/A31/A40 (A04/A08 aliases),
  raising ``InvalidMessage`` (with the AE/AR code and ERRs) for what the profile refuses;
* ``map_message(ParsedMessage) -> MappedMessage``: the resources to upsert by id, what is
  current for the person (snapshot semantics), the household memberships, the merge;
* ``ack(parsed_or_error, code, errors) -> bytes``: the original-mode ACK;
* ``parse_ndjson`` / ``parse_csv`` and ``map_snapshot`` for the snapshot files;
* ``check_structure(bytes)``: hl7apy's full structure check, a hundred times slower, for a
  process pool off the hot path.

The server side (duplicates by ``Header.duplicate_key`` answered with the stored ACK, the
stale check against the stored EVN-6, merges, dead letters, MLLP) is not here.
"""

from mappers.iees.acknowledgment import ack, duplicate_notice, merge_noop_warning, stale_warning
from mappers.iees.errors import AckCode, ErrorDetail, InvalidMessage, InvalidSnapshot
from mappers.iees.fhir import (
    CASE_SYSTEM,
    INDIVIDUAL_ID_SYSTEM,
    MEDICAID_ID_SYSTEM,
    PROGRAM_ENROLLMENT_PROFILE,
    MappedMessage,
    Membership,
    group_id,
    map_message,
    map_person,
    patient_id,
)
from mappers.iees.message import parse
from mappers.iees.records import (
    Header,
    MergeRecord,
    ParsedMessage,
    PersonRecord,
    ProgramEnrollment,
)
from mappers.iees.snapshot import Snapshot, SnapshotFile, map_snapshot, parse_csv, parse_ndjson
from mappers.iees.structure import check_structure

__all__ = [
    "CASE_SYSTEM",
    "INDIVIDUAL_ID_SYSTEM",
    "MEDICAID_ID_SYSTEM",
    "PROGRAM_ENROLLMENT_PROFILE",
    "AckCode",
    "ErrorDetail",
    "Header",
    "InvalidMessage",
    "InvalidSnapshot",
    "MappedMessage",
    "Membership",
    "MergeRecord",
    "ParsedMessage",
    "PersonRecord",
    "ProgramEnrollment",
    "Snapshot",
    "SnapshotFile",
    "ack",
    "check_structure",
    "duplicate_notice",
    "group_id",
    "map_message",
    "map_person",
    "map_snapshot",
    "merge_noop_warning",
    "parse",
    "parse_csv",
    "parse_ndjson",
    "patient_id",
    "stale_warning",
]
