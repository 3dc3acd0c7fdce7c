"""HL7 v2.5.1 ADT messages of the KY-IEES-PERSON-ELIG profile to ``ParsedMessage``.

The profile is ``feeds/iees/README.md`` (events A28/A31/A40, A04/A08 as aliases; field
table; processing rule 7 for the refusals). What the profile refuses raises ``InvalidMessage``
with the ACK code and one ``ErrorDetail`` per bad field:

* AR: not HL7 / no MSH (100 at ``MSH^1``), not UTF-8 (102 at ``MSH^1^18``), message type not
  ADT (200), unsupported event (201 at ``MSH^1^9^1^2``), processing id (202), version (203),
  no MSH-10 (101).
* AE: a required field missing (101: the IndividualID at ``PID^1^3^1``, NK1-33, IN1-8, MRG-1),
  a bad date or identifier (102), a code outside its table (103: sex, relationship, program),
  an A40 merging an IndividualID into itself (204).

Nothing else escapes: any input, however broken, yields a ``ParsedMessage`` or an
``InvalidMessage`` (tests/mappers/test_iees_hypothesis.py holds it to that).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import NoReturn

from mappers.iees._er7 import Segment, normalise, split_message
from mappers.iees.errors import AckCode, ErrorDetail, InvalidMessage
from mappers.iees.records import (
    AGENCIES,
    IDENTIFIER,
    PROGRAMS,
    RELATIONSHIPS,
    SEXES,
    Address,
    Event,
    Header,
    HouseholdMember,
    MergeRecord,
    ParsedMessage,
    PersonName,
    PersonRecord,
    ProgramEnrollment,
    Telecom,
    format_phone,
)

__all__ = ["SUPPORTED_TEXT", "parse", "parse_date", "parse_timestamp"]

IEES_AUTHORITY = "KYIEES"
MEDICAID_AUTHORITY = "KYMEDICAID"

_EVENTS: dict[str, Event] = {"A28": "A28", "A31": "A31", "A40": "A40"}
_ALIASES: dict[str, Event] = {"A04": "A28", "A08": "A31"}
_PROCESSING_IDS = frozenset({"P", "T"})
_VERSIONS = frozenset({"2.5.1", "2.5"})
SUPPORTED_TEXT = (
    "Supported: ADT^A28, ADT^A31, ADT^A40 (A04/A08 accepted as aliases of A28/A31 if configured)"
)

_TS = re.compile(
    r"(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,4}))?)?)?)?)?)?"
    r"([+-]\d{4})?"
)
# Characters FHIR strings may not hold (R4 datatypes: below U+0020 except tab, CR, LF); the
# CRs left after normalising are segment separators, never inside a field.
_CONTROL = re.compile("[\x00-\x08\x0a-\x0c\x0e-\x1f]")
_NAME_USE = {"L": "official", "D": "usual", "M": "maiden", "N": "nickname", "A": "anonymous"}
_TELECOM_USE = {"PRN": "home", "WPN": "work", "ORN": "home", "VHN": "temp", "EMR": "home"}


def parse(message: bytes, *, accept_aliases: bool = True) -> ParsedMessage:
    """Parse one message (MLLP framing already removed; a stray frame is tolerated).

    ``accept_aliases`` is the profile's "A04 and A08 may be configured as aliases"."""
    text = _decode(message)
    text = normalise(text)
    if not text.startswith("MSH"):
        raise InvalidMessage("AR", (_err("MSH^1", 100, diagnostic="no MSH segment"),), None)
    segments = split_message(text)
    header = _header(segments[0])
    event = _check_header(header, accept_aliases)
    body = _Body(segments, header)
    if _CONTROL.search(text):
        body.control_characters()
    return body.parse(event)


def _decode(message: bytes) -> str:
    data = message
    if data[:1] == b"\x0b":
        data = data[1:]
    if data.endswith(b"\x1c\r"):
        data = data[:-2]
    elif data.endswith(b"\x1c"):
        data = data[:-1]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # Read what MSH we can (it is ASCII in practice) so the AR names the message.
        text = normalise(data.decode("latin-1"))
        header = _header(split_message(text)[0]) if text.startswith("MSH") else None
        detail = _err("MSH^1^18", 102, diagnostic="message is not valid UTF-8")
        raise InvalidMessage("AR", (detail,), header) from None


def _header(msh: Segment) -> Header:
    if msh.name != "MSH":
        return Header()
    return Header(
        sending_application=msh.value(3),
        sending_facility=msh.value(4),
        receiving_application=msh.value(5),
        receiving_facility=msh.value(6),
        message_time=msh.value(7),
        message_code=msh.value(9, 1),
        trigger_event=msh.value(9, 2),
        structure=msh.value(9, 3),
        control_id=msh.value(10),
        processing_id=msh.value(11),
        version=msh.value(12),
    )


def _check_header(header: Header, accept_aliases: bool) -> Event:
    errors: list[ErrorDetail] = []
    event = _EVENTS.get(header.trigger_event)
    if event is None and accept_aliases:
        event = _ALIASES.get(header.trigger_event)
    if header.message_code != "ADT":
        errors.append(_err("MSH^1^9^1^1", 200, diagnostic="Supported: ADT"))
    elif event is None:
        errors.append(_err("MSH^1^9^1^2", 201, diagnostic=SUPPORTED_TEXT))
    if not header.control_id:
        errors.append(_err("MSH^1^10", 101, diagnostic="MSH-10 message control id missing"))
    if header.processing_id not in _PROCESSING_IDS:
        errors.append(_err("MSH^1^11", 202, diagnostic="Supported: P, T"))
    if header.version not in _VERSIONS:
        errors.append(_err("MSH^1^12", 203, diagnostic="Supported: 2.5.1"))
    if errors or event is None:
        raise InvalidMessage("AR", tuple(errors), header)
    return event


def _err(
    location: str,
    code: int,
    *,
    application: tuple[str, str] = ("", ""),
    diagnostic: str = "",
    user_message: str = "",
) -> ErrorDetail:
    return ErrorDetail(
        location, code, "E", application[0], application[1], diagnostic, user_message
    )


class _Body:
    """The segments after MSH, read into a ``PersonRecord`` while collecting AE errors (all
    of them, in segment order, so the sender can fix the message in one go)."""

    def __init__(self, segments: list[Segment], header: Header) -> None:
        self.segments = segments
        self.header = header
        self.errors: list[ErrorDetail] = []

    def parse(self, event: Event) -> ParsedMessage:
        evn = self.first("EVN")
        pid = self.first("PID")
        event_time, event_text = self.event_time(evn)
        if pid is None:
            self.errors.append(_err("PID^1", 100, diagnostic="PID segment missing"))
            self.fail("AE")
        individual_id = self.individual_id(pid)
        person = PersonRecord(
            individual_id=individual_id,
            as_of=event_time,
            medicaid_id=self.medicaid_id(pid),
            name=_name(pid, 5),
            birth_date=self.birth_date(pid, 7, "PID^1^7^1^1", "PID-7"),
            gender=self.gender(pid, 8, "PID^1^8"),
            race=_codes(pid, 10),
            ethnicity=_codes(pid, 22),
            address=_address(pid, 11),
            telecom=_telecom(pid),
            language=pid.value(15),
            marital_status=pid.value(16),
            household=tuple(self.household()),
            programs=tuple(self.programs()),
        )
        merge = self.merge(individual_id, event_time) if event == "A40" else None
        if self.errors:
            self.fail("AE")
        return ParsedMessage(
            self.header, event, event_time, event_text, person, merge, len(self.segments)
        )

    def control_characters(self) -> None:
        """One AE 102 per field holding a control character (it could not be stored)."""
        seqs: dict[str, int] = {}
        for segment in self.segments:
            seq = seqs[segment.name] = seqs.get(segment.name, 0) + 1
            for number, raw in enumerate(segment.fields[1:], start=1):
                if _CONTROL.search(raw):
                    name = segment.name if segment.name.isalnum() else "SEG"
                    self.errors.append(
                        _err(
                            f"{name[:3]}^{seq}^{number}",
                            102,
                            diagnostic=f"{name[:3]}-{number}: control character",
                        )
                    )

    def fail(self, code: AckCode) -> NoReturn:
        raise InvalidMessage(code, tuple(self.errors), self.header)

    def first(self, name: str) -> Segment | None:
        return next((s for s in self.segments if s.name == name), None)

    def each(self, name: str) -> Iterator[tuple[int, Segment]]:
        seq = 0
        for segment in self.segments:
            if segment.name == name:
                seq += 1
                yield seq, segment

    def event_time(self, evn: Segment | None) -> tuple[dt.datetime, str]:
        """EVN-6 (when the change happened in IEES), else EVN-2: the ordering key."""
        number = 6 if evn is not None and evn.value(6) else 2
        text = evn.value(number) if evn is not None else ""
        location = f"EVN^1^{number}"
        if not text:
            self.errors.append(_err(location, 101, diagnostic="EVN-6 or EVN-2 required"))
            return dt.datetime(1, 1, 1, tzinfo=dt.UTC), ""
        try:
            return parse_timestamp(text), text
        except ValueError as exc:
            self.errors.append(_bad_date(location, f"EVN-{number}", exc))
            return dt.datetime(1, 1, 1, tzinfo=dt.UTC), text

    def individual_id(self, pid: Segment) -> str:
        found = self.identifier(pid, 3, "PID", 1, IEES_AUTHORITY, "PI")
        if found is None:
            held = "~".join(
                "^".join(["", *rep[1:5]]) for rep in pid.field(3)
            )  # types and authorities only: the values are PII
            self.errors.append(
                _err(
                    "PID^1^3^1",
                    101,
                    application=(
                        "IEES-ID-MISSING",
                        "No identifier with type PI assigned by KYIEES",
                    ),
                    diagnostic=f"PID-3 held only {held}" if held else "PID-3 empty",
                    user_message="Message rejected: IndividualID missing; correct and resend.",
                )
            )
            return ""
        return found

    def identifier(
        self, segment: Segment, number: int, name: str, seq: int, authority: str, kind: str
    ) -> str | None:
        """The CX repetition with this assigning authority and type; 102 if unusable as id."""
        for rep_no, rep in enumerate(segment.field(number), start=1):
            if len(rep) >= 5 and rep[3].split("&")[0] == authority and rep[4] == kind:
                value = segment.value(number, 1, rep_no)
                if IDENTIFIER.fullmatch(value) is None:
                    self.errors.append(
                        _err(
                            f"{name}^{seq}^{number}^{rep_no}^1",
                            102,
                            application=("BAD-ID", "Identifier not usable"),
                            diagnostic=f"{name}-{number}: expected 1-40 of [A-Za-z0-9.-]",
                        )
                    )
                    return ""
                return value
        return None

    def medicaid_id(self, pid: Segment) -> str:
        return self.identifier(pid, 3, "PID", 1, MEDICAID_AUTHORITY, "MA") or ""

    def birth_date(self, segment: Segment, number: int, location: str, label: str) -> str | None:
        text = segment.value(number)
        if not text:
            return None
        try:
            return _fhir_date(text)
        except ValueError as exc:
            self.errors.append(_bad_date(location, label, exc))
            return None

    def date(self, segment: Segment, number: int, location: str, label: str) -> dt.date | None:
        text = segment.value(number)
        if not text:
            return None
        try:
            return parse_date(text)
        except ValueError as exc:
            self.errors.append(_bad_date(location, label, exc))
            return None

    def gender(self, segment: Segment, number: int, location: str) -> str | None:
        code = segment.value(number)
        if not code:
            return None
        gender = SEXES.get(code)
        if gender is None:
            self.errors.append(
                _err(
                    location,
                    103,
                    application=("UNKNOWN-CODE", "Code not in HL70001"),
                    diagnostic=f"{location.split('^')[0]}-{number}: not in HL70001",
                )
            )
        return gender

    def relationship(self, segment: Segment, number: int, seq: int) -> str:
        code = segment.value(number)
        if code and code not in RELATIONSHIPS:
            location = f"{segment.name}^{seq}^{number}^1^1"
            self.errors.append(
                _err(
                    location,
                    103,
                    application=("UNKNOWN-CODE", "Code not in HL70063"),
                    diagnostic=f"{segment.name}-{number}.1 {code}",
                )
            )
        return code

    def household(self) -> Iterator[HouseholdMember]:
        for seq, nk1 in self.each("NK1"):
            member_id = self.identifier(nk1, 33, "NK1", seq, IEES_AUTHORITY, "PI")
            if member_id is None:
                self.errors.append(
                    _err(
                        f"NK1^{seq}^33^1",
                        101,
                        application=(
                            "IEES-ID-MISSING",
                            "No identifier with type PI assigned by KYIEES",
                        ),
                        diagnostic="NK1-33 has no IndividualID",
                    )
                )
                continue
            relationship = self.relationship(nk1, 3, seq)
            yield HouseholdMember(
                individual_id=member_id,
                relationship=relationship,
                name=_name(nk1, 2),
                gender=self.gender(nk1, 15, f"NK1^{seq}^15"),
                birth_date=self.birth_date(nk1, 16, f"NK1^{seq}^16^1^1", "NK1-16"),
                address=_address(nk1, 4),
                start=self.date(nk1, 8, f"NK1^{seq}^8^1^1", "NK1-8"),
                end=self.date(nk1, 9, f"NK1^{seq}^9^1^1", "NK1-9"),
            )

    def programs(self) -> Iterator[ProgramEnrollment]:
        self.check_in2()
        for seq, in1 in self.each("IN1"):
            code = in1.value(2)
            info = PROGRAMS.get(code)
            if info is None:
                self.errors.append(
                    _err(
                        f"IN1^{seq}^2^1^1",
                        103 if code else 101,
                        application=("UNKNOWN-PROGRAM", "Program code not in KYPROG table"),
                        diagnostic=f"IN1-2.1 {code}",
                    )
                )
            case = in1.value(8)
            if not case:
                self.errors.append(_err(f"IN1^{seq}^8", 101, diagnostic="IN1-8 case number"))
            elif IDENTIFIER.fullmatch(case) is None:
                self.errors.append(
                    _err(f"IN1^{seq}^8", 102, diagnostic="IN1-8: expected 1-40 of [A-Za-z0-9.-]")
                )
            category = in1.value(15)
            if info is not None and category and category != info.category:
                self.errors.append(
                    _err(
                        f"IN1^{seq}^15",
                        103,
                        diagnostic=f"IN1-15 is not {info.category} for IN1-2.1 {info.code}",
                    )
                )
            start = self.date(in1, 12, f"IN1^{seq}^12^1^1", "IN1-12")
            end = self.date(in1, 13, f"IN1^{seq}^13^1^1", "IN1-13")
            if start is not None and end is not None and end < start:
                self.errors.append(
                    _err(
                        f"IN1^{seq}^13^1^1",
                        102,
                        application=("BAD-DATE", "Invalid date"),
                        diagnostic="IN1-13: before IN1-12",
                    )
                )
            head_relationship = self.relationship(in1, 17, seq)
            known = RELATIONSHIPS.get(head_relationship)
            head = in1.value(49)
            if head and IDENTIFIER.fullmatch(head) is None:
                self.errors.append(
                    _err(f"IN1^{seq}^49^1^1", 102, diagnostic="IN1-49: expected an IndividualID")
                )
                head = ""
            if info is None:
                continue
            yield ProgramEnrollment(
                program=info.code,
                case_number=case,
                start=start,
                end=end,
                agency=in1.value(3) if in1.value(3) in AGENCIES else info.agency,
                aid_category=in1.value(35),
                member_id=in1.value(36),
                head_individual_id=head,
                subscriber_relationship=known[1] if known else "",
            )

    def check_in2(self) -> None:
        """IN2-8 (the Medicaid case number) must agree with its IN1's case number (IN1-8)."""
        case = None
        seq = 0
        for segment in self.segments:
            if segment.name == "IN1":
                case = segment.value(8)
            elif segment.name == "IN2":
                seq += 1
                stated = segment.value(8)
                if case is not None and stated and stated != case:
                    self.errors.append(
                        _err(f"IN2^{seq}^8", 102, diagnostic="IN2-8 differs from IN1-8")
                    )

    def merge(self, surviving_id: str, at: dt.datetime) -> MergeRecord | None:
        mrg = self.first("MRG")
        if mrg is None:
            self.errors.append(_err("MRG^1^1", 101, diagnostic="A40 without MRG"))
            return None
        retired = self.identifier(mrg, 1, "MRG", 1, IEES_AUTHORITY, "PI")
        if retired is None:
            self.errors.append(
                _err(
                    "MRG^1^1^1",
                    101,
                    application=(
                        "IEES-ID-MISSING",
                        "No identifier with type PI assigned by KYIEES",
                    ),
                    diagnostic="MRG-1 has no IndividualID",
                )
            )
            return None
        if retired and retired == surviving_id:
            self.errors.append(
                _err(
                    "MRG^1^1^1",
                    204,
                    application=("SELF-MERGE", "MRG-1 equals PID-3"),
                    diagnostic="A40 merges an IndividualID into itself",
                )
            )
            return None
        return MergeRecord(surviving_id, retired, at)


def _bad_date(location: str, label: str, exc: ValueError) -> ErrorDetail:
    # The offending value is a person's date: the text says what is wrong, not what was sent.
    return _err(
        location, 102, application=("BAD-DATE", "Invalid date"), diagnostic=f"{label}: {exc}"
    )


def parse_timestamp(text: str) -> dt.datetime:
    """An HL7 TS/DTM (``YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]``) as an aware datetime; a
    value without an offset is taken as UTC. Raises ValueError saying what is wrong."""
    if len(text) == 8 and text.isdigit():  # the common DT case, without the regex
        return _whole_day(text)
    match = _TS.fullmatch(text)
    if match is None:
        raise ValueError("not a timestamp (expected YYYYMMDDHHMMSS+ZZZZ)")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    _check_range("month", month, 1, 12)
    _check_range("day", day, 1, 31)
    _check_range("hour", hour, 0, 23)
    _check_range("minute", minute, 0, 59)
    _check_range("second", second, 0, 59)
    tz = dt.UTC
    if offset:
        hours, minutes = int(offset[1:3]), int(offset[3:5])
        if hours > 14 or minutes > 59:
            raise ValueError("offset out of range")
        sign = -1 if offset[0] == "-" else 1
        tz = dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))
    micro = int((fraction or "0").ljust(6, "0")) if fraction else 0
    try:
        return dt.datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            micro,
            tzinfo=tz,
        )
    except ValueError:
        raise ValueError(f"day {int(day or 1)} out of range for the month") from None


def _whole_day(text: str) -> dt.datetime:
    _check_range("month", text[4:6], 1, 12)
    _check_range("day", text[6:8], 1, 31)
    try:
        return dt.datetime(int(text[:4]), int(text[4:6]), int(text[6:8]), tzinfo=dt.UTC)
    except ValueError:
        raise ValueError(f"day {int(text[6:8])} out of range for the month") from None


def parse_date(text: str) -> dt.date:
    """An HL7 DT ``YYYYMMDD`` (a TS is cut to its date). Raises ValueError saying why."""
    if len(text) < 8 or not text[:8].isdigit():
        raise ValueError("not a date (expected YYYYMMDD)")
    return parse_timestamp(text).date()


def _fhir_date(text: str) -> str:
    """A birth date as FHIR date text, keeping the precision sent (YYYY, YYYYMM, YYYYMMDD)."""
    stamp = parse_timestamp(text)
    digits = len(text) if len(text) < 8 else 8
    if digits == 4:
        return f"{stamp.year:04d}"
    if digits == 6:
        return f"{stamp.year:04d}-{stamp.month:02d}"
    if digits != 8:
        raise ValueError("not a date (expected YYYYMMDD)")
    return stamp.date().isoformat()


def _check_range(name: str, value: str | None, low: int, high: int) -> None:
    if value is not None and not low <= int(value) <= high:
        raise ValueError(f"{name} {int(value)} out of range")


def _name(segment: Segment, number: int) -> PersonName | None:
    family = segment.value(number, 1).split("&")[0]
    given = tuple(part for c in (2, 3) for part in segment.value(number, c).split(" ") if part)
    if not family and not given:
        return None
    return PersonName(family, given, _NAME_USE.get(segment.value(number, 7), "official"))


def _codes(segment: Segment, number: int) -> tuple[tuple[str, str], ...]:
    """(code, display) of each repetition; whitespace around and inside a code is folded,
    since a FHIR code is tokens joined by single spaces."""
    out = []
    for rep in range(1, len(segment.field(number)) + 1):
        code = " ".join(segment.value(number, 1, rep).split())
        if code:
            out.append((code, segment.value(number, 2, rep)))
    return tuple(out)


def _address(segment: Segment, number: int) -> Address | None:
    v = segment.value
    lines = tuple(line for line in (v(number, 1), v(number, 2)) if line)
    if not lines and not v(number, 3) and not v(number, 5):
        return None
    country = v(number, 6)
    return Address(
        lines=lines,
        city=v(number, 3),
        state=v(number, 4),
        postal_code=v(number, 5),
        country="US" if country in ("USA", "US") else country,
        county_fips=v(number, 9),
        use={"H": "home", "M": "home", "B": "work", "C": "temp"}.get(v(number, 7), "home"),
    )


def _telecom(pid: Segment) -> tuple[Telecom, ...]:
    result: list[Telecom] = []
    for rep in range(1, len(pid.field(13)) + 1):
        use = _TELECOM_USE.get(pid.value(13, 2, rep))
        equipment = pid.value(13, 3, rep)
        if equipment == "Internet" or pid.value(13, 4, rep):
            email = pid.value(13, 4, rep)
            if email:
                result.append(Telecom("email", email, use))
            continue
        digits = "".join(ch for ch in pid.value(13, 6, rep) + pid.value(13, 7, rep) if ch.isdigit())
        digits = digits or "".join(ch for ch in pid.value(13, 1, rep) if ch.isdigit())
        if digits:
            result.append(
                Telecom("fax" if equipment == "FX" else "phone", format_phone(digits), use)
            )
    return tuple(result)
