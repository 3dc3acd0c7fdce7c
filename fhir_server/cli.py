"""The ``sdoh-fhir`` command: serve, migrate."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Annotated

import typer

from fhir_server.settings import Settings
from fhir_server.storage.embedded import EmbeddedPostgres, EmbeddedPostgresError
from fhir_server.storage.migrate import upgrade

__all__ = ["app"]

app = typer.Typer(
    help="sdoh-fhir: a FHIR R4 server for social-determinants-of-health data.",
    no_args_is_help=True,
    add_completion=False,
)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Where the embedded PostgreSQL keeps its data."),
]


def _database(settings: Settings, data_dir: Path | None) -> tuple[str, EmbeddedPostgres | None]:
    """The configured database, or an embedded one started in the data directory."""
    if settings.database_url:
        return settings.database_url, None
    embedded = EmbeddedPostgres(data_dir or settings.data_dir)
    try:
        url = embedded.start()
    except EmbeddedPostgresError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    return url, embedded


@app.command()
def migrate(data_dir: DataDir = None) -> None:
    """Apply the database migrations."""
    settings = Settings()
    url, embedded = _database(settings, data_dir)
    try:
        upgrade(url)
        typer.echo("database is up to date")
    finally:
        if embedded is not None:
            embedded.stop()


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    workers: Annotated[int, typer.Option(help="Server processes.")] = 1,
    data_dir: DataDir = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Load a small synthetic population.")
    ] = False,
) -> None:
    """Start the FHIR server (with an embedded PostgreSQL unless SDOH_FHIR_DATABASE_URL is set)."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings()
    url, embedded = _database(settings, data_dir)
    # Stop the embedded database on SIGTERM as on Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        upgrade(url)
        if demo:
            from fhir_server.ingest.demo import load_demo

            count = load_demo(url)
            typer.echo(f"demo population: {count} resources stored")
        os.environ["SDOH_FHIR_DATABASE_URL"] = url
        typer.echo(f"FHIR R4 server at http://{host}:{port}/ (metadata: /metadata)")
        uvicorn.run(
            "fhir_server.api.app:create_app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="warning",
            access_log=False,
        )
    except KeyboardInterrupt:
        pass
    finally:
        if embedded is not None:
            embedded.stop()
            typer.echo("embedded PostgreSQL stopped")
