"""Measure IEES HL7 v2 throughput: parse + map + ACK per message, over the 10 samples.

Feed profile: ../shared/feeds/iees/README.md. Run from the repository root:
``PYTHONPATH=. python bench/bench_iees_parse.py [seconds]`` (on a shared machine wrap it in
``flock /tmp/bench.lock``). Prints messages per second for our path (own ER7 splitter), and,
for the choice of parser, python-hl7's ``hl7.parse`` and hl7apy's ``parse_message`` alone.
The target is >= 1,000 messages/s end to end over MLLP on 2 cores, so this part should cost
well under 0.5 ms a message.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hl7
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from mappers.iees import InvalidMessage, ack, map_message, parse

SAMPLES = Path(__file__).resolve().parents[1] / ".." / "shared" / "feeds" / "iees" / "samples"


def rate(work: Callable[[], Any], count: int, seconds: float) -> float:
    """Messages per second of ``work`` (which handles ``count`` messages), over ``seconds``."""
    work()  # warm caches (hl7apy loads its structures on first use)
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        work()
        done += count
    return done / elapsed


def receive(message: bytes) -> bytes:
    try:
        parsed = parse(message)
    except InvalidMessage as exc:
        return ack(exc)
    map_message(parsed)
    return ack(parsed, "AA")


def main(seconds: float) -> None:
    messages = [p.read_bytes() for p in sorted((SAMPLES / "hl7v2").glob("*.hl7"))]
    if not messages:
        sys.exit(f"no samples under {SAMPLES}")
    normalised = [m.decode().replace("\n", "\r").rstrip("\r") for m in messages]
    ours = rate(lambda: [receive(m) for m in messages], len(messages), seconds)
    print(f"parse+map+ack (ours, {len(messages)} samples): {ours:,.0f} messages/s "
          f"({1000 / ours:.3f} ms/message)")  # fmt: skip
    python_hl7 = rate(lambda: [hl7.parse(t) for t in normalised], len(messages), seconds)
    print(f"python-hl7 hl7.parse alone:                {python_hl7:,.0f} messages/s")
    tolerant = VALIDATION_LEVEL.TOLERANT
    hl7apy = rate(
        lambda: [parse_message(t, validation_level=tolerant) for t in normalised],
        len(messages),
        min(seconds, 2.0),
    )
    print(f"hl7apy parse_message alone (tolerant):     {hl7apy:,.0f} messages/s")


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 3.0)
