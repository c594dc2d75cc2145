"""The shared acceptance flow: the unmodified mlflow client trains, logs, registers and loads a model.

The script lives outside the repository, in ``shared/acceptance`` beside the clone (``../shared``
from the repository root), so the same check runs against any MLflow-compatible server.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

BASIC_FLOW = Path(__file__).resolve().parents[1].parent / "shared" / "acceptance" / "mlflow_basic_flow.py"


def iris_models(client: MlflowClient) -> set[str]:
    return {m.name for m in client.search_registered_models(filter_string="name LIKE 'iris-%'", max_results=1000)}


def test_the_basic_mlflow_flow_passes_end_to_end(server, client):
    if not BASIC_FLOW.exists():
        if os.environ.get("CI"):
            pytest.fail(f"the acceptance script is missing: {BASIC_FLOW}")
        pytest.skip(f"no acceptance script at {BASIC_FLOW}")
    before = iris_models(client)

    result = subprocess.run([sys.executable, str(BASIC_FLOW), "--url", server.url],
                            capture_output=True, text=True, timeout=600)

    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n--- server log ---\n{server.log()[-4000:]}"
    assert "basic flow: ok" in result.stdout
    # The flow left one new registered model behind, its champion alias on version 1.
    new = iris_models(client) - before
    assert len(new) == 1, new
    assert client.get_model_version_by_alias(new.pop(), "champion").version == "1"
