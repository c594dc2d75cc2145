"""modelyard: a self-hosted MLOps platform that speaks MLflow's REST API."""

__version__ = "0.1.0"

__all__ = ["__version__"]
