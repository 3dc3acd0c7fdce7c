"""The embedded PostgreSQL: start, reuse of a running server, clean stop."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from fhir_server.storage.embedded import EmbeddedPostgres


def test_start_reuse_and_stop(tmp_path: Path) -> None:
    first = EmbeddedPostgres(tmp_path / "d", durable=False)
    first.start()
    try:
        # A second handle on a running server connects to it rather than failing to start.
        second = EmbeddedPostgres(tmp_path / "d", durable=False)
        second.start()
        second.stop()  # did not start it, so does not stop it
        with psycopg.connect(f"host={first.socket_dir} user=postgres dbname=sdoh_fhir") as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        first.stop()
    assert not (tmp_path / "d" / "pgdata" / "postmaster.pid").exists()
    # And it starts again on the same data.
    with EmbeddedPostgres(tmp_path / "d", durable=False):
        pass


def test_relative_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The default data directory, ".sdoh-fhir", is relative to where the user runs the server.
    monkeypatch.chdir(tmp_path)
    with EmbeddedPostgres(Path(".sdoh-fhir"), durable=False) as server:
        with psycopg.connect(f"host={server.socket_dir} user=postgres dbname=sdoh_fhir") as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert (tmp_path / ".sdoh-fhir" / "pgdata" / "PG_VERSION").exists()
