"""Running one job's command: the function both executors call, in a process or in a Ray task.

:func:`execute` takes a plain dict (so it can cross to a Ray worker) and returns one: it removes
the job's old outputs, runs the script or callable as a child process (its own process group, so
a timeout kills everything it started), retries as the job says, checks that every declared
output exists, hashes the outputs, and stores the log and the outputs under the job's MLflow run
through the server. The runner records the result.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

__all__ = ["execute", "script_text"]

_PRINT_LOCK = threading.Lock()


def script_text(lines: list[str]) -> str:
    """A bash script that echoes each line before running it and stops at the first failure (as GitLab CI)."""
    out = ["set -eo pipefail"]
    for line in lines:
        out.append(f"printf '%s\\n' {shlex.quote('$ ' + line)}")
        out.append(line)
    return "\n".join(out) + "\n"


def _flatten_numbers(data, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            out.update(_flatten_numbers(v, f"{prefix}{k}."))
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        out[prefix.rstrip(".")] = float(data)
    return out


def _command(payload: dict, root: Path, result_file: Path) -> tuple[list[str], dict]:
    env = {}
    if payload["kind"] == "script":
        return ["bash", "-c", script_text(payload["script"])], env
    env["MODELYARD_CALL"] = json.dumps({"target": payload["run"], "args": payload.get("args") or {},
                                        "result_file": str(result_file)})
    return [payload.get("python") or sys.executable, "-m", "modelyard.pipelines._call"], env


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _run_once(cmd: list[str], env: dict, cwd: Path, log, timeout: float | None, name: str,
              on_line: Callable[[str, str], None] | None) -> tuple[int | None, bool]:
    """Run the command, teeing its output to the log and to ``on_line``; returns (exit code, timed out)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    timer = None
    timed_out = threading.Event()
    if timeout:
        def expire():
            timed_out.set()
            _kill(proc)
        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()
    try:
        for raw in iter(proc.stdout.readline, b""):
            log.write(raw)
            log.flush()
            if on_line is not None:
                on_line(name, raw.decode(errors="replace").rstrip("\n"))
        proc.wait()
    finally:
        if timer is not None:
            timer.cancel()
        if proc.poll() is None:
            _kill(proc)
    return proc.returncode, timed_out.is_set()


def _echo(name: str, line: str) -> None:
    with _PRINT_LOCK:
        print(f"[{name}] {line}", flush=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def execute(payload: dict, on_line: Callable[[str, str], None] | None = None) -> dict:
    """Run one job. ``payload``: name, kind, script | run + args, root, env, outputs, metrics, timeout,
    retry, log_path, and for storing: tracking_uri, artifact_uri. With ``echo`` set and no ``on_line``,
    output lines are printed (a Ray worker's prints reach the driver)."""
    from modelyard.pipelines.cache import Hasher

    started = time.time()
    root = Path(payload.get("root") or os.getcwd())
    name = payload["name"]
    if on_line is None and payload.get("echo"):
        on_line = _echo
    log_path = Path(payload.get("log_path") or tempfile.mkstemp(prefix=f"modelyard-{name}-", suffix=".log")[1])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    for rel in payload.get("outputs", []):
        _remove(root / rel)  # a job must write its outputs afresh: stale ones would hide a failure
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
    result_file = Path(tempfile.mkstemp(prefix="modelyard-result-", suffix=".json")[1])
    cmd, extra_env = _command(payload, root, result_file)
    env = {**os.environ, **payload.get("env", {}), **extra_env}
    attempts, code, timed_out, message = 0, None, False, None
    with open(log_path, "wb") as log:
        for attempt in range(1 + int(payload.get("retry") or 0)):
            attempts = attempt + 1
            if attempt:
                note = f"--- retry {attempt} of {payload['retry']} ---\n"
                log.write(note.encode())
                if on_line:
                    on_line(name, note.rstrip())
            code, timed_out = _run_once(cmd, env, root, log, payload.get("timeout"), name, on_line)
            if code == 0 and not timed_out:
                break
    status = "SUCCEEDED" if code == 0 and not timed_out else "FAILED"
    if timed_out:
        message = f"timed out after {payload['timeout']:g} s"
    elif code != 0:
        message = f"exited with status {code}"
    metrics: dict[str, float] = {}
    result = None
    try:
        text = result_file.read_text()
        if text.strip():
            result = json.loads(text)
            metrics.update(_flatten_numbers(result.get("value")) if isinstance(result, dict) else {})
            if isinstance(result, dict) and result.get("error"):
                message = message or result["error"]
    except (OSError, ValueError):
        pass
    finally:
        result_file.unlink(missing_ok=True)
    outputs = {}
    if status == "SUCCEEDED":
        hasher = Hasher(root)
        missing = []
        for rel in payload.get("outputs", []):
            described = hasher.describe(rel)
            if described is None:
                missing.append(rel)
            else:
                outputs[rel] = described
        if missing:
            status, message = "FAILED", f"did not write its output{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
        if payload.get("metrics"):
            try:
                metrics.update(_flatten_numbers(json.loads((root / payload["metrics"]).read_text())))
            except FileNotFoundError:
                status, message = "FAILED", f"did not write its metrics file {payload['metrics']}"
            except ValueError as exc:
                status, message = "FAILED", f"metrics file {payload['metrics']} is not JSON: {exc}"
    ended = time.time()
    stored_error = None
    if payload.get("artifact_uri") and payload.get("tracking_uri"):
        from modelyard.pipelines.client import Client, ServerError

        client = Client(payload["tracking_uri"])
        try:
            client.upload(payload["artifact_uri"], f"logs/{name}.log", log_path)
            if status == "SUCCEEDED":
                for rel in outputs:
                    client.upload_tree(payload["artifact_uri"], f"outputs/{rel}", root / rel)
        except (ServerError, OSError) as exc:
            # Outputs that are not stored cannot be restored later: the job does not count as done.
            stored_error = f"could not store its log and outputs: {exc}"
            if status == "SUCCEEDED":
                status, message = "FAILED", stored_error
    return {"name": name, "status": status, "attempts": attempts, "exit_code": code, "message": message,
            "outputs": outputs, "metrics": metrics, "log_path": str(log_path),
            "start_time": int(started * 1000), "end_time": int(ended * 1000)}
