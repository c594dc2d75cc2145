"""The MLflow endpoint table is what is routed, under every prefix the client and UI use."""
import pytest

from modelyard.server import api
from modelyard.server.routing import MLFLOW_PREFIXES

CLIENT_PATHS = [
    # (method, path) the 3.17.2 client and the UI call; each must be in the table.
    ("POST", "/experiments/create"), ("GET", "/experiments/get"), ("GET", "/experiments/get-by-name"),
    ("POST", "/experiments/search"), ("POST", "/experiments/update"), ("POST", "/experiments/delete"),
    ("POST", "/experiments/restore"), ("POST", "/experiments/set-experiment-tag"),
    ("POST", "/experiments/delete-experiment-tag"),
    ("POST", "/runs/create"), ("GET", "/runs/get"), ("POST", "/runs/update"), ("POST", "/runs/delete"),
    ("POST", "/runs/restore"), ("POST", "/runs/search"), ("POST", "/runs/log-metric"),
    ("POST", "/runs/log-parameter"), ("POST", "/runs/set-tag"), ("POST", "/runs/delete-tag"),
    ("POST", "/runs/log-batch"), ("POST", "/runs/log-inputs"), ("POST", "/runs/outputs"),
    ("GET", "/metrics/get-history"), ("GET", "/metrics/get-history-bulk-interval"),
    ("POST", "/logged-models"), ("GET", "/logged-models/{model_id}"), ("PATCH", "/logged-models/{model_id}"),
    ("DELETE", "/logged-models/{model_id}"), ("POST", "/logged-models/search"),
    ("PATCH", "/logged-models/{model_id}/tags"), ("DELETE", "/logged-models/{model_id}/tags/{tag_key}"),
    ("POST", "/registered-models/create"), ("GET", "/registered-models/get"),
    ("POST", "/registered-models/rename"), ("PATCH", "/registered-models/update"),
    ("DELETE", "/registered-models/delete"), ("GET", "/registered-models/search"),
    ("POST", "/registered-models/get-latest-versions"), ("POST", "/registered-models/set-tag"),
    ("DELETE", "/registered-models/delete-tag"), ("POST", "/registered-models/alias"),
    ("GET", "/registered-models/alias"), ("DELETE", "/registered-models/alias"),
    ("POST", "/model-versions/create"), ("GET", "/model-versions/get"), ("PATCH", "/model-versions/update"),
    ("DELETE", "/model-versions/delete"), ("GET", "/model-versions/search"),
    ("GET", "/model-versions/get-download-uri"), ("POST", "/model-versions/transition-stage"),
    ("POST", "/model-versions/set-tag"), ("DELETE", "/model-versions/delete-tag"),
    ("GET", "/server-info"),
]


def test_every_path_the_client_calls_is_in_the_endpoint_table():
    table = {(e.method, e.path) for e in api.mlflow_endpoints()}
    missing = [p for p in CLIENT_PATHS if p not in table]
    assert missing == []


def test_no_endpoint_is_listed_twice():
    table = [(e.method, e.path) for e in api.mlflow_endpoints()]
    assert len(table) == len(set(table))


@pytest.mark.parametrize("prefix", MLFLOW_PREFIXES)
def test_every_prefix_serves_the_table(server, prefix):
    import requests

    r = requests.get(server.url + prefix + "/experiments/get", params={"experiment_id": "0"})
    assert r.status_code == 200 and r.json()["experiment"]["name"] == "Default"


def test_an_unknown_route_is_a_json_endpoint_not_found(server):
    import requests

    r = requests.get(server.url + "/api/2.0/mlflow/nothing/here")
    assert r.status_code == 404 and r.json()["error_code"] == "ENDPOINT_NOT_FOUND"


def test_a_wrong_method_is_405(server):
    import requests

    r = requests.get(server.url + "/api/2.0/mlflow/runs/create")
    assert r.status_code == 405


def test_health_version_and_server_info(server):
    import requests

    assert requests.get(server.url + "/health").text == "OK"
    assert requests.get(server.url + "/version").status_code == 200
    info = requests.get(server.url + "/api/3.0/mlflow/server-info").json()
    assert info["store_type"] == "SqlStore" and info["multipart_uploads_enabled"] is False
