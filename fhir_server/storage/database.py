"""Connections: the psycopg pool the server runs on, from a database URL."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

__all__ = ["connect", "libpq_url", "open_pool"]

# Timestamps come back in UTC whatever the server's default time zone is.
_OPTIONS = "-c timezone=UTC"


def libpq_url(url: str) -> str:
    """A libpq URL from a SQLAlchemy-style one (``postgresql+psycopg://`` becomes ``postgresql://``)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    return f"{scheme.split('+')[0]}://{rest}"


async def open_pool(url: str, size: int) -> AsyncConnectionPool[Any]:
    """Autocommit connections: a read is one round trip; writes open a transaction themselves."""
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        libpq_url(url),
        min_size=size,
        max_size=size,
        kwargs={"autocommit": True, "options": _OPTIONS},
        configure=_configure,
        open=False,
    )
    await pool.open(wait=True)
    return pool


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    # The advisory locks serialize conditional writes only under READ COMMITTED, where each
    # statement sees what committed before it; a server default of REPEATABLE READ would not.
    await conn.set_isolation_level(psycopg.IsolationLevel.READ_COMMITTED)


async def connect(url: str) -> psycopg.AsyncConnection[Any]:
    """One autocommit connection, for command-line work."""
    return await psycopg.AsyncConnection.connect(libpq_url(url), autocommit=True, options=_OPTIONS)
