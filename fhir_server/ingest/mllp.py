"""MLLP transport for HL7 v2 feeds: a server that hands each framed message to a handler.

HL7 Minimal Lower Layer Protocol, Release 1 (HL7 v2.5.1 Implementation Guide, appendix C.4):
a message travels as ``<VT 0x0B> payload <FS 0x1C><CR 0x0D>`` and the receiver answers each
message with one framed ACK on the same connection, which stays open for the next message.
hl7apy's ``MLLPServer`` takes one message per connection and reads byte by byte; this module
reads in chunks, keeps connections open, serves them concurrently, and speaks TLS.

The transport knows nothing of HL7: an ``MllpHandler`` turns each payload into the ACK payload
and keeps whatever cannot be a message (``garbage``), so nothing received is lost.

Framing decisions (``MllpDecoder``), for bytes that do not follow the rule above:

* Bytes before a VT are garbage (reason ``"outside-frame"``); the connection keeps working.
  A run made only of CR and LF between frames is dropped silently: senders that end frames
  with ``FS CR LF`` are common and that padding carries nothing.
* FS ends the frame even when no CR follows. FS may not occur inside an HL7 message, so this
  is unambiguous, and a sender that omits the CR still gets its ACK instead of a hung line.
  Replies always end with ``FS CR``.
* A VT inside a frame starts a new frame: the bytes so far are garbage (``"unterminated"``).
  The sender gave that message up; the one that follows is still answered.
* A payload longer than ``max_message_bytes`` is garbage (``"oversized"``, first
  ``max_message_bytes`` bytes kept) and the connection is closed without an ACK: the only
  case where a message gets no ACK, a framing error. The sender resends or alerts.
* A frame still open when the connection ends (end of stream, idle timeout, server closing)
  is garbage (``"unterminated"``).

For frame garbage the data is the payload so far, without the VT; for outside-frame garbage it
is the bytes exactly as received.

Logs carry peer addresses, byte and message counts and reasons, never payload bytes: HL7
messages hold names, birth dates and identifiers (DESIGN.md, decision 10).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as ssl_module
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

__all__ = [
    "Frame",
    "Garbage",
    "MllpClient",
    "MllpDecoder",
    "MllpError",
    "MllpHandler",
    "MllpServer",
    "client_tls_context",
    "frame",
    "tls_context",
]

VT = 0x0B
FS = 0x1C
CR = 0x0D
_LF = 0x0A
_START = b"\x0b"
_END = b"\x1c\r"

READ_SIZE = 64 * 1024
DEFAULT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024

OUTSIDE_FRAME = "outside-frame"
UNTERMINATED = "unterminated"
OVERSIZED = "oversized"

logger = logging.getLogger(__name__)


class MllpError(Exception):
    """The MLLP peer broke the exchange: connection lost before the reply, or a bad reply."""


class MllpHandler(Protocol):
    """What the server calls; the HL7 parsing, the ACK and the dead-letter store live behind it."""

    async def message(self, payload: bytes) -> bytes:
        """Process one message and return the ACK payload (unframed) to send back.

        ``payload`` is the bytes between VT and FS exactly as received. It must not raise:
        a handler answers bad messages with AE/AR. If it raises anyway, the server logs the
        exception type (not its text, which may quote the message) and closes the connection.
        """
        ...

    async def garbage(self, data: bytes, reason: str) -> None:
        """Keep bytes that are not a complete message (reasons: see the module docstring)."""
        ...


@dataclass(frozen=True, slots=True)
class Frame:
    """A complete message: the bytes between VT and FS."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Garbage:
    """Bytes that are not a complete message, and why."""

    data: bytes
    reason: str


Event = Frame | Garbage


def frame(payload: bytes) -> bytes:
    """Wrap ``payload`` in MLLP framing; refuse one that holds VT or FS (it would break framing)."""
    if _START in payload or b"\x1c" in payload:
        raise ValueError("an MLLP payload cannot contain VT (0x0B) or FS (0x1C)")
    return b"".join((_START, payload, _END))


class MllpDecoder:
    """Incremental MLLP deframer: feed it chunks as they arrive, get frames and garbage back.

    Chunk boundaries never matter: feeding a stream in any split gives the same events as
    feeding it at once. Each chunk is scanned once with ``bytes.find`` (no per-byte loop),
    and memory stays below about ``max_message_bytes`` per decoder.
    """

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        if max_message_bytes < 1:
            raise ValueError("max_message_bytes must be positive")
        self.max_message_bytes = max_message_bytes
        self.failed = False
        self._inside = False
        self._after_fs = False
        self._frame = bytearray()
        self._garbage = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held that are not yet part of an event (an open frame or a garbage run)."""
        return len(self._frame) + len(self._garbage)

    def feed(self, data: bytes) -> list[Event]:
        """Consume ``data``; return the events it completes, in stream order.

        After an ``oversized`` event the decoder is ``failed`` and ignores further input:
        the stream cannot be resynchronised safely, so the caller closes it.
        """
        events: list[Event] = []
        if self.failed or not data:
            return events
        pos = 0
        if self._after_fs:
            self._after_fs = False
            if data[0] == CR:
                pos = 1
        end = len(data)
        while pos < end and not self.failed:
            pos = (
                self._feed_inside(data, pos, events)
                if self._inside
                else self._feed_outside(data, pos, events)
            )
        return events

    def close(self) -> list[Event]:
        """End of stream: whatever is still held becomes garbage."""
        events: list[Event] = []
        if self._inside and not self.failed:
            events.append(Garbage(bytes(self._frame), UNTERMINATED))
        self._flush_garbage(events)
        self._frame.clear()
        self._inside = False
        self.failed = True
        return events

    def _feed_outside(self, data: bytes, pos: int, events: list[Event]) -> int:
        start = data.find(_START, pos)
        if start < 0:
            self._add_garbage(data[pos:], events)
            return len(data)
        if start > pos:
            self._add_garbage(data[pos:start], events)
        self._flush_garbage(events)
        self._inside = True
        return start + 1

    def _feed_inside(self, data: bytes, pos: int, events: list[Event]) -> int:
        fs = data.find(b"\x1c", pos)
        stop = len(data) if fs < 0 else fs
        restart = data.find(_START, pos, stop)
        if restart >= 0:
            # The sender gave this frame up and began another.
            self._frame += data[pos:restart]
            if not self._check_size(events):
                events.append(Garbage(bytes(self._frame), UNTERMINATED))
                self._frame.clear()
            return restart + 1
        if fs < 0:
            self._frame += data[pos:]
            self._check_size(events)
            return len(data)
        if self._frame:
            self._frame += data[pos:fs]
            payload = bytes(self._frame)
            self._frame.clear()
        else:
            payload = data[pos:fs]  # the common case: the whole frame in one chunk, one copy
        if len(payload) > self.max_message_bytes:
            self._frame += payload
            self._check_size(events)
            return len(data)
        events.append(Frame(payload))
        self._inside = False
        after = fs + 1
        if after == len(data):
            self._after_fs = True
        elif data[after] == CR:
            after += 1
        return after

    def _check_size(self, events: list[Event]) -> bool:
        """Fail the stream once the open frame is over the limit; True if it did."""
        if len(self._frame) <= self.max_message_bytes:
            return False
        events.append(Garbage(bytes(self._frame[: self.max_message_bytes]), OVERSIZED))
        self._frame.clear()
        self._inside = False
        self.failed = True
        return True

    def _add_garbage(self, data: bytes, events: list[Event]) -> None:
        self._garbage += data
        limit = self.max_message_bytes
        while len(self._garbage) >= limit:  # bounded memory under an endless garbage stream
            events.append(Garbage(bytes(self._garbage[:limit]), OUTSIDE_FRAME))
            del self._garbage[:limit]

    def _flush_garbage(self, events: list[Event]) -> None:
        if self._garbage.strip(b"\r\n"):
            events.append(Garbage(bytes(self._garbage), OUTSIDE_FRAME))
        self._garbage.clear()


@dataclass(slots=True)
class _Stats:
    messages: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


class _Connection:
    """One accepted connection: its task, and whether it is waiting for input.

    ``close()`` cancels only connections that are reading, so a cancellation never lands
    inside a handler call: a message or a piece of garbage being handed over always finishes.
    """

    __slots__ = ("peer", "task", "reading", "unanswered")

    def __init__(self, peer: str, task: asyncio.Task[None] | None) -> None:
        self.peer = peer
        self.task = task
        self.reading = False
        self.unanswered = 0


class _Stop(Exception):
    """Ends a connection's loop; ``reason`` goes to the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MllpServer:
    """An asyncio MLLP listener: persistent connections, each served by its own task.

    Messages on one connection are handled one at a time and answered in order (pipelined
    frames included); connections are independent, so a slow message on one does not hold
    up another. A connection is closed after ``idle_timeout`` seconds without input (or
    with a reply the peer does not read), and connections past ``max_connections`` are
    closed as soon as they are accepted.
    """

    def __init__(
        self,
        handler: MllpHandler,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        idle_timeout: float = 600.0,
        max_connections: int = 256,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        if max_message_bytes < 1 or max_connections < 1 or idle_timeout <= 0:
            raise ValueError("limits must be positive")
        self.handler = handler
        self.max_message_bytes = max_message_bytes
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.ssl = ssl
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._closing = False
        self._closed = asyncio.Event()
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The port listened on (useful after ``start(host, 0)``)."""
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` (port 0: any free port) and accept connections."""
        if self._server is not None:
            raise RuntimeError("the server is already started")
        self._server = await asyncio.start_server(
            self._accept,
            host,
            port,
            ssl=self.ssl,
            ssl_handshake_timeout=min(self.idle_timeout, 60.0) if self.ssl else None,
            limit=READ_SIZE,
        )
        self._port = int(self._server.sockets[0].getsockname()[1])
        logger.info("MLLP listening on port %d (tls=%s)", self.port, self.ssl is not None)

    async def serve_forever(self) -> None:
        """Wait until ``close()``; cancelling this closes the server gracefully first."""
        try:
            await self._closed.wait()
        except asyncio.CancelledError:
            await self.close()
            raise

    async def close(self, grace: float = 30.0) -> None:
        """Stop accepting, let messages being handled finish and be answered, then close.

        Connections waiting for input are closed at once; a frame they had begun is kept as
        garbage. Frames received but not yet handled get no ACK, so the sender resends them
        (original acknowledgment mode). After ``grace`` seconds the rest are cancelled.
        """
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for conn in list(self._connections):
            if conn.reading and conn.task is not None:
                conn.task.cancel()
        tasks = [c.task for c in self._connections if c.task is not None]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        logger.info("MLLP server closed")
        self._closed.set()

    async def __aenter__(self) -> MllpServer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer(writer)
        if self._closing or len(self._connections) >= self.max_connections:
            logger.warning(
                "MLLP connection from %s refused: %s",
                peer,
                "server closing" if self._closing else f"{self.max_connections} connections open",
            )
            await _close_writer(writer)
            return
        conn = _Connection(peer, asyncio.current_task())
        self._connections.add(conn)
        try:
            await self._serve(conn, reader, writer)
        except asyncio.CancelledError:
            # Only close() cancels a connection that is not reading (after its grace period);
            # ending normally keeps asyncio from logging the cancelled callback task.
            if not self._closing:
                raise
        finally:
            self._connections.discard(conn)

    async def _serve(
        self, conn: _Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        decoder = MllpDecoder(self.max_message_bytes)
        stats = _Stats()
        reason = "peer closed"
        logger.debug("MLLP connection from %s", conn.peer)
        try:
            while True:
                data = await self._read(conn, reader)
                stats.bytes_in += len(data)
                for event in decoder.feed(data):
                    await self._dispatch(conn, event, writer, stats)
                if decoder.failed:
                    raise _Stop("framing error")
                if not data:
                    raise _Stop("peer closed")
        except _Stop as stop:
            reason = stop.reason
        except OSError as exc:
            reason = f"connection error ({type(exc).__name__})"
        finally:
            if conn.unanswered:
                reason = f"{reason}; {conn.unanswered} messages left unanswered"
            await self._finish(conn, decoder, writer, stats, reason)

    async def _read(self, conn: _Connection, reader: asyncio.StreamReader) -> bytes:
        """The next chunk (empty at end of stream); stops on idle timeout or server close."""
        if self._closing:
            raise _Stop("server closing")
        conn.reading = True
        try:
            async with asyncio.timeout(self.idle_timeout):
                return await reader.read(READ_SIZE)
        except TimeoutError:
            raise _Stop("idle timeout") from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self._closing or task is None:
                raise
            task.uncancel()  # close() asked for this: it ends the connection, not the task
            raise _Stop("server closing") from None
        finally:
            conn.reading = False

    async def _dispatch(
        self, conn: _Connection, event: Event, writer: asyncio.StreamWriter, stats: _Stats
    ) -> None:
        if isinstance(event, Garbage):
            await self._keep_garbage(conn, event)
            return
        if self._closing:
            # Received, but closing began: no ACK, so the sender resends it elsewhere or later.
            conn.unanswered += 1
            return
        try:
            reply = frame(await self.handler.message(event.payload))
        except Exception as exc:  # a handler bug closes this connection, not the server
            raise _Stop(f"handler raised {type(exc).__name__}") from None
        writer.write(reply)
        try:
            async with asyncio.timeout(self.idle_timeout):
                await writer.drain()
        except TimeoutError:
            raise _Stop("peer does not read its ACKs") from None
        stats.messages += 1
        stats.bytes_out += len(reply)

    async def _keep_garbage(self, conn: _Connection, event: Garbage) -> None:
        logger.warning(
            "MLLP %s: %d bytes of garbage (%s)", conn.peer, len(event.data), event.reason
        )
        try:
            await self.handler.garbage(event.data, event.reason)
        except Exception as exc:  # as in _dispatch
            raise _Stop(f"garbage handler raised {type(exc).__name__}") from None

    async def _finish(
        self,
        conn: _Connection,
        decoder: MllpDecoder,
        writer: asyncio.StreamWriter,
        stats: _Stats,
        reason: str,
    ) -> None:
        """Hand over what the decoder still holds, close, and log one line about the session."""
        try:
            for event in decoder.close():
                if isinstance(event, Garbage):
                    await self._keep_garbage(conn, event)
        except _Stop as stop:
            reason = f"{reason}; {stop.reason}"
        finally:
            await _close_writer(writer)
        log = (
            logger.warning if reason.startswith(("handler", "garbage", "framing")) else logger.info
        )
        log(
            "MLLP connection from %s closed (%s): %d messages, %d bytes in, %d bytes out",
            conn.peer,
            reason,
            stats.messages,
            stats.bytes_in,
            stats.bytes_out,
        )


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, asyncio.TimeoutError):
        async with asyncio.timeout(5.0):
            await writer.wait_closed()


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


class MllpClient:
    """An MLLP sender for tests, benchmarks and replay tools: one message, then wait for its reply.

    Use ``await MllpClient.connect(...)``; it is also an async context manager.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        timeout: float,
        max_message_bytes: int,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._timeout = timeout
        self._decoder = MllpDecoder(max_message_bytes)
        self._replies: deque[bytes] = deque()

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        ssl: ssl_module.SSLContext | None = None,
        *,
        server_hostname: str | None = None,
        timeout: float = 30.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> MllpClient:
        """Open a connection (TLS if ``ssl`` is given); ``timeout`` also bounds each ``send``."""
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    ssl=ssl,
                    server_hostname=server_hostname if ssl is not None else None,
                    limit=READ_SIZE,
                )
        except (OSError, TimeoutError) as exc:
            raise MllpError(f"cannot connect to {host}:{port}: {type(exc).__name__}") from exc
        return cls(reader, writer, timeout=timeout, max_message_bytes=max_message_bytes)

    async def send(self, payload: bytes) -> bytes:
        """Send one message and return the payload of the framed reply."""
        try:
            async with asyncio.timeout(self._timeout):
                self._writer.write(frame(payload))
                await self._writer.drain()
                return await self._next_reply()
        except (OSError, TimeoutError) as exc:
            raise MllpError(f"no reply: {type(exc).__name__}") from exc

    async def _next_reply(self) -> bytes:
        while not self._replies:
            data = await self._reader.read(READ_SIZE)
            if not data:
                raise MllpError("the server closed the connection before replying")
            for event in self._decoder.feed(data):
                if isinstance(event, Garbage):
                    raise MllpError(f"bad reply from the server ({event.reason})")
                self._replies.append(event.payload)
        return self._replies.popleft()

    async def close(self) -> None:
        await _close_writer(self._writer)

    async def __aenter__(self) -> MllpClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def tls_context(certfile: str, keyfile: str, cafile: str | None = None) -> ssl_module.SSLContext:
    """A server-side TLS context (TLS 1.2 or later); with ``cafile``, client certificates are
    required and must chain to it (mutual TLS, as state interfaces usually demand)."""
    context = ssl_module.create_default_context(ssl_module.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl_module.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    if cafile is not None:
        context.load_verify_locations(cafile)
        context.verify_mode = ssl_module.CERT_REQUIRED
    return context


def client_tls_context(
    cafile: str | None = None, certfile: str | None = None, keyfile: str | None = None
) -> ssl_module.SSLContext:
    """A client-side TLS context for ``MllpClient``: trust ``cafile`` (else the system store),
    and present ``certfile``/``keyfile`` when the server requires a client certificate."""
    context = ssl_module.create_default_context(ssl_module.Purpose.SERVER_AUTH, cafile=cafile)
    context.minimum_version = ssl_module.TLSVersion.TLSv1_2
    if certfile is not None:
        context.load_cert_chain(certfile, keyfile)
    return context
