"""Server settings, read from ``SDOH_FHIR_*`` environment variables once, in ``create_app``."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """What an operator can set; every field maps to ``SDOH_FHIR_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="SDOH_FHIR_", extra="ignore")

    # None: start the embedded PostgreSQL in data_dir.
    database_url: str | None = None
    data_dir: Path = Path(".sdoh-fhir")
    # The base URL clients use, for Location headers and Bundle links; None: taken from the request.
    base_url: str | None = None
    pool_size: int = 16
    default_count: int = 20
    max_count: int = 1000
    # Largest request body accepted, in bytes.
    max_body_bytes: int = 16 * 1024 * 1024
    # Largest NDJSON body a POST /$import accepts, in bytes (larger loads: input URLs, or the CLI).
    max_import_bytes: int = 1024 * 1024 * 1024
    # Hosts POST /$import may fetch input URLs from, comma-separated (empty: none). The server
    # makes the request, so only hosts meant to serve bulk files belong here.
    import_url_hosts: str = ""
    # How often each server process reloads the stored SearchParameters even when no
    # notification arrived; a reindex job waits this long before its last pass.
    search_parameter_poll_seconds: float = 5.0
    # A write claiming (meta.profile) a profile the server does not know: "ignore" accepts it,
    # checked against the base specification only; "error" refuses it (422).
    unknown_profiles: str = "ignore"
    # Profiles resources must conform to whatever they claim: a JSON list of
    # {"resourceType": ..., "profile": <canonical url>, "when": <FHIRPath, optional>}.
    required_profiles: str = ""
