"""MLflow's rules for names and values, checked before anything is stored."""
from __future__ import annotations

import math
import posixpath
import re

from modelyard.errors import MlflowError
from modelyard.server.schema import invalid_value

__all__ = [
    "validate_key", "validate_length", "validate_run_id", "validate_experiment_name", "validate_time_ms",
    "MAX_PARAM_VALUE", "MAX_TAG_VALUE", "MAX_EXPERIMENT_TAG_VALUE", "MAX_KEY",
]

MAX_KEY = 250
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_EXPERIMENT_TAG_VALUE = 20000
MAX_REGISTRY_TAG_VALUE = 100_000
MAX_EXPERIMENT_NAME = 500

_KEY_CHARS = re.compile(r"^[/\w.\- :]*$")
_RUN_ID = re.compile(r"^[a-zA-Z0-9][\w\-]{0,255}$")
_KEY_MESSAGE = (
    "Names may only contain alphanumerics, underscores (_), dashes (-), periods (.), spaces ( ), "
    "colon(:) and slashes (/)."
)


def validate_key(key: str, what: str = "name") -> None:
    """Metric, param and tag keys: a restricted alphabet and a normalized relative path."""
    if not isinstance(key, str) or not _KEY_CHARS.match(key):
        raise MlflowError.invalid(invalid_value(what, key, _KEY_MESSAGE))
    norm = posixpath.normpath(key) if key else key
    if key == "" or norm != key or norm == "." or norm.startswith("..") or norm.startswith("/"):
        raise MlflowError.invalid(invalid_value(
            what, key, "Names may be treated as files in certain cases, and must not resolve to other "
            "names when treated as such. This name would resolve to " + repr(posixpath.normpath(key))))
    if len(key) > MAX_KEY:
        raise MlflowError.invalid(invalid_value(what, key, f"length {len(key)} exceeds the limit {MAX_KEY}"))


def validate_length(value: str, limit: int, what: str) -> None:
    if value is not None and len(value) > limit:
        raise MlflowError.invalid(
            f"{what} '{value[:40]}...' had length {len(value)}, which exceeded length limit of {limit}")


# Timestamps the monitoring code turns into dates: 1970-01-01 to 9999-12-31, in milliseconds.
MAX_TIME_MS = 253_402_300_799_999


def validate_time_ms(value: int | None, name: str) -> None:
    if value is not None and not 0 <= value <= MAX_TIME_MS:
        raise MlflowError.invalid(f"'{name}' must be milliseconds since 1970 (0 to {MAX_TIME_MS}), got {value}.")


def validate_run_id(run_id: str) -> None:
    if not _RUN_ID.match(run_id or ""):
        raise MlflowError.invalid(f"Invalid run ID: '{run_id}'")


def validate_experiment_name(name) -> None:
    if name is None or name == "":
        raise MlflowError.invalid("Invalid experiment name: ''")
    if not isinstance(name, str) or not name.strip():
        raise MlflowError.invalid(f"Invalid experiment name: '{name}'")
    if len(name) > MAX_EXPERIMENT_NAME:
        raise MlflowError.invalid(
            f"Experiment name '{name[:40]}...' had length {len(name)}, which exceeded length limit of 500")


