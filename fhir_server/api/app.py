"""The ASGI application: ``create_app(settings)`` assembles routes, errors and state."""

from __future__ import annotations

import functools
import gc
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

import orjson
from fastapi import FastAPI

from fhir_server.api import bulk_import, bundle, feeds, reindex, terminology, validate
from fhir_server.api.errors import install_error_handlers
from fhir_server.api.rest import routes
from fhir_server.api.state import AppState
from fhir_server.conformance import Conformance, parse_required_profiles
from fhir_server.ingest.import_job import run_import
from fhir_server.operations.capability import build_capability_statement
from fhir_server.operations.conformance import StoredConformance
from fhir_server.operations.reindex import run_reindex
from fhir_server.operations.search_parameters import CustomSearchParameters
from fhir_server.search.registry import SearchRegistry
from fhir_server.settings import Settings
from fhir_server.storage.database import libpq_url, open_pool
from fhir_server.storage.jobs import JobRunner
from fhir_server.storage.repository import Indexer
from profiles.models import RESOURCE_TYPES
from profiles.validator import ProfileRegistry

__all__ = ["create_app", "create_app_from_env"]


def _version() -> str:
    try:
        return version("sdoh-fhir")
    except PackageNotFoundError:
        return "0.0.0"


def create_app(settings: Settings) -> FastAPI:
    """The FHIR server on ``settings.database_url`` (which must be set: see ``cli.serve``)."""
    if not settings.database_url:
        raise ValueError("create_app needs settings.database_url; `sdoh-fhir serve` sets it")
    url = settings.database_url
    # Bad settings stop the server here, before it takes a request.
    required_profiles = parse_required_profiles(settings.required_profiles)
    base_conformance = Conformance.bundled(
        unknown_profiles=settings.unknown_profiles, required=required_profiles
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await open_pool(url, settings.pool_size)
        registry = SearchRegistry.load_default()
        types = frozenset(RESOURCE_TYPES & registry.all_resource_types())

        def capability(registry: SearchRegistry, conformance: Conformance) -> bytes:
            statement = build_capability_statement(
                registry,
                types,
                base_url=settings.base_url,
                version=_version(),
                profiles=_profiles_by_type(conformance.profiles),
            )
            return orjson.dumps(statement)

        state = app.state.fhir = AppState(
            settings=settings,
            pool=pool,
            registry=registry,
            indexer=Indexer(registry),
            capability_statement=capability(registry, base_conformance),
            resource_types=types,
            conformance=base_conformance,
        )

        def use(registry: SearchRegistry) -> None:
            """Custom search parameters came, went or finished indexing."""
            state.registry = registry
            state.indexer.use(registry)
            state.capability_statement = capability(registry, state.conformance)

        custom = CustomSearchParameters(
            registry,
            pool,
            libpq_url(url),
            use,
            poll_seconds=settings.search_parameter_poll_seconds,
        )
        await custom.refresh()

        def use_conformance(conformance: Conformance) -> None:
            """Profiles or terminology were posted, changed or deleted."""
            state.conformance = conformance
            state.capability_statement = capability(state.registry, conformance)

        stored_conformance = StoredConformance(
            base_conformance,
            pool,
            libpq_url(url),
            use_conformance,
            poll_seconds=settings.search_parameter_poll_seconds,
        )
        await stored_conformance.refresh()
        state.refresh_conformance = stored_conformance.refresh_soon
        state.stored_conformance = stored_conformance
        # A required profile nothing defines would be enforced by nothing: refuse to start.
        unknown = stored_conformance.current.unknown_required()
        if unknown:
            raise ValueError(f"required profiles not known to this server: {', '.join(unknown)}")
        # The registry, models and compiled FHIRPath live as long as the process: keep them out
        # of the collector's full passes, which otherwise add tens of ms to the slowest requests.
        gc.freeze()
        custom.start()
        stored_conformance.start()
        runner = JobRunner(
            pool,
            libpq_url(url),
            {
                "import": functools.partial(run_import, database_url=url),
                "reindex": functools.partial(
                    run_reindex,
                    parameters=custom,
                    resource_types=types,
                    settle_seconds=settings.search_parameter_poll_seconds + 1,
                ),
            },
        )
        runner.start()
        try:
            yield
        finally:
            await runner.stop()
            await feeds.close_feeds(state)
            await stored_conformance.stop()
            await custom.stop()
            await pool.close()

    app = FastAPI(
        title="sdoh-fhir",
        version=_version(),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    install_error_handlers(app)
    app.router.routes.extend(
        [
            *bundle.routes,
            *bulk_import.routes,
            *reindex.routes,
            *terminology.routes,
            *validate.routes,
            *feeds.routes,
            *routes,
        ]
    )
    return app


def _profiles_by_type(profiles: ProfileRegistry) -> dict[str, list[str]]:
    """The canonical URL of each profile the server validates, by the type it constrains."""
    by_type: dict[str, list[str]] = {}
    for url in profiles.urls():
        resource_type = profiles.type_of(url)
        if resource_type is not None:
            by_type.setdefault(resource_type, []).append(url)
    return by_type


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` workers: settings from the environment."""
    settings = Settings()
    if not settings.database_url:
        settings.database_url = os.environ.get("SDOH_FHIR_DATABASE_URL")
    return create_app(settings)
