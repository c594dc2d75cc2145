"""The runner's HTTP client of the modelyard server: JSON calls and artifact files.

The runner is a client of the server exactly as the ``mlflow`` client is, over HTTP only. This
module uses the standard library (one keep-alive connection per thread), so a fully cached run
does not pay for importing an HTTP stack: its whole budget is a tenth of a second. Credentials
come from the variables the ``mlflow`` client reads: ``MLFLOW_TRACKING_TOKEN`` (Bearer) or
``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (Basic).
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

__all__ = ["Client", "ServerError"]

MODELYARD_API = "/api/modelyard/v1"
MLFLOW_API = "/api/2.0/mlflow"
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"
_RETRY_STATUS = (429, 502, 503, 504)


def _http_errors():
    import http.client

    return http.client.HTTPException


class ServerError(Exception):
    """The server answered an error: MLflow's ``{error_code, message}`` and the HTTP status."""

    def __init__(self, status: int, error_code: str, message: str):
        super().__init__(f"{error_code}: {message}")
        self.status = status
        self.error_code = error_code
        self.message = message


class Client:
    def __init__(self, tracking_uri: str, timeout: float = 120, environ: dict | None = None):
        environ = os.environ if environ is None else environ
        parts = urlsplit(tracking_uri.rstrip("/"))
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"the tracking URI must be an http(s):// URL of a modelyard server, not {tracking_uri!r}")
        self.tracking_uri = tracking_uri.rstrip("/")
        self.scheme = parts.scheme
        self.host = parts.hostname or "localhost"
        self.port = parts.port
        self.base = parts.path.rstrip("/")
        self.timeout = timeout
        self.headers = {"User-Agent": "modelyard-pipelines"}
        token = environ.get("MLFLOW_TRACKING_TOKEN")
        user, password = environ.get("MLFLOW_TRACKING_USERNAME"), environ.get("MLFLOW_TRACKING_PASSWORD")
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        elif user and password:
            import base64

            self.headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self._insecure = environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true"
        self._local = threading.local()

    # -- transport ---------------------------------------------------------------------------------
    def _conn(self, fresh: bool = False):
        import http.client

        conn = getattr(self._local, "conn", None)
        if conn is None or fresh:
            if conn is not None:
                conn.close()
            if self.scheme == "https":
                import ssl

                ctx = ssl._create_unverified_context() if self._insecure else ssl.create_default_context()
                conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=ctx)
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _send(self, method: str, path: str, body=None, headers: dict | None = None, stream: bool = False,
              retries: int = 4):
        """One request on this thread's connection, retried on a dropped connection or a busy server."""
        all_headers = {**self.headers, **(headers or {})}
        for attempt in range(retries + 1):
            conn = self._conn(fresh=attempt > 0)
            try:
                if hasattr(body, "seek"):
                    body.seek(0)
                conn.request(method, self.base + path, body=body, headers=all_headers)
                resp = conn.getresponse()
            except (ConnectionError, TimeoutError, OSError, _http_errors()) as exc:
                self._local.conn = None
                if attempt == retries:
                    raise ServerError(0, "TEMPORARILY_UNAVAILABLE",
                                      f"cannot reach the server at {self.tracking_uri}: {exc}") from exc
                time.sleep(min(0.2 * 2 ** attempt, 3))
                continue
            if resp.status in _RETRY_STATUS and attempt < retries:
                resp.read()
                time.sleep(min(0.2 * 2 ** attempt, 3))
                continue
            if stream and resp.status < 300:
                return resp
            data = resp.read()
            if resp.status >= 300:
                raise _error(resp.status, data)
            return data
        raise AssertionError("unreachable")

    def call(self, method: str, path: str, body: dict | None = None, query: dict | None = None) -> dict:
        """A JSON call; ``path`` is absolute (starting with /api/...)."""
        if query:
            path += "?" + urlencode({k: v for k, v in query.items() if v is not None}, doseq=True)
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload else None
        if self.scheme == "http":
            data = self._send_plain(method, path, payload, headers)
        else:
            data = self._send(method, path, payload, headers)
        return json.loads(data) if data.strip() else {}

    def _send_plain(self, method: str, path: str, body: bytes | None, headers: dict | None, retries: int = 4) -> bytes:
        """A JSON exchange over plain HTTP on this thread's socket (see :class:`_Plain`), retried like ``_send``."""
        all_headers = {**self.headers, **(headers or {})}
        for attempt in range(retries + 1):
            conn = getattr(self._local, "plain", None)
            try:
                if conn is None:
                    conn = self._local.plain = _Plain(self.host, self.port or 80, self.timeout)
                status, data = conn.exchange(method, self.base + path, body, all_headers)
            except (OSError, ValueError) as exc:
                if conn is not None:
                    conn.close()
                self._local.plain = None
                if attempt == retries:
                    raise ServerError(0, "TEMPORARILY_UNAVAILABLE",
                                      f"cannot reach the server at {self.tracking_uri}: {exc}") from exc
                time.sleep(min(0.2 * 2 ** attempt, 3))
                continue
            if status in _RETRY_STATUS and attempt < retries:
                time.sleep(min(0.2 * 2 ** attempt, 3))
                continue
            if status >= 300:
                raise _error(status, data)
            return data
        raise AssertionError("unreachable")

    def api(self, method: str, path: str, body: dict | None = None, **query) -> dict:
        """modelyard's own API (``/api/modelyard/v1``)."""
        return self.call(method, MODELYARD_API + path, body, query or None)

    def mlflow(self, method: str, path: str, body: dict | None = None, **query) -> dict:
        """MLflow's REST API (``/api/2.0/mlflow``)."""
        return self.call(method, MLFLOW_API + path, body, query or None)

    # -- artifacts ---------------------------------------------------------------------------------
    @staticmethod
    def _artifact_path(artifact_uri: str, rel: str) -> str:
        if not artifact_uri.startswith("mlflow-artifacts:"):
            raise ValueError(f"the runner stores files through the server; got artifact URI {artifact_uri!r}")
        root = artifact_uri[len("mlflow-artifacts:"):].lstrip("/")
        full = f"{root}/{rel}".strip("/") if rel else root
        return ARTIFACTS_API + "/" + quote(full)

    def upload(self, artifact_uri: str, rel: str, local: Path) -> None:
        """PUT one file under a run's artifact URI (streamed from disk)."""
        size = local.stat().st_size
        with open(local, "rb") as f:
            self._send("PUT", self._artifact_path(artifact_uri, rel), f,
                       {"Content-Type": "application/octet-stream", "Content-Length": str(size)})

    def upload_tree(self, artifact_uri: str, rel: str, local: Path) -> None:
        if local.is_file():
            self.upload(artifact_uri, rel, local)
            return
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            self.upload(artifact_uri, f"{rel}/{path.relative_to(local).as_posix()}", path)

    def download(self, artifact_uri: str, rel: str, dest: Path) -> None:
        """GET one file into ``dest``, written beside it first and moved into place."""
        import shutil
        import tempfile

        resp = self._send("GET", self._artifact_path(artifact_uri, rel), stream=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                shutil.copyfileobj(resp, f, 1 << 20)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            self._local.conn = None  # the response may be half read
            raise


class _Plain:
    """One keep-alive HTTP/1.1 connection for small JSON exchanges, on a bare socket.

    ``http.client`` costs more to import (email parsing, ssl) than a fully cached pipeline run
    spends talking to the server; this reads exactly what a JSON answer needs: the status, the
    headers, a ``Content-Length`` or chunked body.
    """

    def __init__(self, host: str, port: int, timeout: float):
        import socket

        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.host = host if port == 80 else f"{host}:{port}"
        self.buf = b""

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buf += chunk

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def exchange(self, method: str, path: str, body: bytes | None, headers: dict) -> tuple[int, bytes]:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}", "Accept: application/json",
                 f"Content-Length: {len(body or b'')}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        status_line = self._line()
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ValueError(f"not an HTTP answer: {status_line[:80]!r}")
        status = int(parts[1])
        answer: dict[str, str] = {}
        while True:
            line = self._line()
            if not line:
                break
            name, _, value = line.decode("latin-1").partition(":")
            answer[name.strip().lower()] = value.strip()
        if "content-length" in answer:
            data = self._take(int(answer["content-length"]))
        elif answer.get("transfer-encoding", "").lower() == "chunked":
            pieces = []
            while True:
                size = int(self._line().split(b";", 1)[0], 16)
                if size == 0:
                    while self._line():
                        pass
                    break
                pieces.append(self._take(size))
                self._take(2)
            data = b"".join(pieces)
        else:  # the body runs to the end of the connection
            try:
                while True:
                    self._fill()
            except ConnectionError:
                pass
            data, self.buf = self.buf, b""
            answer["connection"] = "close"
        if answer.get("connection", "").lower() == "close":
            self.close()
            self.sock = _Closed()
        return status, data


class _Closed:
    """A connection the server closed: the next exchange opens a new one."""

    def sendall(self, data):
        raise ConnectionError("closed")

    def close(self):
        pass


def _error(status: int, data: bytes) -> ServerError:
    try:
        body: Any = json.loads(data)
        return ServerError(status, body.get("error_code", "INTERNAL_ERROR"), body.get("message", str(body)))
    except (ValueError, AttributeError):
        text = data.decode(errors="replace")[:500]
        return ServerError(status, {404: "ENDPOINT_NOT_FOUND"}.get(status, "INTERNAL_ERROR"), text or f"HTTP {status}")
