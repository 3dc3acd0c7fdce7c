"""The ``import`` job behind ``POST /$import``: the NDJSON bulk load, run in the background.

The job gathers its input into a private folder (the NDJSON body spooled with the job, and the
files at the input URLs), then runs ``sdoh-fhir load ndjson --online`` on it in a child process:
the load validates and indexes in worker processes of its own, and a server process only watches
it, records its progress on the job, and keeps the refused lines (without their text) as the
job's ``errors.ndjson``. Cancelling the job stops the child.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import orjson

from fhir_server.storage.jobs import JobContext, Jobs

__all__ = ["ERRORS", "ImportFailed", "run_import"]

ERRORS = "errors.ndjson"
_OUTPUT_PART_BYTES = 4 * 1024 * 1024
_PROGRESS = re.compile(r"^([\d,]+) loaded, ([\d,]+) refused")
_SUMMARY = re.compile(
    r"loaded ([\d,]+) resources \(([\d,]+) created, ([\d,]+) updated, ([\d,]+) unchanged\),"
    r" refused ([\d,]+)"
)


class ImportFailed(Exception):
    """The import could not run (an input URL that does not answer, say); nothing was loaded."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _number(text: str) -> int:
    return int(text.replace(",", ""))


async def run_import(context: JobContext, database_url: str) -> Mapping[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="sdoh-fhir-import-"))
    try:
        inputs = folder / "input"
        inputs.mkdir()
        await _gather(context, inputs)
        errors = folder / "errors.ndjson"
        summary = await _load(context, database_url, inputs, errors)
        refused = await _keep_errors(context, errors)
        return {**summary, "refused": refused}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def _gather(context: JobContext, inputs: Path) -> None:
    """The job's NDJSON in files: the spooled body, then each input URL."""
    async with context.pool.connection() as conn:
        parts = Jobs(conn).inputs(context.job.id)
        spooled = inputs / "body.ndjson"
        with spooled.open("wb") as out:
            async for data in parts:
                out.write(data)
        if spooled.stat().st_size == 0:
            spooled.unlink()
    urls = context.job.params.get("urls", [])
    async with httpx.AsyncClient(timeout=60, follow_redirects=False) as client:
        for n, url in enumerate(urls):
            suffix = ".ndjson.gz" if url.split("?")[0].endswith(".gz") else ".ndjson"
            target = inputs / f"url-{n}{suffix}"
            try:
                async with client.stream("GET", url) as response:
                    if response.status_code != 200:
                        raise ImportFailed(f"input {n + 1} could not be read (HTTP status)")
                    with target.open("wb") as out:
                        async for chunk in response.aiter_raw():
                            out.write(chunk)
            except httpx.HTTPError:
                raise ImportFailed(f"input {n + 1} could not be read") from None
    if not any(inputs.iterdir()):
        raise ImportFailed("the import has no input")


async def _load(
    context: JobContext, database_url: str, inputs: Path, errors: Path
) -> dict[str, int]:
    command = [
        sys.executable,
        "-m",
        "fhir_server",
        "load",
        "ndjson",
        "--online",
        "--errors",
        str(errors),
        str(inputs),
    ]
    env = {**os.environ, "SDOH_FHIR_DATABASE_URL": database_url}
    child = await asyncio.create_subprocess_exec(
        *command,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stderr is not None
        stdout_task = asyncio.create_task(child.stdout.read())
        async for raw in child.stderr:
            match = _PROGRESS.match(raw.decode(errors="replace"))
            if match:
                await context.progress(
                    loaded=_number(match.group(1)), refused=_number(match.group(2))
                )
        status = await child.wait()
        stdout = (await stdout_task).decode(errors="replace")
    finally:
        if child.returncode is None:
            child.terminate()
            with contextlib.suppress(ProcessLookupError):
                await child.wait()
    summary = _SUMMARY.search(stdout)
    if status not in {0, 1} or summary is None:
        raise ImportFailed(
            "the load stopped before the end; what it stored so far is kept, and loading the"
            " same input again is safe"
        )
    created, updated, unchanged, refused = (_number(summary.group(i)) for i in range(2, 6))
    await context.progress(loaded=created + updated + unchanged, refused=refused)
    return {"created": created, "updated": updated, "unchanged": unchanged}


async def _keep_errors(context: JobContext, errors: Path) -> int:
    """Store the refused lines as the job's errors.ndjson: line number and OperationOutcome."""
    if not errors.exists():
        return 0
    count = 0
    part = 0
    buffer = bytearray()
    async with context.pool.connection() as conn:
        jobs = Jobs(conn)
        with errors.open("rb") as source:
            for line in source:
                record = orjson.loads(line)
                source_name = Path(record.get("file", "")).name
                kept = {
                    "input": "body" if source_name.startswith("body") else source_name,
                    "line": record.get("line"),
                    "outcome": record.get("outcome"),
                }
                buffer += orjson.dumps(kept) + b"\n"
                count += 1
                if len(buffer) >= _OUTPUT_PART_BYTES:
                    await jobs.add_output(context.job.id, ERRORS, part, bytes(buffer))
                    part += 1
                    buffer.clear()
        if buffer:
            await jobs.add_output(context.job.id, ERRORS, part, bytes(buffer))
    return count
