"""Every route the server answers, assembled from one module per resource."""
from __future__ import annotations

from modelyard.server.api import artifacts, experiments, logged_models, meta, metrics, runs
from modelyard.server.api import model_versions, projects, registered_models, session
from modelyard.server.api import deployments
from modelyard.server.api import alerts, monitors, notifications, predictions
from modelyard.server.api import pipelines, webhooks

__all__ = ["mlflow_endpoints", "modelyard_endpoints", "other_routes"]


def mlflow_endpoints() -> list:
    """MLflow's REST API as one table, served under /api/{2,3}.0/mlflow and /ajax-api/..."""
    return [*meta.ENDPOINTS, *experiments.ENDPOINTS, *runs.ENDPOINTS, *metrics.ENDPOINTS, *logged_models.ENDPOINTS,
            *artifacts.ENDPOINTS, *webhooks.with_events([*registered_models.ENDPOINTS, *model_versions.ENDPOINTS]),
            *webhooks.ENDPOINTS]


def modelyard_endpoints() -> list:
    """modelyard's own API, served under /api/modelyard/v1 (JSON, snake_case, MLflow's error shape)."""
    return [*meta.OWN_ENDPOINTS, *projects.ENDPOINTS, *deployments.ENDPOINTS, *predictions.ENDPOINTS, *monitors.ENDPOINTS,
            *alerts.ENDPOINTS, *notifications.ENDPOINTS,
            *pipelines.ENDPOINTS, *webhooks.MODELYARD_ENDPOINTS]


def other_routes(services) -> list:
    from modelyard import ui  # the pages come last: every other route wins over them

    return [*meta.routes(), *artifacts.routes(services), *session.routes(services),
            *notifications.routes(services), *ui.routes(services)]
