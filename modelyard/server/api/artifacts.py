"""The proxied artifact API (``/api/2.0/mlflow-artifacts``) and the UI's artifact routes.

The server hands out ``mlflow-artifacts:/<exp>/<run>/artifacts`` URIs; the client turns them into
``/api/2.0/mlflow-artifacts/artifacts/<exp>/<run>/artifacts/<file>`` and PUTs, GETs, lists and
DELETEs there. Every path is a path in the one artifact repository (``services.artifacts``).

Bodies stream both ways: an upload goes chunk by chunk from the socket to the repository, a
download chunk by chunk from the repository to the socket, so a file of any size costs a few
megabytes of memory. An upload is bounded by ``max_artifact_body`` (disk, not memory).

Multipart and presigned transfers are not offered (server-info says so); their routes answer 501
with the message the client recognises, and it falls back to a proxied PUT or GET.
"""
from __future__ import annotations

import mimetypes
import posixpath
from typing import AsyncIterator, Awaitable, Callable
from urllib.parse import quote

import sqlalchemy as sa
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from modelyard.artifacts import ArtifactRepository, ArtifactStream, basename, clean_path, join
from modelyard.errors import MlflowError
from modelyard.server.auth import check
from modelyard.server.routing import Context, Endpoint, error_response, json_response
from modelyard.server.schema import STRING, Field, Schema
from modelyard.store import schema as tables
from modelyard.store.projects import DEFAULT_PROJECT

__all__ = ["ENDPOINTS", "routes"]

PREFIXES = ("/api/2.0/mlflow-artifacts", "/ajax-api/2.0/mlflow-artifacts")
UI_UPLOAD_LIMIT = 10 * 1024 * 1024  # MLflow's limit for the UI's upload-artifact route

# The client compares these messages' prefixes to decide to fall back to a plain PUT / GET.
MULTIPART_UNSUPPORTED = "Multipart upload is not supported for the current artifact repository"
PRESIGNED_UNSUPPORTED = "Presigned download is not supported for the current artifact repository"

# Shown as text by the UI and by browsers: MLflow's text extensions, plus its extension-less files.
_TEXT_EXTENSIONS = {
    "txt", "log", "err", "cfg", "conf", "cnf", "cf", "ini", "properties", "prop", "hocon", "toml",
    "yaml", "yml", "xml", "json", "js", "py", "py3", "csv", "tsv", "md", "rst", "ipynb",
}
_TEXT_NAMES = {"MLmodel", "MLproject"}


# --- the proxied artifact API ------------------------------------------------------------------

async def upload(services, request: Request) -> Response:
    """PUT /artifacts/<path>: store the raw body as the file at ``path``."""
    path = _path_param(request)
    if not path:
        raise MlflowError.invalid("Invalid path")
    await authorize_path(services, request.state.project, request.state.principal, path)
    limit = services.settings.max_artifact_body
    declared = request.headers.get("content-length")
    if limit > 0 and declared is not None and declared.isdigit() and int(declared) > limit:
        raise MlflowError.invalid(_too_big(limit))
    await services.artifacts.write(path, _bounded_body(request, limit))
    return json_response({})


async def download_or_list(services, request: Request) -> Response:
    """GET /artifacts/<path>: the file's bytes. GET /artifacts/ (no path): a listing."""
    path = _path_param(request)
    if not path:
        return await list_files(services, request)
    await authorize_path(services, request.state.project, request.state.principal, path)
    return await _send_file(services.artifacts, path, request)


async def delete(services, request: Request) -> Response:
    """DELETE /artifacts/<path>: a file, or a directory with everything under it."""
    path = _path_param(request)
    if not path:
        raise MlflowError.invalid("Invalid path")
    await authorize_path(services, request.state.project, request.state.principal, path)
    await services.artifacts.delete(path)
    return json_response({})


async def list_files(services, request: Request) -> Response:
    """GET /artifacts?path=<dir>: the directory's children by name, as MLflow's server lists them.

    A path naming a file lists that one file under its own name, which the client takes to mean
    "a file, not a directory" (``list_artifacts`` then returns an empty list, as it must).
    """
    path = clean_path(request.query_params.get("path"))
    await authorize_path(services, request.state.project, request.state.principal, path)
    files = await list_named(services.artifacts, path)
    return json_response({"files": files} if files else {})


async def list_named(repo: ArtifactRepository, path: str) -> list[dict]:
    """Children of ``path`` with bare names; a file lists as itself."""
    entries = await repo.list(path)
    if entries:
        return [e.to_dict(basename(e.path)) for e in entries]
    if path:
        size = await repo.size(path)
        if size is not None:
            return [{"path": basename(path), "is_dir": False, "file_size": size}]
    return []


async def multipart_unsupported(services, request: Request) -> Response:
    raise MlflowError(MULTIPART_UNSUPPORTED, "NOT_IMPLEMENTED")


async def presigned_unsupported(services, request: Request) -> Response:
    raise MlflowError(PRESIGNED_UNSUPPORTED, "NOT_IMPLEMENTED")


# --- the UI's routes, addressed by run or model version -----------------------------------------

async def get_run_artifact(services, request: Request) -> Response:
    """GET /get-artifact?run_uuid=&path=: a file of a run, as a download."""
    run_id = request.query_params.get("run_id") or request.query_params.get("run_uuid")
    if not run_id:
        raise MlflowError.invalid("Request must specify run_uuid.")
    rel = clean_path(_required_query(request, "path"))
    root = await run_artifact_root(services, request.state.project, run_id)
    await authorize_path(services, request.state.project, request.state.principal, root)
    return await _send_file(services.artifacts, join(root, rel), request)


async def get_model_version_artifact(services, request: Request) -> Response:
    """GET /model-versions/get-artifact?name=&version=&path=: a file of a registered version."""
    name = _required_query(request, "name")
    version = _required_query(request, "version")
    rel = clean_path(_required_query(request, "path"))
    root = await model_version_artifact_root(services, request.state.project, name, version)
    await authorize_path(services, request.state.project, request.state.principal, root)
    return await _send_file(services.artifacts, join(root, rel), request)


async def upload_run_artifact(services, request: Request) -> Response:
    """POST /ajax-api/2.0/mlflow/upload-artifact?run_uuid=&path=: the UI's small-file upload."""
    run_id = request.query_params.get("run_uuid") or request.query_params.get("run_id")
    if not run_id:
        raise MlflowError.invalid("Request must specify run_uuid.")
    if not request.query_params.get("path"):
        raise MlflowError.invalid("Request must specify path.")
    rel = clean_path(request.query_params["path"])
    if not rel:
        raise MlflowError.invalid("Invalid path")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > UI_UPLOAD_LIMIT:
        raise MlflowError.invalid("Artifact size is too large. Max size is 10MB.")
    root = await run_artifact_root(services, request.state.project, run_id)
    await authorize_path(services, request.state.project, request.state.principal, root)
    # Read the (small) body before writing so that an empty or oversized one stores nothing.
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > UI_UPLOAD_LIMIT:
            raise MlflowError.invalid("Artifact size is too large. Max size is 10MB.")
    if not body:
        raise MlflowError.invalid("Request must specify data.")
    await services.artifacts.write(join(root, rel), _once(bytes(body)))
    return json_response({})


async def list_run_artifacts(ctx: Context, a: dict) -> dict:
    """GET /api/2.0/mlflow/artifacts/list?run_id=&path=: a run's files, with run-relative paths."""
    rel = clean_path(a["path"])
    root_uri = await _run_artifact_uri(ctx.services, ctx.project, a["run_id"])
    root = _repository_path(ctx.services.artifacts, root_uri, f"run {a['run_id']}")
    await authorize_path(ctx.services, ctx.project, ctx.principal, root)
    entries = await ctx.services.artifacts.list(join(root, rel))
    out: dict = {"root_uri": root_uri}
    files = [e.to_dict(join(rel, basename(e.path))) for e in entries]
    if files:
        out["files"] = files
    return out


async def run_artifact_root(services, project: str, run_id: str) -> str:
    """The repository path of a run's artifact root; 404 if there is no such run in ``project``."""
    uri = await _run_artifact_uri(services, project, run_id)
    return _repository_path(services.artifacts, uri, f"run {run_id}")


async def _run_artifact_uri(services, project: str, run_id: str) -> str:
    runs, experiments = tables.runs, tables.experiments

    def read(conn):
        return conn.execute(
            sa.select(runs.c.artifact_uri, experiments.c.project)
            .join(experiments, experiments.c.experiment_id == runs.c.experiment_id)
            .where(runs.c.run_uuid == run_id)).first()

    row = await services.db.read(read)
    if row is None or row.project != project:  # a run of another project is as good as missing
        raise MlflowError.not_found(f"Run with id={run_id} not found")
    return row.artifact_uri


async def authorize_path(services, project: str, principal, path: str) -> None:
    """Artifacts live under their experiment's id (``<exp>/<run>/artifacts/...``,
    ``<exp>/models/<id>/artifacts/...``): that experiment must belong to the request's project,
    or the path is as good as missing. Anything outside an experiment (the root included) is the
    server administrator's; with auth off everyone is."""
    first = path.split("/", 1)[0]
    if first.isascii() and first.isdigit() and len(first) <= 18:
        experiments = tables.experiments
        owner = await services.db.read(lambda conn: conn.execute(
            sa.select(experiments.c.project).where(experiments.c.experiment_id == int(first))).scalar())
        if owner is not None:
            if owner != project:
                raise MlflowError.not_found(f"No Experiment with id={first} exists")
            return
    check(principal, project, "admin", "reach artifacts outside an experiment")


async def model_version_artifact_root(services, project: str, name: str, version: str) -> str:
    """The repository path of a registered version's files (its storage location, or the logged
    model or run artifacts its source names); 404 if there is no such version."""
    try:
        number = int(version)
    except ValueError:
        raise MlflowError.invalid(f"Parameter 'version' must be an integer, got '{version}'.") from None
    mv, lm = tables.model_versions, tables.logged_models

    def read(conn) -> str | None:
        row = conn.execute(sa.select(mv.c.storage_location, mv.c.source).where(
            mv.c.project == project, mv.c.name == name, mv.c.version == number, mv.c.deleted == sa.false())).first()
        if row is None:
            return None
        uri = row.storage_location or row.source or ""
        if uri.startswith("models:/"):  # MLflow 3 sources name a logged model: models:/<model_id>
            model_id = uri[len("models:/"):].strip("/")
            uri = conn.execute(sa.select(lm.c.artifact_location).where(lm.c.model_id == model_id)).scalar() or uri
        return uri

    uri = await services.db.read(read)
    if uri is None:
        raise MlflowError.not_found(f"Model Version (name={name}, version={version}) not found")
    return _repository_path(services.artifacts, uri, f"model version {name}/{version}")


def _repository_path(repo: ArtifactRepository, uri: str, owner: str) -> str:
    path = repo.path_for_uri(uri)
    if path is None:
        raise MlflowError(f"The artifacts of {owner} are at {uri}, which this server does not serve.",
                          "NOT_IMPLEMENTED")
    return clean_path(path)


# --- helpers ------------------------------------------------------------------------------------

def _path_param(request: Request) -> str:
    # Starlette has percent-decoded the path once (so %2F is already a "/"); clean_path rejects
    # whatever a further decoding would turn into a traversal. The raw path is checked as well,
    # in case a server in front decoded differently.
    raw = request.scope.get("raw_path")
    if raw is not None:
        clean_path(raw.decode("latin-1").split("?", 1)[0].lstrip("/"))
    return clean_path(request.path_params.get("path", ""))


async def _bounded_body(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The request body chunk by chunk, refused once it passes ``limit`` bytes (0: no limit).
    Raising mid-stream makes the repository discard what it has so far."""
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if limit > 0 and received > limit:
            raise MlflowError.invalid(_too_big(limit))
        yield chunk


def _too_big(limit: int) -> str:
    return f"Artifact upload exceeds the limit of {limit} bytes (--max-artifact-body)."


def _required_query(request: Request, name: str) -> str:
    value = request.query_params.get(name)
    if not value:
        raise MlflowError.invalid(f"Missing value for required parameter '{name}'.")
    return value


async def _send_file(repo: ArtifactRepository, path: str, request: Request) -> Response:
    headers = {
        # Always a download, never rendered on the server's origin: an uploaded HTML file must not
        # be able to run script as the server (MLflow does the same).
        "Content-Disposition": _attachment(basename(path)),
        "X-Content-Type-Options": "nosniff",
    }
    media_type = guess_media_type(path)
    if request.method == "HEAD":
        size = await repo.size(path)
        if size is None:
            raise MlflowError.not_found(f"Artifact '{path}' does not exist.")
        return Response(headers={**headers, "Content-Length": str(size)}, media_type=media_type)
    stream = await repo.open(path)
    return _StreamResponse(stream, headers={**headers, "Content-Length": str(stream.size)}, media_type=media_type)


class _StreamResponse(StreamingResponse):
    """A streamed file whose source is closed however the response ends (client gone included)."""

    def __init__(self, stream: ArtifactStream, **kw):
        super().__init__(stream.chunks, **kw)

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()


def guess_media_type(path: str) -> str:
    """The Content-Type of a downloaded artifact, by its name."""
    name = basename(path)
    extension = posixpath.splitext(name)[1].lstrip(".").lower()
    if name in _TEXT_NAMES or extension in _TEXT_EXTENSIONS:
        return "text/plain"
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _attachment(filename: str) -> str:
    try:
        filename.encode("ascii")
    except UnicodeEncodeError:
        fallback = filename.encode("ascii", "replace").decode().replace("?", "_")
        return f'attachment; filename="{_quoted(fallback)}"; filename*=UTF-8\'\'{quote(filename, safe="")}'
    return f'attachment; filename="{_quoted(filename)}"'


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


async def _once(data: bytes):
    yield data


Handler = Callable[..., Awaitable[Response]]


def _bind(services, handler: Handler, access: str):
    """A Starlette endpoint for ``handler(services, request)``: the caller's token and role are
    checked against ``access`` (as the endpoint table does for MLflow's JSON API), changes are
    audited, and errors come back in MLflow's shape."""

    async def endpoint(request: Request) -> Response:
        project = request.scope.get("modelyard.project", DEFAULT_PROJECT)
        what = f"{request.method} {request.url.path}"
        principal = None
        try:
            principal = await services.auth.principal(
                request.headers, _client_ip(request), request.cookies.get("modelyard_session"))
            services.auth.check_request(principal, project, access, what, request)
            request.state.project, request.state.principal = project, principal
            response = await handler(services, request)
        except MlflowError as exc:
            response = error_response(exc)
        except ClientDisconnect:
            # The client went away mid-upload; the repository has discarded the partial file.
            response = Response(status_code=499)
        except Exception as exc:  # noqa: BLE001 - translated at the boundary, never leaked
            from modelyard.server.app import translate  # the app imports this module

            response = error_response(translate(exc))
        if request.method not in ("GET", "HEAD"):
            services.audit.record(project, principal.username if principal else "-", what,
                                  response.status_code, "artifact",
                                  request.path_params.get("path") or request.query_params.get("path"),
                                  source_ip=_client_ip(request))
        return response

    endpoint.__name__ = handler.__name__
    endpoint.access = access  # read by the route-by-role test
    return endpoint


def _client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


class _AnyPathConvertor(PathConvertor):
    """Starlette's ``path`` stops at a newline (``.`` without DOTALL); this one matches any path,
    so a path with an encoded control character reaches the handler and gets its 400."""

    regex = r"[\s\S]*"


def routes(services) -> list[Route]:
    """The proxied artifact API under both prefixes, and the UI's artifact routes."""
    register_url_convertor("anypath", _AnyPathConvertor())
    out = []
    for prefix in PREFIXES:
        files = f"{prefix}/artifacts/{{path:anypath}}"
        out += [
            Route(f"{prefix}/artifacts", _bind(services, list_files, "read"), methods=["GET"]),
            Route(files, _bind(services, download_or_list, "read"), methods=["GET"]),
            Route(files, _bind(services, upload, "write"), methods=["PUT"]),
            Route(files, _bind(services, delete, "delete"), methods=["DELETE"]),
            Route(f"{prefix}/mpu/{{action}}/{{path:anypath}}", _bind(services, multipart_unsupported, "write"),
                  methods=["POST"]),
            Route(f"{prefix}/presigned/{{path:anypath}}", _bind(services, presigned_unsupported, "read"),
                  methods=["GET"]),
        ]
    out += [
        Route("/get-artifact", _bind(services, get_run_artifact, "read"), methods=["GET"]),
        Route("/model-versions/get-artifact", _bind(services, get_model_version_artifact, "read"),
              methods=["GET"]),
        Route("/ajax-api/2.0/mlflow/upload-artifact", _bind(services, upload_run_artifact, "write"),
              methods=["POST"]),
    ]
    return out


ENDPOINTS = [
    Endpoint("GET", "/artifacts/list", list_run_artifacts, Schema(
        Field("run_id", STRING, required=True, aliases=("run_uuid",)),
        Field("path", STRING),
        Field("page_token", STRING),
    ), access="read"),
]
