"""What goes wrong in the IEES feed, as data an ACK can carry.

Hierarchy::

    ValueError
    ├── InvalidMessage    an HL7 v2 message the profile refuses (carries the ACK code and ERRs)
    └── InvalidSnapshot   an NDJSON/CSV snapshot file refused as a whole

``ErrorDetail`` is one ERR segment (HL7 v2.5.1 §2.15.5, table 0357 for the codes). Its texts
name field positions, codes and timestamps, never a person's values (DESIGN.md decision 10).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from mappers.iees.records import Header

__all__ = ["AckCode", "ErrorDetail", "InvalidMessage", "InvalidSnapshot", "Severity"]

AckCode = Literal["AA", "AE", "AR"]
Severity = Literal["E", "W", "I"]

# HL7 table 0357 (message error condition codes) texts, as the profile's ACKs spell them.
ERROR_TEXTS: dict[int, str] = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    204: "Unknown key identifier",
    207: "Application internal error",
}


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    """One ERR segment: where (ERR-2), what (ERR-3, ERR-5), how bad (ERR-4), and texts.

    ``location`` is ``SEG^seq^field^rep^comp`` as the profile writes it (``PID^1^3^1``);
    ``diagnostic`` goes to ERR-7 and ``user_message`` to ERR-8. Texts are plain: the ACK
    builder escapes them."""

    location: str
    code: int
    severity: Severity = "E"
    application_code: str = ""
    application_text: str = ""
    diagnostic: str = ""
    user_message: str = ""


class InvalidMessage(ValueError):
    """The profile refuses the message: answer with ``ack_code`` (AE or AR) and ``errors``.

    ``header`` is what could be read of MSH (None when there was no MSH at all), so that the
    ACK can still name the message it answers."""

    def __init__(
        self, ack_code: AckCode, errors: tuple[ErrorDetail, ...], header: Header | None
    ) -> None:
        super().__init__(f"{ack_code}: " + ", ".join(f"{e.code} at {e.location}" for e in errors))
        self.ack_code = ack_code
        self.errors = errors
        self.header = header


class InvalidSnapshot(ValueError):
    """A snapshot file refused as a whole (a truncated full file would end everyone's
    enrollment). The message names the line or row and the field, never its value."""
