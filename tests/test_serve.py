"""End to end: `sdoh-fhir serve --demo` as a user starts it, spoken to over real HTTP."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _command() -> list[str]:
    script = shutil.which("sdoh-fhir")
    if script:
        return [script]
    return [sys.executable, "-m", "fhir_server"]


def test_serve_demo_then_ctrl_c(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDOH_FHIR_")}
    # As the README starts it: from a directory of the user's, default (relative) data dir.
    process = subprocess.Popen(
        [*_command(), "serve", "--demo", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{base}/metadata", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"the server did not start:\n{output[-3000:]}")
            time.sleep(0.5)
        bundle = httpx.get(f"{base}/Patient", params={"_count": "5", "_total": "accurate"}).json()
        assert bundle["total"] >= 20
        assert len(bundle["entry"]) == 5
        pid = bundle["entry"][0]["resource"]["id"]
        observations = httpx.get(f"{base}/Observation", params={"subject": f"Patient/{pid}"})
        assert observations.status_code == 200
        bad = httpx.post(
            f"{base}/Patient", content=b"{oops", headers={"Content-Type": "application/fhir+json"}
        )
        assert bad.status_code == 400
        assert bad.json()["resourceType"] == "OperationOutcome"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            output = process.communicate(timeout=60)[0].decode()
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert "embedded PostgreSQL stopped" in output
    assert (tmp_path / ".sdoh-fhir" / "pgdata" / "PG_VERSION").exists()
    pid_file = tmp_path / ".sdoh-fhir" / "pgdata" / "postmaster.pid"
    assert not pid_file.exists(), "the embedded PostgreSQL is still running"
