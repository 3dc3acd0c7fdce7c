"""The MLLP transport over real sockets, and its deframer on its own.

- persistent connections answered in order, pipelined frames, concurrent connections;
- frames split across reads at any byte, several frames per read;
- garbage outside frames, unterminated and oversized frames reach the handler, and only an
  oversized frame closes the connection without an ACK;
- idle timeout, connection limit, graceful close, a handler that raises, TLS and mutual TLS;
- no payload byte in the logs; arbitrary byte streams never break the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_server.ingest.mllp import (
    OUTSIDE_FRAME,
    OVERSIZED,
    UNTERMINATED,
    Frame,
    Garbage,
    MllpClient,
    MllpDecoder,
    MllpError,
    MllpServer,
    client_tls_context,
    frame,
    tls_context,
)

HOST = "127.0.0.1"
# Looks like PII on purpose: it must never show up in a log line.
SECRET = b"DOE^JANE^Q||19800101|F|900000101"
MSG = (
    b"MSH|^~\\&|IEES|KY_CHFS|SDOH_FHIR|KYNECT_RESOURCES|20250101||ADT^A31^ADT_A05|1\rPID|1||"
    + SECRET
)


class Recorder:
    """An MllpHandler that answers ``ACK:<payload>`` and records what it was given."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.kept: list[tuple[bytes, str]] = []
        self.gates: dict[bytes, asyncio.Event] = {}
        self.started: dict[bytes, asyncio.Event] = {}

    def gate(self, payload: bytes) -> asyncio.Event:
        """Make ``payload`` wait for the returned event before it is answered."""
        self.started[payload] = asyncio.Event()
        self.gates[payload] = asyncio.Event()
        return self.gates[payload]

    async def message(self, payload: bytes) -> bytes:
        self.messages.append(payload)
        if payload in self.gates:
            self.started[payload].set()
            await self.gates[payload].wait()
        if payload.startswith(b"boom"):
            raise RuntimeError(payload.decode())
        return b"ACK:" + payload

    async def garbage(self, data: bytes, reason: str) -> None:
        self.kept.append((data, reason))


Serve = Callable[..., Awaitable[MllpServer]]


@pytest.fixture
async def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def serve(recorder: Recorder) -> AsyncIterator[Serve]:
    """Start servers on free ports with the recorder as handler; close them after the test."""
    servers: list[MllpServer] = []

    async def start(**options: Any) -> MllpServer:
        server = MllpServer(recorder, **options)
        await server.start(HOST, 0)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close(grace=5.0)


async def read_frames(reader: asyncio.StreamReader, count: int) -> list[bytes]:
    """Read until ``count`` framed replies have arrived."""
    decoder = MllpDecoder()
    replies: list[bytes] = []
    async with asyncio.timeout(5):
        while len(replies) < count:
            data = await reader.read(65536)
            assert data, f"connection closed after {len(replies)} of {count} replies"
            for event in decoder.feed(data):
                assert isinstance(event, Frame), event
                replies.append(event.payload)
    return replies


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    """What the server still sends before it closes the connection."""
    async with asyncio.timeout(5):
        return await reader.read()


Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Raw = Callable[[MllpServer], Awaitable[Streams]]


async def close_raw(writer: asyncio.StreamWriter) -> None:
    writer.close()
    # Under pytest-asyncio on Python 3.11 an immediate wait_closed() sometimes never returns;
    # one loop turn first avoids it, and the bound keeps a test from hanging.
    await asyncio.sleep(0)
    with contextlib.suppress(ConnectionError, TimeoutError):
        async with asyncio.timeout(2):
            await writer.wait_closed()


@pytest.fixture
async def raw(serve: Serve) -> AsyncIterator[Raw]:
    """Open plain TCP connections to a server, for bytes no well-behaved client sends.

    Closed before the servers are (it depends on ``serve``), as a sender would close them.
    """
    writers: list[asyncio.StreamWriter] = []

    async def connect(server: MllpServer) -> Streams:
        reader, writer = await asyncio.open_connection(HOST, server.port)
        writers.append(writer)
        return reader, writer

    yield connect
    for writer in writers:
        await close_raw(writer)


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.01)


# -- the deframer ---------------------------------------------------------------------------


def decode(chunks: list[bytes], max_message_bytes: int = 1 << 20) -> list[Frame | Garbage]:
    decoder = MllpDecoder(max_message_bytes)
    events: list[Frame | Garbage] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events + decoder.close()


def test_frame_refuses_payloads_that_would_break_framing() -> None:
    assert frame(b"abc") == b"\x0babc\x1c\r"
    for bad in (b"a\x0bb", b"a\x1cb"):
        with pytest.raises(ValueError):
            frame(bad)


def test_decoder_gives_the_same_events_whatever_the_split() -> None:
    stream = b"junk" + frame(b"one") + b"\r\n" + frame(b"two") + b"\x0bthree\x1c" + frame(b"4")
    expected = [
        Garbage(b"junk", OUTSIDE_FRAME),
        Frame(b"one"),
        Frame(b"two"),
        Frame(b"three"),
        Frame(b"4"),
    ]
    assert decode([stream]) == expected
    for i in range(len(stream) + 1):
        assert decode([stream[:i], stream[i:]]) == expected, i
    assert decode([bytes([b]) for b in stream]) == expected


def test_decoder_edge_cases() -> None:
    # FS without CR ends the frame; the byte after it is read as outside the frame.
    assert decode([b"\x0ba\x1cX\x0bb\x1c\r"]) == [
        Frame(b"a"),
        Garbage(b"X", OUTSIDE_FRAME),
        Frame(b"b"),
    ]
    # A VT inside a frame abandons it and starts another.
    assert decode([b"\x0bhalf\x0bwhole\x1c\r"]) == [Garbage(b"half", UNTERMINATED), Frame(b"whole")]
    # An empty frame is a frame (the handler answers it AR).
    assert decode([b"\x0b\x1c\r"]) == [Frame(b"")]
    # Unterminated at the end of the stream.
    assert decode([b"\x0bhalf"]) == [Garbage(b"half", UNTERMINATED)]
    # CR/LF-only runs between frames are padding, other runs are kept whole.
    assert decode([b"\r\n\r\n"]) == []
    assert decode([b"\r\nx\n"]) == [Garbage(b"\r\nx\n", OUTSIDE_FRAME)]


def test_decoder_limits_frames_and_garbage_runs() -> None:
    assert decode([frame(b"x" * 8)], max_message_bytes=8) == [Frame(b"x" * 8)]
    decoder = MllpDecoder(8)
    assert decoder.feed(frame(b"ok") + b"\x0b" + b"y" * 9) == [
        Frame(b"ok"),
        Garbage(b"y" * 8, OVERSIZED),
    ]
    assert decoder.failed
    assert decoder.feed(frame(b"after")) == []  # the stream cannot be trusted any more
    # An endless garbage stream is handed over in pieces of at most the limit.
    assert decode([b"z" * 20], max_message_bytes=8) == [
        Garbage(b"z" * 8, OUTSIDE_FRAME),
        Garbage(b"z" * 8, OUTSIDE_FRAME),
        Garbage(b"z" * 4, OUTSIDE_FRAME),
    ]


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@given(st.binary(max_size=300), st.lists(st.integers(min_value=0), max_size=20))
@settings(max_examples=300, deadline=None)
def test_decoder_ignores_chunk_boundaries(data: bytes, cuts: list[int]) -> None:
    for limit in (4, 1 << 20):
        assert decode(split(data, cuts), limit) == decode([data], limit)


payloads = st.binary(max_size=40).map(lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b""))
junk = st.binary(max_size=40).map(lambda b: b.replace(b"\x0b", b""))


@given(st.lists(st.tuples(junk, payloads), max_size=8), st.lists(st.integers(0), max_size=10))
@settings(max_examples=300, deadline=None)
def test_decoder_finds_every_frame_and_keeps_every_junk_run(
    parts: list[tuple[bytes, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(j + frame(p) for j, p in parts)
    expected: list[Frame | Garbage] = []
    for j, p in parts:
        if j.strip(b"\r\n"):
            expected.append(Garbage(j, OUTSIDE_FRAME))
        expected.append(Frame(p))
    assert decode(split(stream, cuts)) == expected


# -- the server over sockets -----------------------------------------------------------------


async def test_one_connection_carries_many_messages_in_order(serve: Serve) -> None:
    server = await serve()
    async with await MllpClient.connect(HOST, server.port) as client:
        for i in range(50):
            assert await client.send(MSG + b"%d" % i) == b"ACK:" + MSG + b"%d" % i


async def test_a_slow_message_does_not_hold_up_another_connection(
    serve: Serve, recorder: Recorder
) -> None:
    server = await serve()
    release = recorder.gate(b"slow")
    async with (
        await MllpClient.connect(HOST, server.port) as a,
        await MllpClient.connect(HOST, server.port) as b,
    ):
        slow = asyncio.create_task(a.send(b"slow"))
        await recorder.started[b"slow"].wait()
        assert await b.send(b"fast") == b"ACK:fast"
        assert not slow.done()
        release.set()
        assert await slow == b"ACK:slow"


async def test_pipelined_frames_are_answered_in_order(raw: Raw, serve: Serve) -> None:
    server = await serve()
    reader, writer = await raw(server)
    writer.write(frame(b"1") + frame(b"2") + frame(b"3"))
    assert await read_frames(reader, 3) == [b"ACK:1", b"ACK:2", b"ACK:3"]


async def test_frames_split_across_reads(raw: Raw, serve: Serve, recorder: Recorder) -> None:
    server = await serve()
    reader, writer = await raw(server)
    for byte in frame(b"split") + frame(b"again"):
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(0.001)  # TCP_NODELAY is on: each byte goes out on its own
    assert await read_frames(reader, 2) == [b"ACK:split", b"ACK:again"]
    assert recorder.kept == []


async def test_bytes_outside_frames_are_kept_and_the_connection_keeps_working(
    raw: Raw, serve: Serve, recorder: Recorder
) -> None:
    server = await serve()
    reader, writer = await raw(server)
    writer.write(b"hello" + frame(b"1") + b"\r\n" + frame(b"2") + b"\x0b3\x1c" + frame(b"4"))
    assert await read_frames(reader, 4) == [b"ACK:1", b"ACK:2", b"ACK:3", b"ACK:4"]
    assert recorder.kept == [(b"hello", OUTSIDE_FRAME)]


async def test_an_unterminated_frame_is_kept_when_the_peer_closes(
    raw: Raw, serve: Serve, recorder: Recorder
) -> None:
    server = await serve()
    reader, writer = await raw(server)
    writer.write(frame(b"whole") + b"\x0bhalf a message")
    writer.write_eof()
    assert await read_to_eof(reader) == frame(b"ACK:whole")
    assert recorder.kept == [(b"half a message", UNTERMINATED)]
    assert recorder.messages == [b"whole"]


async def test_an_oversized_frame_is_kept_and_closes_without_ack(
    raw: Raw, serve: Serve, recorder: Recorder
) -> None:
    server = await serve(max_message_bytes=64)
    reader, writer = await raw(server)
    writer.write(frame(b"a" * 64) + frame(b"b" * 65) + frame(b"never"))
    assert await read_to_eof(reader) == frame(b"ACK:" + b"a" * 64)
    assert recorder.messages == [b"a" * 64]
    assert recorder.kept == [(b"b" * 64, OVERSIZED)]
    # Without an FS at all, the limit still holds; the connection is closed mid-stream.
    reader, writer = await raw(server)
    writer.write(b"\x0b" + b"c" * 1000)
    assert await read_to_eof(reader) == b""
    await until(lambda: len(recorder.kept) == 2)
    assert recorder.kept[1] == (b"c" * 64, OVERSIZED)


async def test_idle_connections_are_closed(raw: Raw, serve: Serve, recorder: Recorder) -> None:
    server = await serve(idle_timeout=0.2)
    reader, writer = await raw(server)
    writer.write(frame(b"1") + b"\x0bstarted")
    assert await read_to_eof(reader) == frame(b"ACK:1")
    assert recorder.kept == [(b"started", UNTERMINATED)]
    await until(lambda: server.connection_count == 0)


async def test_connections_beyond_the_limit_are_refused(serve: Serve) -> None:
    server = await serve(max_connections=2)
    a = await MllpClient.connect(HOST, server.port)
    b = await MllpClient.connect(HOST, server.port)
    assert await a.send(b"a") == b"ACK:a"
    assert await b.send(b"b") == b"ACK:b"
    refused = await MllpClient.connect(HOST, server.port)
    with pytest.raises(MllpError):
        await refused.send(b"c")
    await refused.close()
    await a.close()
    await until(lambda: server.connection_count == 1)
    async with await MllpClient.connect(HOST, server.port) as c:
        assert await c.send(b"c") == b"ACK:c"
    await b.close()


async def test_a_handler_that_raises_closes_only_its_connection(
    raw: Raw, serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    server = await serve()
    caplog.set_level(logging.DEBUG, logger="fhir_server.ingest.mllp")
    reader, writer = await raw(server)
    writer.write(frame(b"boom " + SECRET) + frame(b"next"))
    assert await read_to_eof(reader) == b""
    assert "RuntimeError" in caplog.text
    async with await MllpClient.connect(HOST, server.port) as client:
        assert await client.send(b"still here") == b"ACK:still here"
    assert SECRET.decode() not in caplog.text


async def test_logs_never_carry_payload_bytes(
    raw: Raw, serve: Serve, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = await serve(max_message_bytes=len(MSG), idle_timeout=0.3)
    reader, writer = await raw(server)
    writer.write(SECRET + frame(MSG) + b"\x0b" + SECRET)
    assert await read_to_eof(reader) == frame(b"ACK:" + MSG)
    reader, writer = await raw(server)
    writer.write(b"\x0b" + MSG + SECRET)
    assert await read_to_eof(reader) == b""
    await until(lambda: len(recorder.kept) == 3)
    await server.close()
    assert caplog.records, "the transport logs its sessions"
    for text in (SECRET.decode(), "DOE", "19800101", "900000101"):
        assert text not in caplog.text


async def test_close_answers_messages_in_flight_then_stops(
    raw: Raw, serve: Serve, recorder: Recorder
) -> None:
    server = await serve()
    release = recorder.gate(b"in flight")
    busy = await MllpClient.connect(HOST, server.port)
    idle_reader, idle_writer = await raw(server)
    idle_writer.write(frame(b"idle") + b"\x0bpartial")
    assert await read_frames(idle_reader, 1) == [b"ACK:idle"]
    pending = asyncio.create_task(busy.send(b"in flight"))
    await recorder.started[b"in flight"].wait()

    closing = asyncio.create_task(server.close())
    assert await read_to_eof(idle_reader) == b""  # waiting connections go at once
    assert not closing.done()
    with pytest.raises(MllpError):
        await MllpClient.connect(HOST, server.port, timeout=2)
    release.set()
    assert await pending == b"ACK:in flight"  # the message being handled is answered
    await asyncio.wait_for(closing, 5)
    with pytest.raises(MllpError):
        await busy.send(b"after close")
    await busy.close()
    assert (b"partial", UNTERMINATED) in recorder.kept


async def test_serve_forever_returns_after_close(serve: Serve) -> None:
    server = await serve()
    forever = asyncio.create_task(server.serve_forever())
    await asyncio.sleep(0)
    assert not forever.done()
    await server.close()
    await asyncio.wait_for(forever, 5)


@given(
    chunks=st.lists(
        st.binary(max_size=200) | st.sampled_from([b"\x0b", b"\x1c", b"\r"]), max_size=12
    )
)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
async def test_arbitrary_bytes_never_break_the_server(
    chunks: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    handler = Recorder()
    server = MllpServer(handler, max_message_bytes=128, idle_timeout=5)
    await server.start(HOST, 0)
    try:
        reader, writer = await asyncio.open_connection(HOST, server.port)
        for i, chunk in enumerate(chunks):
            writer.write(chunk + (frame(b"valid") if i % 3 == 0 else b""))
        writer.write_eof()
        with contextlib.suppress(ConnectionError):  # a reset, if it closed on a framing error
            await read_to_eof(reader)
        await close_raw(writer)
        async with await MllpClient.connect(HOST, server.port) as client:
            assert await client.send(b"fresh") == b"ACK:fresh"
    finally:
        await server.close()
    # asyncio logs what escapes a connection task at ERROR: nothing may.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 made with the openssl CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


async def test_tls(serve: Serve, certificate: tuple[str, str]) -> None:
    cert, key = certificate
    server = await serve(ssl=tls_context(cert, key))
    async with await MllpClient.connect(HOST, server.port, client_tls_context(cert)) as client:
        assert await client.send(MSG) == b"ACK:" + MSG
        assert await client.send(b"2") == b"ACK:2"
    # A client that does not trust the certificate gets no connection.
    with pytest.raises(MllpError):
        await MllpClient.connect(HOST, server.port, client_tls_context())


async def test_mutual_tls_requires_a_client_certificate(
    serve: Serve, certificate: tuple[str, str]
) -> None:
    cert, key = certificate
    server = await serve(ssl=tls_context(cert, key, cafile=cert))
    trusted = client_tls_context(cert, certfile=cert, keyfile=key)
    async with await MllpClient.connect(HOST, server.port, trusted) as client:
        assert await client.send(b"with cert") == b"ACK:with cert"
    with pytest.raises(MllpError):
        anonymous = await MllpClient.connect(HOST, server.port, client_tls_context(cert))
        try:
            await anonymous.send(b"no cert")  # TLS 1.3 reports the refusal on first use
        finally:
            await anonymous.close()


def test_tls_context_requires_client_certificates_only_with_a_ca(
    certificate: tuple[str, str],
) -> None:
    cert, key = certificate
    assert tls_context(cert, key).verify_mode == ssl.CERT_NONE
    assert tls_context(cert, key, cafile=cert).verify_mode == ssl.CERT_REQUIRED
    assert Path(cert).exists()
