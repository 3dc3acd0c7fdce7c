"""The IEES feed behind the MLLP listener and ``POST /$load-iees``: messages from any number
of connections are applied in arrival order with group commit.

Each message waits in a queue; one worker thread takes everything queued (up to
``max_batch``), applies it in one transaction (``IeesApplier.apply_messages``) and hands each
message its ACK once the transaction is durable. While a batch is being applied the next one
gathers, so under load a commit carries many messages and when idle a message waits for
nothing. Garbage the listener could not frame is kept as a dead letter.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from fhir_server.conformance import Conformance
from fhir_server.ingest.iees import FeedUnavailable, IeesApplier
from fhir_server.storage.feeds import FeedWriter

__all__ = ["IeesPipeline"]

log = logging.getLogger(__name__)


@dataclass
class _Waiting:
    payload: bytes
    reply: asyncio.Future[bytes]


@dataclass
class _Garbage:
    data: bytes
    reason: str
    done: asyncio.Future[bytes]


class IeesPipeline:
    """An ``MllpHandler`` (``fhir_server.ingest.mllp``) that applies IEES messages."""

    def __init__(
        self, conninfo: str, conformance: Conformance | None = None, *, max_batch: int = 200
    ) -> None:
        self.conninfo = conninfo
        self.conformance = conformance
        self.max_batch = max_batch
        # Messages and garbage, in arrival order: one worker, one connection.
        self._queue: asyncio.Queue[_Waiting | _Garbage | None] = asyncio.Queue()
        self._applier: IeesApplier | None = None
        self._worker: asyncio.Task[None] | None = None
        self.messages = 0
        self.batches = 0

    async def start(self) -> None:
        self._applier = await asyncio.to_thread(IeesApplier, self.conninfo, self.conformance)
        self._worker = asyncio.create_task(self._work(), name="iees-apply")

    async def close(self) -> None:
        if self._worker is not None:
            await self._queue.put(None)
            await self._worker
            self._worker = None
        if self._applier is not None:
            await asyncio.to_thread(self._applier.close)
            self._applier = None

    async def message(self, payload: bytes) -> bytes:
        """The ACK of one message, once what it changed is committed. Raises FeedUnavailable
        when the message can be neither applied nor kept (the listener then closes the
        connection without an ACK, and the sender keeps the message)."""
        waiting = _Waiting(payload, asyncio.get_running_loop().create_future())
        await self._queue.put(waiting)
        return await waiting.reply

    async def messages_in_order(self, payloads: list[bytes]) -> list[bytes]:
        """ACKs for several messages from one source, applied in their order."""
        loop = asyncio.get_running_loop()
        waiting = [_Waiting(p, loop.create_future()) for p in payloads]
        for item in waiting:
            await self._queue.put(item)
        return [await item.reply for item in waiting]

    async def garbage(self, data: bytes, reason: str) -> None:
        """Keep bytes the listener could not frame, as a dead letter (through the worker: the
        applier's connection serves one thread at a time)."""
        item = _Garbage(data, reason, asyncio.get_running_loop().create_future())
        await self._queue.put(item)
        await item.done

    def _keep(self, item: _Garbage) -> None:
        assert self._applier is not None
        writer: FeedWriter = self._applier.writer
        with writer.transaction():
            writer.dead_letter("mllp-garbage", item.data, f"MLLP framing: {item.reason}", None)

    async def _work(self) -> None:
        assert self._applier is not None
        applier = self._applier
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            if isinstance(first, _Garbage):
                await self._keep_garbage(first)
                continue
            batch = [first]
            garbage: list[_Garbage] = []
            while len(batch) < self.max_batch and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stopping = True
                    break
                if isinstance(item, _Garbage):
                    garbage.append(item)  # kept right after this batch
                    continue
                batch.append(item)
            await self._apply(applier, batch)
            for item in garbage:
                await self._keep_garbage(item)

    async def _keep_garbage(self, item: _Garbage) -> None:
        try:
            await asyncio.to_thread(self._keep, item)
        except Exception as exc:
            if not item.done.done():
                item.done.set_exception(FeedUnavailable(type(exc).__name__))
        else:
            if not item.done.done():
                item.done.set_result(b"")

    async def _apply(self, applier: IeesApplier, batch: list[_Waiting]) -> None:
        try:
            replies = await asyncio.to_thread(
                applier.apply_messages, [item.payload for item in batch]
            )
        except FeedUnavailable as exc:
            for item in batch:
                if not item.reply.done():
                    item.reply.set_exception(exc)
            return
        except Exception as exc:  # a fault of ours: no ACK; the sender keeps the messages
            log.error("IEES batch failed: %s", type(exc).__name__)
            for item in batch:
                if not item.reply.done():
                    item.reply.set_exception(FeedUnavailable(type(exc).__name__))
            return
        self.messages += len(batch)
        self.batches += 1
        for item, reply in zip(batch, replies, strict=True):
            if not item.reply.done():
                item.reply.set_result(reply.ack)
