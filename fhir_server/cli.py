"""The ``sdoh-fhir`` command: serve, migrate, load."""

from __future__ import annotations

import logging
import os
import signal
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Annotated

import orjson
import psycopg
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

load_app = typer.Typer(help="Load resources in bulk.", no_args_is_help=True)
app.add_typer(load_app, name="load")
profiles_app = typer.Typer(help="Profiles and terminology the server validates with.")
app.add_typer(profiles_app, name="profiles", no_args_is_help=True)

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

    from fhir_server.conformance import UNKNOWN_PROFILE_MODES, parse_required_profiles

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings()
    try:  # the workers would each fail on a bad setting: say it once, before starting anything
        parse_required_profiles(settings.required_profiles)
        if settings.unknown_profiles not in UNKNOWN_PROFILE_MODES:
            raise ValueError(f"SDOH_FHIR_UNKNOWN_PROFILES must be one of {UNKNOWN_PROFILE_MODES}")
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
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


@load_app.command("ndjson")
def load_ndjson_command(
    paths: Annotated[
        list[Path],
        typer.Argument(help="NDJSON files (.ndjson, .ndjson.gz) or directories of them."),
    ],
    errors: Annotated[
        Path | None,
        typer.Option(
            "--errors",
            help="Where refused lines go (NDJSON); default: .sdoh-fhir-load-errors-<time>.ndjson"
            " in the (first) input directory.",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Processes that validate and index (default: one per CPU)."),
    ] = None,
    online: Annotated[
        bool,
        typer.Option(
            "--online",
            help="Even into an empty database, write batch by batch with the indexes in place,"
            " so other sessions are not kept waiting.",
        ),
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Load FHIR resources from NDJSON, one per line, as the Bulk Data $import does.

    Every resource is validated and stored as a REST write stores it; ids are kept (a resource
    without one gets a server id). An id that exists becomes a new version, as an update makes
    it; identical content makes none, so loading the same files again changes nothing. Refused
    lines are written, with their line number and an OperationOutcome, to the errors file.
    Into an empty database the load is one transaction that other sessions wait for (see
    --online). Progress goes to standard error every few seconds, a summary to standard output.
    Exit status: 0 all loaded, 1 some lines refused, 2 the load failed.
    """
    from fhir_server.api.errors import operation_outcome
    from fhir_server.conformance import Conformance, parse_required_profiles
    from fhir_server.ingest.ndjson import LoadError, Progress, RefusedLine, load_ndjson
    from fhir_server.storage.database import libpq_url

    settings = Settings()
    try:
        conformance = Conformance.bundled(
            unknown_profiles=settings.unknown_profiles,
            required=parse_required_profiles(settings.required_profiles),
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if errors is None:
        first = paths[0] if paths else Path(".")
        folder = first if first.is_dir() else first.parent
        errors = folder / f".sdoh-fhir-load-errors-{stamp}.ndjson"
    errors_file: IO[bytes] | None = None

    def refused(line: RefusedLine) -> None:
        nonlocal errors_file
        if errors_file is None:
            errors_file = errors.open("wb")
        record = {
            "file": line.source,
            "line": line.line,
            "outcome": operation_outcome(line.issues),
            "text": line.text,
        }
        errors_file.write(orjson.dumps(record) + b"\n")

    def progress(report: Progress) -> None:
        typer.echo(
            f"{report.loaded:,} loaded, {report.refused:,} refused,"
            f" {report.seconds:,.0f} s, {report.rate:,.0f} resources/s",
            err=True,
        )

    url, embedded = _database(settings, data_dir)
    try:
        upgrade(url)
        summary = load_ndjson(
            libpq_url(url),
            paths,
            on_refused=refused,
            on_progress=progress,
            workers=workers,
            initial=not online,
            conformance=conformance,
        )
    except (LoadError, psycopg.Error, OSError) as exc:
        typer.echo(f"error: the load failed: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.echo("error: the load was interrupted", err=True)
        raise typer.Exit(2) from None
    except Exception:  # a fault of ours: say so, and keep exit 1 for refused lines
        typer.echo(f"error: the load failed:\n{traceback.format_exc()}", err=True)
        raise typer.Exit(2) from None
    finally:
        if errors_file is not None:
            errors_file.close()
        if embedded is not None:
            embedded.stop()
    typer.echo(
        f"loaded {summary.loaded:,} resources ({summary.created:,} created,"
        f" {summary.updated:,} updated, {summary.unchanged:,} unchanged),"
        f" refused {summary.refused:,}, in {summary.seconds:,.1f} s:"
        f" {summary.rate:,.0f} resources/s"
        + (" (initial load: one transaction, indexes rebuilt)" if summary.initial else "")
    )
    if summary.refused:
        typer.echo(f"refused lines and their reasons: {errors}", err=True)
        sys.stdout.flush()
        raise typer.Exit(1)


@profiles_app.command("install")
def profiles_install(
    package: Annotated[Path, typer.Argument(help="An NPM-style FHIR package (.tgz).")],
    data_dir: DataDir = None,
) -> None:
    """Install a FHIR package's StructureDefinitions, CodeSystems, ValueSets, ConceptMaps and
    SearchParameters into the database, as PUTs of their own ids (installing again changes
    nothing). A running server picks them up within seconds. Exit status: 0 installed, 2 not
    (nothing is stored when one resource cannot be)."""
    from fhir_server.conformance import Conformance, parse_required_profiles
    from fhir_server.ingest.packages import PackageError, install_package

    settings = Settings()
    try:
        conformance = Conformance.bundled(
            unknown_profiles=settings.unknown_profiles,
            required=parse_required_profiles(settings.required_profiles),
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    url, embedded = _database(settings, data_dir)
    try:
        upgrade(url)
        summary = install_package(url, package, conformance)
    except PackageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        if embedded is not None:
            embedded.stop()

    def listed(counts: dict[str, int]) -> str:
        return ", ".join(f"{n} {t}" for t, n in sorted(counts.items())) or "none"

    typer.echo(f"installed {summary.name} {summary.version}".rstrip())
    typer.echo(f"  created: {listed(summary.created)}")
    typer.echo(f"  updated: {listed(summary.updated)}")
    typer.echo(f"  unchanged: {listed(summary.unchanged)}")
    if summary.skipped:
        typer.echo(f"  not installed (examples and other resources): {summary.skipped}")
