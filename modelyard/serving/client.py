"""The model server's view of modelyard's server: plain HTTP, like the ``mlflow`` client.

``modelyard serve`` never imports the server's code; it reads aliases through MLflow's REST API
and writes deployments, heartbeats and prediction logs through modelyard's own API. Credentials
come from the variables the ``mlflow`` client reads (``MLFLOW_TRACKING_TOKEN``, or
``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``), so one token serves both.
A client is used by one thread (``requests.Session`` is not shared across threads).
"""
from __future__ import annotations

import os
from typing import Any

import orjson
import requests

__all__ = ["ServerClient", "ServerError", "MODELYARD_API"]

MODELYARD_API = "/api/modelyard/v1"


class ServerError(Exception):
    """The server answered with an error, or could not be reached (``status`` 0)."""

    def __init__(self, status: int, message: str, error_code: str | None = None):
        super().__init__(f"{status} {error_code or ''} {message}".strip())
        self.status = status
        self.message = message
        self.error_code = error_code


class ServerClient:
    def __init__(self, tracking_uri: str, timeout: float = 10.0):
        self.base = tracking_uri.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        elif user and password:
            self.session.auth = (user, password)
        self.session.headers["Content-Type"] = "application/json"

    def close(self) -> None:
        self.session.close()

    def _call(self, method: str, path: str, body: Any = None, params: dict | None = None,
              timeout: float | None = None, raw: bytes | None = None) -> dict:
        data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
        try:
            resp = self.session.request(method, self.base + path, data=data, params=params,
                                        timeout=timeout or self.timeout)
        except requests.RequestException as exc:
            raise ServerError(0, f"cannot reach {self.base}: {_reason(exc)}") from None
        if resp.status_code >= 400:
            try:
                err = resp.json()
                raise ServerError(resp.status_code, err.get("message", resp.text[:500]), err.get("error_code"))
            except ValueError:
                raise ServerError(resp.status_code, resp.text[:500]) from None
        try:
            return resp.json() if resp.content else {}
        except ValueError:
            raise ServerError(resp.status_code, f"not JSON: {resp.text[:200]}") from None

    # -- the registry (MLflow's API) ------------------------------------------------------------
    def alias_version(self, model_name: str, alias: str) -> str:
        """The version an alias points to now."""
        found = self._call("GET", "/api/2.0/mlflow/registered-models/alias",
                           params={"name": model_name, "alias": alias})
        return str(found["model_version"]["version"])

    # -- deployments (modelyard's API) ------------------------------------------------------------
    def put_deployment(self, record: dict) -> dict:
        return self._call("POST", MODELYARD_API + "/deployments", record)["deployment"]

    def get_deployment(self, name: str) -> dict | None:
        try:
            return self._call("GET", MODELYARD_API + "/deployments/get", params={"name": name})["deployment"]
        except ServerError as exc:
            if exc.status == 404 and exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def heartbeat(self, beat: dict) -> dict:
        return self._call("POST", MODELYARD_API + "/deployments/heartbeat", beat)["deployment"]

    # -- prediction logs ------------------------------------------------------------------------
    def log_predictions(self, body: bytes, timeout: float) -> dict:
        """POST an already-encoded ``{"requests": [...]}`` body."""
        return self._call("POST", MODELYARD_API + "/predictions/log", raw=body, timeout=timeout)


def _reason(exc: BaseException) -> str:
    """The innermost cause of a requests error, in a few words ("Connection refused")."""
    while exc.__context__ is not None or (exc.args and isinstance(exc.args[0], BaseException)):
        exc = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc.__context__
    text = str(exc)
    if "] " in text and text.startswith("[Errno"):
        text = text.split("] ", 1)[1]
    return f"{type(exc).__name__}: {text}"[:300]
