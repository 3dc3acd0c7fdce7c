"""The IEES feed end to end over MLLP: ``sdoh-fhir mllp`` as a process, real sockets, the ten
sample messages, malformed input that never costs the next message its ACK, and the listener
in-process under hypothesis-made garbage."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_server.ingest.iees_pipeline import IeesPipeline
from fhir_server.ingest.mllp import MllpClient, MllpServer
from fhir_server.storage.database import libpq_url

ROOT = Path(__file__).resolve().parents[3]
HL7 = ROOT.parent / "shared" / "feeds" / "iees" / "samples" / "hl7v2"

pytestmark = pytest.mark.skipif(
    not HL7.is_dir(), reason="../shared/feeds/iees is not beside the checkout"
)


def sample(number: str) -> bytes:
    (path,) = HL7.glob(f"{number}_*.hl7")
    return path.read_bytes()


def code(ack: bytes) -> str:
    msa = next(s for s in ack.split(b"\r") if s.startswith(b"MSA|"))
    return msa.split(b"|")[1].decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def listener(clean_database: str) -> Iterator[int]:
    """``sdoh-fhir mllp`` on the test database, as an operator starts it."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "fhir_server", "mllp", "--port", str(port)],
        env={**os.environ, "SDOH_FHIR_DATABASE_URL": clean_database},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None:
                    log = process.stderr.read().decode() if process.stderr else ""
                    raise AssertionError(log) from None
                time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
        # No PII in the listener's log: names and identifiers of the samples never appear.
        assert b"EXAMPLEMAN" not in stderr and b"900000101" not in stderr


async def test_the_samples_over_one_connection(listener: int, clean_database: str) -> None:
    async with await MllpClient.connect("127.0.0.1", listener) as client:
        codes = [code(await client.send(sample(f"{n:02d}"))) for n in range(1, 11)]
    assert codes == ["AA", "AA", "AA", "AA", "AA", "AA", "AE", "AR", "AE", "AA"]
    with psycopg.connect(libpq_url(clean_database)) as conn:
        patients = conn.execute(
            "SELECT count(*) FROM resource WHERE resource_type = 'Patient'"
        ).fetchone()
    assert patients == (4,)


async def test_malformed_input_never_costs_the_next_message_its_ack(
    listener: int, clean_database: str
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", listener)

    async def reply() -> bytes:
        data = await asyncio.wait_for(reader.readuntil(b"\x1c\r"), 30)
        return data.strip(b"\x0b\x1c\r")

    # Bytes outside any frame, then a frame: the frame is answered.
    writer.write(b"garbage before the frame\x0b" + sample("01") + b"\x1c\r")
    assert code(await reply()) == "AA"
    # Latin-1, not UTF-8: AR, and the next message is still answered.
    writer.write(b"\x0b" + sample("02").replace(b"EXAMPLEMAN", b"EXAMPL\xc9MAN") + b"\x1c\r")
    assert code(await reply()) == "AR"
    # No MSH at all; a truncated segment; LF line endings with a missing PID.
    writer.write(b"\x0bEVN|A31|20250701\x1c\r")
    assert code(await reply()) == "AR"
    truncated = sample("03").split(b"\nPID|")[0] + b"\nPID|1||"
    writer.write(b"\x0b" + truncated + b"\x1c\r")
    assert code(await reply()) in ("AE", "AR")
    writer.write(b"\x0b" + sample("10") + b"\x1c\r")
    assert code(await reply()) == "AA"
    # A frame begun and abandoned by a new one: the abandoned bytes are kept, the next answered.
    writer.write(b"\x0bMSH|^~\\&|half a messa" + b"\x0b" + sample("02") + b"\x1c\r")
    assert code(await reply()) == "AA"
    writer.close()
    await writer.wait_closed()
    await asyncio.sleep(0.5)
    with psycopg.connect(libpq_url(clean_database)) as conn:
        kinds: dict[str, int] = dict(
            conn.execute("SELECT kind, count(*) FROM feed_dead_letter GROUP BY kind").fetchall()
        )
    assert kinds["mllp-garbage"] >= 2  # before the first frame, and the abandoned one
    assert kinds["hl7v2"] == 3  # latin-1, no MSH, truncated


async def test_several_connections_at_once(listener: int) -> None:
    async def send(number: str) -> str:
        async with await MllpClient.connect("127.0.0.1", listener) as client:
            return code(await client.send(sample(number)))

    codes = await asyncio.gather(*(send(n) for n in ("01", "07", "08", "09")))
    assert codes == ["AA", "AE", "AR", "AE"]


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(junk=st.binary(max_size=300))
def test_arbitrary_bytes_never_stop_the_listener(clean_database: str, junk: bytes) -> None:
    async def run() -> None:
        pipeline = IeesPipeline(libpq_url(clean_database))
        await pipeline.start()
        server = MllpServer(pipeline, idle_timeout=5)
        await server.start("127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"\x0b" + junk.replace(b"\x0b", b"").replace(b"\x1c", b"") + b"\x1c\r")
            answer = await asyncio.wait_for(reader.readuntil(b"\x1c\r"), 20)
            assert code(answer.strip(b"\x0b\x1c\r")) in ("AA", "AE", "AR")
            writer.write(junk)  # whatever it is, outside or inside a frame
            writer.close()
            # The next sender is served.
            async with await MllpClient.connect("127.0.0.1", server.port) as client:
                assert code(await client.send(sample("08"))) == "AR"
        finally:
            await server.close(grace=5)
            await pipeline.close()

    asyncio.run(run())
