"""The one error type: an MLflow error code and a message.

The HTTP status comes from MLflow's table (``ERROR_CODE_TO_HTTP_STATUS`` on the reference server);
the app's handler writes ``{"error_code", "message"}``.
"""
from __future__ import annotations

__all__ = ["MlflowError", "http_status"]

_STATUS = {
    "BAD_REQUEST": 400,
    "INVALID_PARAMETER_VALUE": 400,
    "RESOURCE_ALREADY_EXISTS": 400,
    "UNAUTHENTICATED": 401,
    "CUSTOMER_UNAUTHORIZED": 401,
    "PERMISSION_DENIED": 403,
    "RESOURCE_DOES_NOT_EXIST": 404,
    "NOT_FOUND": 404,
    "ENDPOINT_NOT_FOUND": 404,
    "ABORTED": 409,
    "RESOURCE_CONFLICT": 409,
    "ALREADY_EXISTS": 409,
    "REQUEST_LIMIT_EXCEEDED": 429,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL_ERROR": 500,
    "INVALID_STATE": 500,
    "DATA_LOSS": 500,
    "NOT_IMPLEMENTED": 501,
    "TEMPORARILY_UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


def http_status(error_code: str) -> int:
    return _STATUS.get(error_code, 500)


class MlflowError(Exception):
    """Raised anywhere in modelyard for an error a client should see."""

    def __init__(self, message: str, error_code: str = "INVALID_PARAMETER_VALUE"):
        super().__init__(message)
        self.message = message
        self.error_code = error_code

    @property
    def status_code(self) -> int:
        return http_status(self.error_code)

    def to_dict(self) -> dict:
        return {"error_code": self.error_code, "message": self.message}

    @classmethod
    def invalid(cls, message: str) -> "MlflowError":
        return cls(message, "INVALID_PARAMETER_VALUE")

    @classmethod
    def not_found(cls, message: str) -> "MlflowError":
        return cls(message, "RESOURCE_DOES_NOT_EXIST")

    @classmethod
    def exists(cls, message: str) -> "MlflowError":
        return cls(message, "RESOURCE_ALREADY_EXISTS")
