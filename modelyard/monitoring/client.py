"""A small client of modelyard's monitoring API, for the CLI and scripts (stdlib HTTP only).

The tracking URI may carry a project (``http://host:5000/p/fraud``); the token comes from
``MLFLOW_TRACKING_TOKEN`` as for the mlflow client.
"""
from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request

import orjson

__all__ = ["MonitoringClient", "ClientError"]


class ClientError(Exception):
    """The server refused a request (its message) or could not be reached."""


class MonitoringClient:
    def __init__(self, tracking_uri: str, token: str | None = None, timeout: float = 300):
        self.base = tracking_uri.rstrip("/") + "/api/modelyard/v1"
        self.token = token if token is not None else os.environ.get("MLFLOW_TRACKING_TOKEN")
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict | None = None, **params) -> dict:
        url = self.base + path
        query = {k: v for k, v in params.items() if v is not None}
        if query:
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        data = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY) if body is not None else None
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return orjson.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                detail = orjson.loads(exc.read())
                message = f"{detail.get('error_code')}: {detail.get('message')}"
            except Exception:  # noqa: BLE001 - not our error shape
                message = f"HTTP {exc.code}"
            raise ClientError(message) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ClientError(f"cannot reach {self.base}: {getattr(exc, 'reason', exc)}") from None

    def monitors(self, deployment: str | None = None) -> list[dict]:
        return self.call("GET", "/monitors/list", deployment=deployment)["monitors"]

    def create_monitor(self, name: str, deployment: str, config: dict) -> dict:
        return self.call("POST", "/monitors/create", {"name": name, "deployment": deployment, "config": config})["monitor"]

    def evaluate(self, name: str, at_ms: int | None = None) -> dict:
        return self.call("POST", "/monitors/evaluate", {"name": name, "at_ms": at_ms})["evaluation"]

    def report(self, name: str) -> dict:
        return self.call("GET", "/monitors/report", name=name)

    def upload_reference(self, name: str, profile: dict, model_name: str | None, model_version: str | None,
                         source: str | None) -> dict:
        body = {"name": name, "profile": profile, "model_name": model_name,
                "model_version": None if model_version is None else str(model_version), "source": source}
        return self.call("POST", "/references/create", {k: v for k, v in body.items() if v is not None})["reference"]
