"""The IEES full/delta snapshot files (NDJSON, or four CSV files) to the same records as the
HL7 messages (feeds/iees/README.md, "Batch alternative").

A file is refused as a whole (``InvalidSnapshot``) when it cannot be trusted entire: no
header or trailer, trailer counts that differ from the records (a truncated full file would
otherwise end everyone's enrollment), a CSV case whose ``household_size`` differs from its
person rows, or any record with a bad field. Messages name the line or row and the field,
never the value.

``map_snapshot`` gives one ``MappedMessage`` per person (``map_person``, as for an A31) plus
the merges. The batch files carry no NK1: RelatedPersons are not stated, so
``current_related_person_ids`` is None. Ending what a *full* snapshot no longer lists (with
``Snapshot.absent_end_date``) and the safety valve (stop when more than a few percent of
active enrollments would end) are the server's, which knows what is stored.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from mappers.iees.errors import InvalidSnapshot
from mappers.iees.fhir import MappedMessage, map_person
from mappers.iees.records import (
    AGENCIES,
    IDENTIFIER,
    PROGRAMS,
    SEXES,
    Address,
    MergeRecord,
    PersonName,
    PersonRecord,
    ProgramEnrollment,
    Telecom,
    format_phone,
)

__all__ = ["Snapshot", "SnapshotFile", "map_snapshot", "parse_csv", "parse_ndjson"]

# A person's relationship TO the case head (relationship_to_head, HL70063) as the
# subscriber-relationship of their Coverage.
_TO_HEAD = {
    "SEL": "self", "SPO": "spouse", "DOM": "common", "CHD": "child", "MTH": "parent",
    "FTH": "parent", "PAR": "parent",
}  # fmt: skip
_STATUSES = frozenset({"ACTIVE", "CLOSED"})
CSV_FILES = ("cases.csv", "persons.csv", "eligibility.csv", "merges.csv")


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    """A snapshot read and checked, before mapping."""

    file_id: str
    snapshot_date: dt.date
    mode: Literal["full", "delta"]
    persons: tuple[PersonRecord, ...]
    merges: tuple[MergeRecord, ...]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A mapped snapshot: one MappedMessage per person, and the merges to apply."""

    file_id: str
    snapshot_date: dt.date
    mode: Literal["full", "delta"]
    persons: tuple[MappedMessage, ...]
    merges: tuple[MergeRecord, ...]

    @property
    def absent_end_date(self) -> dt.date:
        """In full mode, people and programs absent from the file end the day before."""
        return self.snapshot_date - dt.timedelta(days=1)


def map_snapshot(file: SnapshotFile) -> Snapshot:
    """Each person as ``map_person`` maps an A31, with enrollments judged as of the snapshot
    date and what is no longer listed ended the day before it."""
    end = file.snapshot_date - dt.timedelta(days=1)
    persons = tuple(
        map_person(person, today=file.snapshot_date, end_date=end) for person in file.persons
    )
    return Snapshot(file.file_id, file.snapshot_date, file.mode, persons, file.merges)


def parse_ndjson(data: bytes) -> SnapshotFile:
    """Header, person and merge records, trailer (one JSON object a line)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidSnapshot("file is not UTF-8") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    records = [(n, _json_object(n, line)) for n, line in lines]
    if not records or records[0][1].get("record_type") != "header":
        raise InvalidSnapshot("line 1: the file must open with a header record")
    if records[-1][1].get("record_type") != "trailer":
        raise InvalidSnapshot("no trailer record: the file may be truncated")
    header_line, header = records[0]
    snapshot_date = _date(header, "snapshot_date", header_line, required=True)
    assert snapshot_date is not None
    mode = _mode(header.get("mode"), header_line)
    persons: list[PersonRecord] = []
    merges: list[MergeRecord] = []
    for n, record in records[1:-1]:
        kind = record.get("record_type")
        if kind == "person":
            persons.append(_ndjson_person(record, n))
        elif kind == "merge":
            merges.append(_merge(record, n))
        else:
            raise InvalidSnapshot(f"line {n}: unexpected record_type")
    trailer_line, trailer = records[-1]
    _check_count(trailer, "person_count", len(persons), trailer_line)
    _check_count(trailer, "merge_count", len(merges), trailer_line)
    file_id = _text(header, "file_id", header_line)
    if trailer.get("file_id", file_id) != file_id:
        raise InvalidSnapshot(f"line {trailer_line}: trailer file_id differs from the header")
    return SnapshotFile(file_id, snapshot_date, mode, tuple(persons), tuple(merges))


def parse_csv(
    directory: Path,
    *,
    snapshot_date: dt.date,
    mode: Literal["full", "delta"] = "full",
    file_id: str | None = None,
) -> SnapshotFile:
    """``cases.csv``, ``persons.csv`` (a row per person per case), ``eligibility.csv`` (a row
    per person per program) and ``merges.csv``. The CSV form has no header or trailer, so the
    snapshot date and mode come from the caller (the transfer's manifest) and the counts are
    checked against ``cases.csv``'s ``household_size``."""
    tables = {name: _csv_rows(directory / name) for name in CSV_FILES}
    household_sizes: dict[str, int] = {}
    heads: dict[str, str] = {}
    for n, row in tables["cases.csv"]:
        case = _identifier(row, "case_number", n, "cases.csv")
        if case in household_sizes:
            raise InvalidSnapshot(f"cases.csv row {n}: case_number repeated")
        household_sizes[case] = _count(row, "household_size", n)
        heads[case] = _identifier(row, "head_individual_id", n, "cases.csv")
    programs: dict[tuple[str, str], list[ProgramEnrollment]] = {}
    rows_per_case: dict[str, int] = dict.fromkeys(household_sizes, 0)
    persons: dict[str, PersonRecord] = {}
    relation: dict[tuple[str, str], str] = {}
    for n, row in tables["persons.csv"]:
        where = f"persons.csv row {n}"
        person_id = _identifier(row, "individual_id", n, "persons.csv")
        case = _identifier(row, "case_number", n, "persons.csv")
        if case not in rows_per_case:
            raise InvalidSnapshot(f"{where}: case_number not in cases.csv")
        rows_per_case[case] += 1
        if (person_id, case) in relation:
            raise InvalidSnapshot(f"{where}: the person is listed twice in the case")
        relation[(person_id, case)] = row.get("relationship_to_head") or ""
        record = _person(
            {
                **row,
                "given": (row.get("given_names") or "").split(),
                "family": row.get("family_name") or "",
                "race": (row.get("race_codes") or "").replace(";", " ").split(),
                "ethnicity": row.get("ethnicity_code") or "",
                "address": {
                    "line": [x for x in (row.get("address_line1"), row.get("address_line2")) if x],
                    "city": row.get("city"),
                    "state": row.get("state"),
                    "postal_code": row.get("postal_code"),
                    "county_fips": row.get("county_fips"),
                },
            },
            where,
        )
        known = persons.get(person_id)
        cases = (known.case_numbers if known else ()) + (case,)
        persons[person_id] = _replace_cases(known or record, cases)
    for case, size in household_sizes.items():
        if rows_per_case[case] != size:
            raise InvalidSnapshot(
                f"cases.csv: case household_size {size} but {rows_per_case[case]} person rows"
            )
    for n, row in tables["eligibility.csv"]:
        person_id = _identifier(row, "individual_id", n, "eligibility.csv")
        case = _identifier(row, "case_number", n, "eligibility.csv")
        if (person_id, case) not in relation:
            raise InvalidSnapshot(f"eligibility.csv row {n}: no persons.csv row for it")
        context = {
            "head_individual_id": heads[case],
            "relationship_to_head": relation[(person_id, case)],
        }
        programs.setdefault((person_id, case), []).append(
            _program({**row, **context}, case, f"eligibility.csv row {n}")
        )
    result = []
    for person_id, record in persons.items():
        own = tuple(p for case in record.case_numbers for p in programs.get((person_id, case), ()))
        result.append(_replace_programs(record, own))
    merges = tuple(_merge(row, n) for n, row in tables["merges.csv"])
    return SnapshotFile(file_id or directory.name, snapshot_date, mode, tuple(result), merges)


def _replace_cases(record: PersonRecord, cases: tuple[str, ...]) -> PersonRecord:
    return replace(record, case_numbers=cases)


def _replace_programs(
    record: PersonRecord, programs: tuple[ProgramEnrollment, ...]
) -> PersonRecord:
    return replace(record, programs=programs)


def _csv_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise InvalidSnapshot(f"{path.name} missing") from None
    except UnicodeDecodeError:
        raise InvalidSnapshot(f"{path.name} is not UTF-8") from None
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
        return [(n, dict(row)) for n, row in enumerate(reader, start=2)]
    except csv.Error as exc:
        raise InvalidSnapshot(f"{path.name}: not CSV ({exc})") from None


def _json_object(n: int, line: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        raise InvalidSnapshot(f"line {n}: not JSON") from None
    if not isinstance(value, dict):
        raise InvalidSnapshot(f"line {n}: not a JSON object")
    return value


def _ndjson_person(record: Mapping[str, Any], n: int) -> PersonRecord:
    where = f"line {n}"
    person = _person(record, where)
    case = _identifier(record, "case_number", n, "line")
    programs_value = record.get("programs", [])
    if not isinstance(programs_value, list):
        raise InvalidSnapshot(f"{where}: programs must be a list")
    programs = tuple(
        _program({**item, **_head_context(record)}, case, where)
        if isinstance(item, dict)
        else _refuse(where, "programs")
        for item in programs_value
    )
    return _replace_programs(_replace_cases(person, (case,)), programs)


def _head_context(record: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "head_individual_id": record.get("head_individual_id"),
        "relationship_to_head": record.get("relationship_to_head"),
    }


def _refuse(where: str, field: str) -> ProgramEnrollment:
    raise InvalidSnapshot(f"{where}: field {field} malformed")


def _person(record: Mapping[str, Any], where: str) -> PersonRecord:
    individual_id = _id_value(record.get("individual_id"), where, "individual_id")
    given = record.get("given") or []
    family = record.get("family") or ""
    if not isinstance(given, list) or not all(isinstance(g, str) for g in given):
        raise InvalidSnapshot(f"{where}: field given must be a list of strings")
    if not isinstance(family, str):
        raise InvalidSnapshot(f"{where}: field family must be a string")
    sex = _optional_text(record, "sex", where)
    gender = SEXES.get(sex) if sex else None
    if sex and gender is None:
        raise InvalidSnapshot(f"{where}: field sex not in HL70001")
    birth = _date(record, "birth_date", where)
    race = record.get("race") or []
    if not isinstance(race, list) or not all(isinstance(r, str) for r in race):
        raise InvalidSnapshot(f"{where}: field race must be a list of codes")
    ethnicity = _optional_text(record, "ethnicity", where)
    phone = "".join(ch for ch in _optional_text(record, "phone", where) if ch.isdigit())
    email = _optional_text(record, "email", where)
    telecom = ((Telecom("phone", format_phone(phone), "home"),) if phone else ()) + (
        (Telecom("email", email),) if email else ()
    )
    medicaid_id = _optional_text(record, "medicaid_id", where)
    if medicaid_id:
        _id_value(medicaid_id, where, "medicaid_id")
    return PersonRecord(
        individual_id=individual_id,
        as_of=_timestamp(record.get("last_updated"), where, "last_updated"),
        medicaid_id=medicaid_id,
        name=PersonName(family, tuple(given)) if family or given else None,
        birth_date=birth.isoformat() if birth else None,
        gender=gender,
        race=tuple((code, "") for code in race),
        ethnicity=((ethnicity, ""),) if ethnicity else (),
        address=_address(record.get("address"), where),
        telecom=telecom,
        language=_optional_text(record, "language", where),
        marital_status=_optional_text(record, "marital_status", where),
        household=None,
    )


def _address(value: Any, where: str) -> Address | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidSnapshot(f"{where}: field address must be an object")
    lines = value.get("line") or []
    if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
        raise InvalidSnapshot(f"{where}: field address.line must be a list of strings")
    parts = {k: _optional_text(value, k, where) for k in
             ("city", "state", "postal_code", "county_fips")}  # fmt: skip
    if not lines and not any(parts.values()):
        return None
    return Address(tuple(lines), parts["city"], parts["state"], parts["postal_code"], "US",
                   parts["county_fips"])  # fmt: skip


def _program(item: Mapping[str, Any], case: str, where: str) -> ProgramEnrollment:
    code = _optional_text(item, "program", where)
    info = PROGRAMS.get(code)
    if info is None:
        raise InvalidSnapshot(f"{where}: field program not in KYPROG table")
    status = _optional_text(item, "status", where) or "ACTIVE"
    if status not in _STATUSES:
        raise InvalidSnapshot(f"{where}: field status not ACTIVE or CLOSED")
    end = _date(item, "end_date", where)
    if status == "CLOSED" and end is None:
        raise InvalidSnapshot(f"{where}: a CLOSED program needs end_date")
    agency = _optional_text(item, "admin_agency", where)
    head = _optional_text(item, "head_individual_id", where)
    if head:
        _id_value(head, where, "head_individual_id")
    return ProgramEnrollment(
        program=info.code,
        case_number=case,
        start=_date(item, "begin_date", where),
        end=end,
        agency=agency if agency in AGENCIES else info.agency,
        aid_category=_optional_text(item, "aid_category", where),
        member_id=_optional_text(item, "member_id", where),
        head_individual_id=head,
        subscriber_relationship=_TO_HEAD.get(
            _optional_text(item, "relationship_to_head", where), "other"
        ),
    )


def _merge(record: Mapping[str, Any], n: int) -> MergeRecord:
    where = f"line {n}" if "record_type" in record else f"merges.csv row {n}"
    surviving = _id_value(record.get("surviving_individual_id"), where, "surviving_individual_id")
    retired = _id_value(record.get("retired_individual_id"), where, "retired_individual_id")
    if surviving == retired:
        raise InvalidSnapshot(f"{where}: merge of an IndividualID into itself")
    merged_at = record.get("merged_at")
    return MergeRecord(
        surviving, retired, _timestamp(merged_at, where, "merged_at") if merged_at else None
    )


def _identifier(row: Mapping[str, Any], field: str, n: int, source: str) -> str:
    where = f"{source} row {n}" if source.endswith(".csv") else f"line {n}"
    return _id_value(row.get(field), where, field)


def _id_value(value: Any, where: str, field: str) -> str:
    if not isinstance(value, str) or IDENTIFIER.fullmatch(value) is None:
        raise InvalidSnapshot(f"{where}: field {field} missing or not an identifier")
    return value


def _optional_text(record: Mapping[str, Any], field: str, where: str) -> str:
    value = record.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidSnapshot(f"{where}: field {field} must be a string")
    return value


def _text(record: Mapping[str, Any], field: str, n: int) -> str:
    value = _optional_text(record, field, f"line {n}")
    if not value:
        raise InvalidSnapshot(f"line {n}: field {field} missing")
    return value


def _date(
    record: Mapping[str, Any], field: str, where: str | int, *, required: bool = False
) -> dt.date | None:
    place = f"line {where}" if isinstance(where, int) else where
    value = _optional_text(record, field, place)
    if not value:
        if required:
            raise InvalidSnapshot(f"{place}: field {field} missing")
        return None
    try:
        return dt.date.fromisoformat(value) if len(value) == 10 else _bad(place, field)
    except ValueError:
        raise InvalidSnapshot(f"{place}: field {field} not a date (YYYY-MM-DD)") from None


def _bad(where: str, field: str) -> dt.date:
    raise InvalidSnapshot(f"{where}: field {field} not a date (YYYY-MM-DD)")


def _timestamp(value: Any, where: str, field: str) -> dt.datetime:
    if not isinstance(value, str):
        raise InvalidSnapshot(f"{where}: field {field} missing")
    try:
        stamp = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidSnapshot(f"{where}: field {field} not an ISO 8601 date-time") from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)


def _mode(value: Any, n: int) -> Literal["full", "delta"]:
    if value == "full":
        return "full"
    if value == "delta":
        return "delta"
    raise InvalidSnapshot(f"line {n}: field mode must be full or delta")


def _count(row: Mapping[str, Any], field: str, n: int) -> int:
    value = row.get(field)
    if not isinstance(value, str) or not value.isdigit():
        raise InvalidSnapshot(f"cases.csv row {n}: field {field} not a count")
    return int(value)


def _check_count(trailer: Mapping[str, Any], field: str, actual: int, n: int) -> None:
    stated = trailer.get(field)
    if not isinstance(stated, int) or isinstance(stated, bool) or stated != actual:
        raise InvalidSnapshot(f"line {n}: trailer {field} does not match the records ({actual})")
