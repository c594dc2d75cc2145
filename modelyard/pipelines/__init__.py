"""ML pipelines: ``modelyard.yml`` jobs run locally or on Ray, cached by content, tracked as MLflow runs.

The Python API the ``modelyard pipeline`` commands are a thin layer over::

    from modelyard.pipelines import load, run_pipeline, RunOptions
    pipeline = load("modelyard.yml")
    result = run_pipeline(pipeline, RunOptions(tracking_uri="http://127.0.0.1:5000"))

The runner is a client of the modelyard server (HTTP only, as the ``mlflow`` client is); it never
imports the server. See :mod:`modelyard.pipelines.spec` for the file format.
"""
from __future__ import annotations

import json
import os

from modelyard.pipelines.spec import DEFAULT_FILE, Job, Pipeline, SpecError, load, loads

__all__ = ["load", "loads", "Pipeline", "Job", "SpecError", "DEFAULT_FILE", "run_pipeline", "dry_run", "RunOptions",
           "RunResult", "PipelineFailed", "gitlab_ci", "job_params"]


def __getattr__(name: str):
    # The runner and the CI export load on first use, so `import modelyard.pipelines` stays light.
    if name in ("run_pipeline", "dry_run", "RunOptions", "RunResult", "PipelineFailed"):
        from modelyard.pipelines import runner

        return getattr(runner, name)
    if name == "gitlab_ci":
        from modelyard.pipelines.ci import gitlab_ci

        return gitlab_ci
    raise AttributeError(name)


def job_params() -> dict:
    """Inside a job: the params it declared, as a nested dict (``{"train": {"C": 1.0}}``)."""
    return json.loads(os.environ.get("MODELYARD_PARAMS") or "{}")
