"""The floor of the stack: a bare FastAPI + psycopg endpoint that reads one stored row by id.

Run by bench_rest.py with the same uvicorn workers as the server, to measure what the server's
own work costs on top of the framework and the driver.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import Response
from psycopg_pool import AsyncConnectionPool

_pool: AsyncConnectionPool | None = None


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    global _pool
    _pool = AsyncConnectionPool(os.environ["FLOOR_CONNINFO"], min_size=10, max_size=10, open=False)
    await _pool.open()
    yield
    await _pool.close()


app = FastAPI(lifespan=_lifespan, docs_url=None, redoc_url=None, openapi_url=None)


@app.get("/Patient/{id}")
async def read(id: str) -> Response:
    assert _pool is not None
    async with _pool.connection() as conn:
        cur = await conn.execute(
            "SELECT body FROM resource WHERE resource_type = 'Patient' AND id = %s", (id,)
        )
        row = await cur.fetchone()
    if row is None:
        return Response(status_code=404)
    return Response(row[0].encode(), media_type="application/fhir+json")
