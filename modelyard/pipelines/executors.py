"""Where jobs run: ``local`` (child processes on this machine) or ``ray`` (a Ray task per job).

Both run the same :func:`modelyard.pipelines.execute.execute`, so a pipeline gives the same results
on either. The local executor keeps to a CPU budget (``--jobs``, default the machine's CPUs) and
its GPU count: a job starts when its ``resources`` fit beside the running ones (a job asking for
more than the whole budget runs alone). The Ray executor hands each job's resources to Ray and
lets its scheduler place it, on ``--ray-address`` or on a local Ray started for the run.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from modelyard.pipelines.execute import execute
from modelyard.pipelines.spec import Resources

__all__ = ["Executor", "LocalExecutor", "RayExecutor", "make_executor"]


class Executor:
    name = "base"

    def can_start(self, resources: Resources) -> bool:
        return True

    def reserve(self, resources: Resources) -> None:
        """Count a job that will be submitted in this pass (``submit`` takes the reservation over)."""

    def check(self, resources: Resources) -> str | None:
        """Why a job with these resources can never run here, or None."""
        return None

    def submit(self, payload: dict, resources: Resources) -> Future:
        raise NotImplementedError

    def close(self) -> None:
        pass


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, cpus: float | None = None, gpus: float | None = None,
                 on_line: Callable[[str, str], None] | None = None):
        self.cpus = float(cpus or os.cpu_count() or 1)
        self.gpus = float(gpus if gpus is not None else _visible_gpus())
        self.on_line = on_line
        self._used_cpus = 0.0
        self._used_gpus = 0.0
        self._running = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max(4, int(self.cpus) * 4), thread_name_prefix="modelyard-job")

    def check(self, resources: Resources) -> str | None:
        if resources.gpus > self.gpus:
            return f"needs {resources.gpus:g} GPU(s); this machine has {self.gpus:g} (set --gpus or use the ray executor)"
        return None

    def can_start(self, resources: Resources) -> bool:
        with self._lock:
            if self._running == 0:
                return True
            return (self._used_cpus + resources.cpus <= self.cpus + 1e-9
                    and self._used_gpus + resources.gpus <= self.gpus + 1e-9)

    def reserve(self, resources: Resources) -> None:
        with self._lock:
            self._used_cpus += resources.cpus
            self._used_gpus += resources.gpus
            self._running += 1

    def submit(self, payload: dict, resources: Resources) -> Future:
        # reserve() counted the job when the scheduler picked it
        future = self._pool.submit(execute, payload, self.on_line)

        def release(_):
            with self._lock:
                self._used_cpus -= resources.cpus
                self._used_gpus -= resources.gpus
                self._running -= 1

        future.add_done_callback(release)
        return future

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, address: str | None, root: Path, num_cpus: int | None = None):
        import ray

        self.ray = ray
        self.remote = address is not None and address.startswith("ray://")
        self.started_here = address is None
        kwargs: dict = {"ignore_reinit_error": True, "log_to_driver": True, "logging_level": "WARNING"}
        if self.remote:
            # A remote cluster gets the pipeline's folder as its working directory.
            kwargs["runtime_env"] = {"working_dir": str(root), "excludes": [".git", ".modelyard", "__pycache__"]}
        if address is None:
            # "local" starts a Ray of our own even when another one runs on this machine.
            kwargs.update(address="local", include_dashboard=False, num_cpus=num_cpus or os.cpu_count())
        else:
            kwargs["address"] = address
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(**kwargs)
        self._task = ray.remote(max_retries=0)(execute)
        self._root = root

    def check(self, resources: Resources) -> str | None:
        total = self.ray.cluster_resources()
        if resources.gpus and resources.gpus > total.get("GPU", 0):
            return f"needs {resources.gpus:g} GPU(s); the Ray cluster has {total.get('GPU', 0):g}"
        if resources.cpus > total.get("CPU", 0):
            return f"needs {resources.cpus:g} CPUs; the Ray cluster has {total.get('CPU', 0):g}"
        return None

    def submit(self, payload: dict, resources: Resources) -> Future:
        options: dict = {"num_cpus": resources.cpus, "num_gpus": resources.gpus}
        if resources.memory:
            options["memory"] = resources.memory
        if self.remote:
            payload = {**payload, "root": None, "log_path": None}
        payload = {**payload, "echo": True}
        return self._task.options(**options).remote(payload).future()

    def close(self) -> None:
        # Stops a Ray started for the run; on a cluster it only disconnects this driver.
        self.ray.shutdown()


def _visible_gpus() -> float:
    devices = os.environ.get("CUDA_VISIBLE_DEVICES")
    if devices is not None:
        return float(len([d for d in devices.split(",") if d.strip() and d.strip() != "-1"]))
    return float(len([p for p in Path("/dev").glob("nvidia[0-9]*")]))


def make_executor(kind: str, root: Path, *, ray_address: str | None = None, jobs: int | None = None,
                  gpus: float | None = None, on_line: Callable[[str, str], None] | None = None) -> Executor:
    if kind == "local":
        return LocalExecutor(cpus=jobs, gpus=gpus, on_line=on_line)
    if kind == "ray":
        try:
            return RayExecutor(ray_address, root, num_cpus=jobs)
        except ImportError:
            raise RuntimeError("the ray executor needs Ray: pip install 'modelyard[ray]'") from None
    raise ValueError(f"unknown executor {kind!r}: local or ray")
