"""ACK messages in original acknowledgment mode (HL7 v2.5.1 §2.9.2, §2.14.1 MSA, §2.15.5 ERR).

The shape is the profile's (``feeds/iees/samples/hl7v2/acks``): MSH with sender and receiver
swapped, MSH-9 ``ACK^<trigger as sent>^ACK``, MSH-10 ``ACK-<original MSH-10>``; MSA; one ERR
per problem. Every echoed text is escaped (\\F\\ \\S\\ \\T\\ \\R\\ \\E\\), so nothing a sender
put in a field can break the ACK's structure. Built by hand: hl7apy needs about 2 ms to write
an ACK (research/feeds.md §5), a hundred times the budget of the whole message.
"""

from __future__ import annotations

import datetime as dt
import uuid

from mappers.iees._er7 import escape
from mappers.iees.errors import ERROR_TEXTS, AckCode, ErrorDetail, InvalidMessage
from mappers.iees.records import Header, ParsedMessage

__all__ = ["ack", "duplicate_notice", "merge_noop_warning", "stale_warning"]

DEFAULT_APPLICATION = "SDOH_FHIR"
DEFAULT_FACILITY = "KYNECT_RESOURCES"


def ack(
    parsed_or_error: ParsedMessage | InvalidMessage | Header | None,
    code: AckCode | None = None,
    errors: tuple[ErrorDetail, ...] | list[ErrorDetail] = (),
    *,
    now: dt.datetime | None = None,
) -> bytes:
    """The ACK for a message, as CR-separated UTF-8 ER7 (no MLLP framing).

    ``parsed_or_error`` is what ``parse`` returned or raised (or a bare Header, or None when
    not even MSH was readable). ``code`` defaults to the error's own code, else AA; the
    error's ERRs come first, then ``errors`` (the server's W/I notices). ``now`` is MSH-7
    (default: the current time, with its UTC offset)."""
    header: Header | None
    all_errors: list[ErrorDetail] = []
    if isinstance(parsed_or_error, InvalidMessage):
        header = parsed_or_error.header
        all_errors.extend(parsed_or_error.errors)
        code = code or parsed_or_error.ack_code
    elif isinstance(parsed_or_error, ParsedMessage):
        header = parsed_or_error.header
    else:
        header = parsed_or_error
    all_errors.extend(errors)
    header = header or Header()
    stamp = (now or dt.datetime.now().astimezone()).strftime("%Y%m%d%H%M%S%z")
    trigger = escape(header.trigger_event)
    control_id = header.control_id or uuid.uuid4().hex[:16]
    msh = "|".join(
        [
            "MSH",
            "^~\\&",
            escape(header.receiving_application or DEFAULT_APPLICATION),
            escape(header.receiving_facility or DEFAULT_FACILITY),
            escape(header.sending_application),
            escape(header.sending_facility),
            stamp,
            "",
            f"ACK^{trigger}^ACK" if trigger else "ACK",
            escape(f"ACK-{control_id}")[:199],
            escape(header.processing_id or "P")[:3],
            "2.5.1",
            "",
            "",
            "",
            "",
            "USA",
            "UNICODE UTF-8",
        ]
    )
    msa = f"MSA|{code or 'AA'}|{escape(header.control_id)}"
    segments = [msh, msa, *(_err_segment(e) for e in all_errors)]
    return ("\r".join(segments) + "\r").encode("utf-8")


def _err_segment(error: ErrorDetail) -> str:
    fields = [
        "ERR",
        "",
        error.location,  # built from our own segment names and numbers, never sender text
        f"{error.code}^{escape(ERROR_TEXTS.get(error.code, ''))}^HL70357",
        error.severity,
        (
            f"{escape(error.application_code)}^{escape(error.application_text)}^L"
            if error.application_code
            else ""
        ),
        "",
        escape(error.diagnostic),
        escape(error.user_message),
    ]
    while fields[-1] == "":
        fields.pop()
    return "|".join(fields)


def duplicate_notice() -> ErrorDetail:
    """The informational ERR for a resent MSH-10 (processing rule 2, ACK_04)."""
    return ErrorDetail(
        "MSH^1^10",
        0,
        "I",
        "DUPLICATE",
        "Duplicate MSH-10 already processed; original result returned",
    )


def stale_warning(parsed: ParsedMessage, stored_event_time: str) -> ErrorDetail:
    """The warning for a message older than the last one applied (rule 3, ACK_05): AA, not
    AE, or the sender keeps retrying. ``stored_event_time`` is the stored EVN-6 as sent."""
    return ErrorDetail(
        "EVN^1^6",
        0,
        "W",
        "STALE",
        "Event older than last applied update; not applied",
        f"EVN-6 {parsed.event_time_text} < stored {stored_event_time}",
    )


def merge_noop_warning() -> ErrorDetail:
    """The warning for an A40 whose retired IndividualID is unknown (rule 6c)."""
    return ErrorDetail(
        "MRG^1^1^1", 0, "W", "MERGE-NOOP", "Retired IndividualID unknown; merge was a no-op"
    )
