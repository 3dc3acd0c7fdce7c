"""Apply the Alembic migrations that ship in ``fhir_server/storage/migrations``."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine

__all__ = ["upgrade", "sync_url"]

_MIGRATIONS = Path(__file__).parent / "migrations"


def sync_url(url: str) -> str:
    """The same database URL for the synchronous psycopg driver."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database schema to ``revision``; safe to run on every start."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    engine = create_engine(sync_url(database_url))
    try:
        with engine.begin() as connection:
            # Serialize concurrent starts (several workers, or serve + migrate).
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(727274)")
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        engine.dispose()
