"""Server-level routes: health, version, server-info."""
from __future__ import annotations

from starlette.responses import PlainTextResponse
from starlette.routing import Route

from modelyard.server.compat import REPORTED_MLFLOW_VERSION
from modelyard.server.routing import Context, Endpoint, json_response, with_access

__all__ = ["ENDPOINTS", "routes"]



def server_info() -> dict:
    return {
        "store_type": "SqlStore",
        "workspaces_enabled": False,
        "trace_archival_enabled": False,
        "multipart_uploads_enabled": False,
        "multipart_downloads_enabled": False,
        "presigned_upload_run_id_supported": False,
        "presigned_upload_model_id_supported": False,
        "artifacts_presigned_only": False,
        "features_enabled": {},
    }


async def _server_info(ctx: Context, a: dict) -> dict:
    return server_info()


async def _health(request):
    return PlainTextResponse("OK")


async def _version(request):
    return PlainTextResponse(REPORTED_MLFLOW_VERSION)


async def _server_info_route(request):
    return json_response(server_info())


async def openapi_description(ctx: Context, a: dict) -> dict:
    """The OpenAPI description of modelyard's own API."""
    from modelyard.server import api
    from modelyard.server.openapi import openapi

    return openapi(api.modelyard_endpoints())


OWN_ENDPOINTS = [Endpoint("GET", "/openapi.json", openapi_description, access="public")]

ENDPOINTS = [Endpoint("GET", "/server-info", _server_info, access="public")]


def routes() -> list[Route]:
    return [
        with_access(Route("/health", _health), "public"),
        with_access(Route("/version", _version), "public"),
        with_access(Route("/api/3.0/mlflow/server-features", _server_info_route), "public"),
    ]
