"""What the serving tests share: a registry server of their own, models logged through the real
``mlflow`` client, and ``modelyard serve`` processes. (No tests here.)
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import requests

from conftest import ServerProcess, free_port, unique

__all__ = ["ServeProcess", "Registry", "metric", "ECHO_MODEL", "BROKEN_MODEL"]

ECHO_MODEL = textwrap.dedent('''
    import time

    import mlflow
    import numpy as np


    class Echo(mlflow.pyfunc.PythonModel):
        """Each row times params["scale"]; sleeps params["sleep"] seconds; refuses negative inputs."""

        def predict(self, context, model_input, params=None):
            params = params or {}
            if params.get("sleep"):
                time.sleep(float(params["sleep"]))
            arr = np.asarray(model_input, dtype=float)
            if (arr < 0).any():
                raise ValueError("negative inputs are refused")
            return arr * float(params.get("scale", 1.0))


    mlflow.models.set_model(Echo())
''')

BROKEN_MODEL = textwrap.dedent('''
    import mlflow


    class Broken(mlflow.pyfunc.PythonModel):
        def load_context(self, context):
            raise RuntimeError("this version is broken on purpose")

        def predict(self, context, model_input, params=None):
            return model_input


    mlflow.models.set_model(Broken())
''')


class Registry:
    """A modelyard server and helpers to log and register models in it with the real client."""

    def __init__(self, server: ServerProcess, workdir: Path):
        import mlflow

        self.server = server
        self.url = server.url
        self.workdir = workdir
        mlflow.set_tracking_uri(self.url)
        self.client = mlflow.MlflowClient(self.url)

    def _log(self, name: str, log) -> str:
        import mlflow

        mlflow.set_tracking_uri(self.url)
        with mlflow.start_run():
            info = log(name)
        return str(info.registered_model_version)

    def iris(self, name: str, *, flip: bool = False) -> str:
        """A LogisticRegression on iris (tensor signature float64 (-1, 4)); ``flip`` reverses the labels,
        so two versions answer differently. Returns the version."""
        import mlflow.sklearn
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression

        X, y = load_iris(return_X_y=True)
        model = LogisticRegression(max_iter=300).fit(X, 2 - y if flip else y)
        return self._log(name, lambda n: mlflow.sklearn.log_model(model, name="model", input_example=X[:2],
                                                                  registered_model_name=n))

    def frame_model(self, name: str) -> str:
        """A LogisticRegression trained on a DataFrame with named columns (column signature)."""
        import mlflow.sklearn
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression

        frame = load_iris(as_frame=True)
        X = frame.data.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
        model = LogisticRegression(max_iter=300).fit(X, frame.target)
        return self._log(name, lambda n: mlflow.sklearn.log_model(model, name="model", input_example=X.head(3),
                                                                  registered_model_name=n))

    def code_model(self, name: str, code: str, *, example: bool = True) -> str:
        """A python_function model from code (tensor (-1, 3), params scale and sleep)."""
        import mlflow.pyfunc
        import numpy as np
        from mlflow.models import infer_signature

        path = self.workdir / f"{unique('model')}.py"
        path.write_text(code)
        signature = infer_signature(np.zeros((2, 3)), np.zeros((2, 3)), params={"scale": 1.0, "sleep": 0.0})
        return self._log(name, lambda n: mlflow.pyfunc.log_model(
            name="model", python_model=str(path), signature=signature, registered_model_name=n,
            **({"input_example": np.ones((2, 3))} if example else {})))

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)

    def api(self, method: str, path: str, **kw):
        return requests.request(method, self.url + "/api/modelyard/v1" + path, **kw)


class ServeProcess:
    """``modelyard serve`` in a child process; stdout (the access log) and stderr kept in files."""

    def __init__(self, workdir: Path, tracking_uri: str, *args: str, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = list(args)
        self.tracking_uri = tracking_uri
        self.env = {**os.environ, **(env or {})}
        tag = unique("serve")
        self.out_path = Path(workdir) / f"{tag}.out"
        self.err_path = Path(workdir) / f"{tag}.err"
        self.proc: subprocess.Popen | None = None
        self.session = requests.Session()

    def start(self, timeout: float = 120) -> "ServeProcess":
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelyard", "serve", *self.args, "--port", str(self.port),
             "--tracking-uri", self.tracking_uri],
            stdout=open(self.out_path, "wb"), stderr=open(self.err_path, "wb"), env=self.env,
            start_new_session=True,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"modelyard serve exited with {self.proc.returncode}:\n{self.stderr()}")
            try:
                if requests.get(self.url + "/ping", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"modelyard serve did not start in {timeout}s:\n{self.stderr()}")

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace") if self.out_path.exists() else ""

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace") if self.err_path.exists() else ""

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.session.close()
        return self.proc.returncode if self.proc else None

    def invoke(self, body=None, *, data: bytes | None = None, content_type="application/json", **kw):
        headers = {"Content-Type": content_type, **kw.pop("headers", {})}
        if data is None:
            import json

            data = json.dumps(body).encode()
        return self.session.post(self.url + "/invocations", data=data, headers=headers, timeout=60, **kw)

    def get(self, path: str, **kw):
        return self.session.get(self.url + path, timeout=30, **kw)

    def deployment(self) -> dict:
        return self.get("/deployment").json()

    def metrics(self) -> str:
        return self.get("/metrics").text


def metric(text: str, name: str, **labels) -> float:
    """The sum of a metric's samples whose labels include ``labels`` (0 when there are none)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$", line)
        if not m or m[1] != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m[3] or ""))
        if all(found.get(k) == str(v) for k, v in labels.items()):
            total += float(m[4])
    return total


def wait_for(predicate, timeout: float = 30, interval: float = 0.1, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
