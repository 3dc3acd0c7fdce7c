"""Background loops woken by PostgreSQL ``NOTIFY``, or after a while if a notification is lost."""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod

import psycopg

__all__ = ["NotifiedLoop"]


class NotifiedLoop(ABC):
    """Runs :meth:`run` in the background; :meth:`wait` returns on a ``NOTIFY`` on ``channel``.

    A dedicated connection listens, reconnecting after ``poll_seconds`` when it is lost, and
    wakes the loop on each reconnect (what it missed meanwhile is unknown). :meth:`wait` also
    returns after ``poll_seconds`` without one.
    """

    def __init__(self, conninfo: str, channel: str, poll_seconds: float, name: str) -> None:
        self.conninfo = conninfo
        self.channel = channel
        self.poll_seconds = poll_seconds
        self.name = name
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False

    @abstractmethod
    async def run(self) -> None:
        """The loop: until :attr:`stopped`, do its work and :meth:`wait`."""

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.run(), name=self.name),
            asyncio.create_task(self._listen(), name=f"{self.name}-listen"),
        ]

    async def stop(self) -> None:
        # Python 3.11's wait_for can swallow a cancel that arrives as the event is set: the
        # flag ends the loop whatever happens to the cancel.
        self._stopped = True
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    @property
    def stopped(self) -> bool:
        return self._stopped

    async def wait(self) -> bool:
        """Until a notification or ``poll_seconds``; False once stopped."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
        return not self._stopped

    async def _listen(self) -> None:
        while not self._stopped:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {self.channel}")
                    self._wake.set()
                    async for _ in conn.notifies():
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(self.poll_seconds)
