"""The model server: ``modelyard serve`` puts a registered model behind an HTTP endpoint.

It is a client of modelyard's server (it never imports the server's code): it loads models
through MLflow's pyfunc loader from the registry, batches concurrent requests into model calls,
splits traffic between versions, follows aliases and the deployment record, and ships every
prediction to the server's prediction log. Heavy imports (numpy, mlflow) happen on first use.
"""
from __future__ import annotations

from modelyard.serving.options import ServeOptions

__all__ = ["ServeOptions", "run", "DeploymentSpec", "SpecError", "ServeError"]


def __getattr__(name: str):
    if name == "run":
        from modelyard.serving.runner import run

        return run
    if name in ("DeploymentSpec", "SpecError"):
        from modelyard.serving import spec

        return getattr(spec, name)
    if name == "ServeError":
        from modelyard.serving.follow import ServeError

        return ServeError
    raise AttributeError(name)
