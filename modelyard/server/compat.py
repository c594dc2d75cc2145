"""Where modelyard bends to what the mlflow client does, in one place.

Each quirk says which client behaviour it serves; ``tests/test_compat.py`` has a test per quirk,
named after that behaviour. Anything the wire contract simply requires (field names, error codes)
lives with its endpoint; what is here would look wrong without the reason beside it.
"""
from __future__ import annotations

from typing import Any

import orjson

from modelyard.errors import MlflowError

__all__ = [
    "REPORTED_MLFLOW_VERSION", "RUN_ID_ALIASES", "HISTORY_PAGE_CAP", "logged_model_status", "undouble_json",
]

# The 3.x client asks /version before tracing, and sends spans over OTLP (/v1/traces) only to a
# server of 3.4 or later. modelyard has no OTLP endpoint, so it reports the last version before it
# and the client keeps to the REST trace API.
REPORTED_MLFLOW_VERSION = "3.3.0"

# The client sends both spellings of a run's id on every run call (runs/get, log-metric, ...).
RUN_ID_ALIASES = ("run_uuid",)

# log_model reads each metric's history with max_results=25000; a larger page is capped, as the
# reference server does, rather than refused.
HISTORY_PAGE_CAP = 25_000

# finalize_logged_model may send the status enum by number instead of by name.
_LOGGED_MODEL_STATUS_NUMBERS = {"0": "LOGGED_MODEL_STATUS_UNSPECIFIED", "1": "LOGGED_MODEL_PENDING",
                                "2": "LOGGED_MODEL_READY", "3": "LOGGED_MODEL_UPLOAD_FAILED"}


def logged_model_status(value: Any) -> Any:
    return _LOGGED_MODEL_STATUS_NUMBERS.get(str(value), value)


def undouble_json(data: Any) -> Any:
    """Older clients post their JSON body encoded a second time, as a JSON string."""
    if isinstance(data, str):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            raise MlflowError("Malformed JSON in request body.", "BAD_REQUEST") from None
    return data
