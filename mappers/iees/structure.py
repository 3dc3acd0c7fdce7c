"""The slow, thorough check: hl7apy's strict parse and ``validate()`` against the v2.5.1
message structures (segment order, cardinality, datatypes).

Not on the hot path: it costs about 25 ms a message against 0.25 ms for ``parse`` + map + ACK
(bench/bench_iees_parse.py), so the server runs it in a process pool on a sample of messages
and on every message ``parse`` refused, as research/feeds.md §5.3 recommends. ``parse``
already refuses what the profile needs refused; this adds what only the full structure shows
(a missing PV1, segments out of order).

hl7apy's messages quote the offending values (``20201341 is not an HL7 valid date value``):
they are translated to a code and a generic text here, never passed on.
"""

from __future__ import annotations

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message

from mappers.iees._er7 import normalise
from mappers.iees.errors import ErrorDetail

__all__ = ["check_structure"]


def check_structure(message: bytes) -> tuple[ErrorDetail, ...]:
    """No errors if hl7apy parses ``message`` strictly and its structure validates; else one
    ERR: 102 for a datatype hl7apy refused, 100 for a structure error."""
    try:
        text = normalise(message.decode("utf-8"))
    except UnicodeDecodeError:
        return (ErrorDetail("MSH^1^18", 102, diagnostic="message is not valid UTF-8"),)
    try:
        parsed = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
        parsed.validate()
    except ValueError:
        # hl7apy raises a plain ValueError for a datatype it cannot read (a date, a number).
        return (ErrorDetail("MSH^1", 102, diagnostic="a field is not of its v2.5.1 datatype"),)
    except HL7apyException as exc:
        return (ErrorDetail("MSH^1", 100, diagnostic=f"structure: {type(exc).__name__}"),)
    except Exception as exc:  # hl7apy's own bugs on hostile input (IndexError, KeyError ...)
        return (ErrorDetail("MSH^1", 100, diagnostic=f"structure: {type(exc).__name__}"),)
    return ()
