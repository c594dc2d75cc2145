"""The web UI: server-rendered pages (Jinja2) over the stores the API handlers use, with a little
JavaScript for charts and for changes made through the same API the clients call.

Every page is also served under ``/p/<project>/``; the bare paths are the project ``default``.
:func:`routes` is the ordered route list the server mounts after its own routes.
"""
from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from modelyard.server.routing import with_access
from modelyard.store.projects import DEFAULT_PROJECT
from modelyard.ui import deployments, experiments, models, pipelines, runs
from modelyard.ui.render import Page, page_route, redirect, static_routes

__all__ = ["routes"]

_PROJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_SECTIONS = ("experiments", "models", "deployments", "pipelines", "alerts")


async def home(page: Page) -> Response:
    return redirect(page, "/experiments")


async def switch_project(request: Request) -> Response:
    """The project picker: the same section of another project (its pages check the access)."""
    target = request.query_params.get("to", "")
    section = request.query_params.get("section", "")
    section = section if section in _SECTIONS else "experiments"
    if not _PROJECT.match(target) or target == DEFAULT_PROJECT:
        return RedirectResponse(f"/{section}", 303)
    return RedirectResponse(f"/p/{target}/{section}", 303)


def routes(services) -> list[Route]:
    """The UI's routes, each labelled with the access level it checks (reads only: every change a
    page offers goes through the JSON API with the CSRF header)."""

    def page(path, handler):
        return page_route(services, path, handler, "read")

    return [
        page("/", home),
        page("/experiments", experiments.experiments_page),
        page("/experiments/{experiment_id}", experiments.experiment_page),
        page("/experiments/{experiment_id}/runs.csv", experiments.runs_csv),
        page("/runs/{run_id}", runs.run_page),
        page("/compare", runs.compare_page),
        page("/models", models.models_page),
        page("/models/{name}", models.model_page),
        page("/models/{name}/versions/{version}", models.version_page),
        page("/deployments", deployments.deployments_page),
        page("/deployments/{name}", deployments.deployment_page),
        page("/alerts", deployments.alerts_page),
        page("/pipelines", pipelines.pipelines_page),
        page("/pipelines/runs/{run_id}", pipelines.pipeline_run_page),
        page("/pipelines/runs/{run_id}/jobs/{job}/log", pipelines.job_log_page),
        with_access(Route("/projects/switch", switch_project, methods=["GET"]), "public"),
        *static_routes(),
    ]
