"""The app factory: ``create_app(settings)`` builds the stores, the artifact repository and the
routes from what it is given, with no state made at import. The CLI, the tests and every worker
process call it.
"""
from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
import sqlalchemy.exc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from modelyard.artifacts import ArtifactRepository, open_repository
from modelyard.errors import MlflowError
from modelyard.server import api
from modelyard.server.auth import Authenticator
from modelyard.server.routing import MLFLOW_PREFIXES, MODELYARD_PREFIX, EndpointTable, error_response
from modelyard.settings import Settings
from modelyard.store import Stores
from modelyard.store.db import Database
from modelyard.store.audit import AuditLog
from modelyard.store.migrate import upgrade
from modelyard.store.projects import DEFAULT_PROJECT

__all__ = ["create_app", "Services"]

log = logging.getLogger("modelyard.server")


@dataclass
class Services:
    """Everything a handler may reach: settings, the database, the stores, the artifacts."""

    settings: Settings
    db: Database
    stores: Stores
    artifacts: ArtifactRepository
    auth: Authenticator
    audit: AuditLog


def create_app(settings: Settings | None = None, *, migrate: bool = True) -> "ModelyardApp":
    settings = settings or Settings.from_env()
    db = Database(settings.resolved_database_url)
    if migrate:
        upgrade(db.write_engine)
    # The server proxies artifacts, so clients get mlflow-artifacts:/ URIs whatever the backend.
    stores = Stores(db, artifact_root="mlflow-artifacts:")
    stores.projects.ensure_default()
    stores.experiments.ensure_default()
    # Uploads to S3 wait on disk under the data directory, not in /tmp, which is often in memory.
    artifacts = open_repository(settings.resolved_artifacts_uri, endpoint_url=settings.s3_endpoint_url,
                                spool_dir=str(Path(settings.data_dir).resolve() / "tmp"))
    services = Services(settings=settings, db=db, stores=stores, artifacts=artifacts,
                        auth=Authenticator(stores.tokens, enabled=settings.auth,
                                           failure_delay_ms=settings.auth_failure_delay_ms),
                        audit=AuditLog(db))
    return ModelyardApp(services)


class ModelyardApp:
    """The ASGI app: MLflow's endpoint table first (the hot path), then everything else."""

    def __init__(self, services: Services):
        self.services = services
        self.table = EndpointTable([
            (api.mlflow_endpoints(), MLFLOW_PREFIXES),
            (api.modelyard_endpoints(), (MODELYARD_PREFIX,)),
        ], services)

        @asynccontextmanager
        async def lifespan(_app):
            services.db.start()
            from modelyard.monitoring.service import monitoring_for

            monitoring = monitoring_for(services)
            monitoring.start()  # the monitor scheduler: evaluations, alert deliveries, actions
            try:
                yield
            finally:
                await monitoring.stop()
                await services.audit.flush()
                services.db.close()

        self.starlette = Starlette(
            routes=api.other_routes(services), lifespan=lifespan,
            exception_handlers={404: not_found, 405: method_not_allowed, Exception: internal_error},
        )
        self.starlette.state.services = services
        self.services.db.start()
        self._projects: dict[str, float] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.starlette(scope, receive, send)
            return
        try:
            scope, project = await self._project_scope(scope)
            endpoint, path_params, allowed = self.table.match(scope["path"], scope["method"])
            if endpoint is not None:
                response = await self.table.handle(Request(scope, receive), endpoint, path_params, project)
            elif allowed:
                response = error_response(MlflowError(
                    f"Method {scope['method']} is not allowed for {scope['path']}.", "BAD_REQUEST"))
                response.status_code = 405
                response.headers["Allow"] = ", ".join(allowed)
            else:
                await self.starlette(scope, receive, send)
                return
        except Exception as exc:  # noqa: BLE001 - translated at the boundary, never leaked
            response = error_response(translate(exc))
        await response(scope, receive, send)

    async def _project_scope(self, scope) -> tuple[dict, str]:
        """``/p/<project>/rest`` serves ``/rest`` in that project; bare paths serve ``default``.

        GitLab-style per-project tracking URIs work because the client appends its paths to
        ``MLFLOW_TRACKING_URI``. The project's existence is cached for a few seconds.
        """
        path = scope["path"]
        if not path.startswith("/p/"):
            scope["modelyard.project"] = DEFAULT_PROJECT
            return scope, DEFAULT_PROJECT
        name, _, rest = path[3:].partition("/")
        now = time.monotonic()
        if self._projects.get(name, 0) < now:
            found = await anyio.to_thread.run_sync(self.services.stores.projects.get_sync, name)
            if found is None:
                raise MlflowError.not_found(f"Project '{name}' not found.")
            self._projects[name] = now + 5.0
        prefix = f"/p/{name}"
        raw = scope.get("raw_path") or path.encode()
        scope = {**scope, "path": "/" + rest, "raw_path": raw[len(prefix):] if raw.startswith(prefix.encode()) else raw,
                 "root_path": scope.get("root_path", "") + prefix, "modelyard.project": name}
        return scope, name


def translate(exc: Exception) -> MlflowError:
    """Library errors become MLflow errors; anything unexpected is logged with its traceback."""
    if isinstance(exc, MlflowError):
        return exc
    if isinstance(exc, sqlalchemy.exc.OperationalError):
        log.warning("database unavailable: %s", exc)
        return MlflowError("The database is temporarily unavailable; retry.", "TEMPORARILY_UNAVAILABLE")
    log.exception("unexpected error")
    return MlflowError(f"Internal error: {type(exc).__name__}", "INTERNAL_ERROR")


async def not_found(request: Request, exc: Exception) -> Response:
    # The reference answers an HTML 404 that the client maps to ENDPOINT_NOT_FOUND; this says so directly.
    return error_response(MlflowError(f"No endpoint {request.method} {request.url.path}.", "ENDPOINT_NOT_FOUND"))


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    response = error_response(MlflowError(f"Method {request.method} is not allowed for {request.url.path}.",
                                          "BAD_REQUEST"))
    response.status_code = 405
    return response


async def internal_error(request: Request, exc: Exception) -> Response:
    return error_response(translate(exc))
