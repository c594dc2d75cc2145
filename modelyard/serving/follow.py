"""Following the registry and the deployment record, and reporting back (heartbeats).

A thread of its own, every ``poll_interval`` seconds:

1. reads the deployment record; a higher ``generation`` than the one served means someone (a
   pipeline's deploy step, an operator) posted a new spec: it becomes the spec served;
2. resolves each arm's alias to the version it points to now;
3. when an arm should serve another version, loads that version, warms it up on its own serving
   example and on recent live requests, and only then swaps it in (one assignment on the event
   loop): no request fails or waits on a load. A version that fails to load leaves everything as
   it was, is reported (``/deployment``, ``/metrics``, the heartbeat) and retried with backoff;
4. sends a heartbeat: status, the versions answering, the endpoint.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path

from modelyard.serving.client import ServerClient, ServerError
from modelyard.serving.loader import LoadedModel, load_version, warm_up
from modelyard.serving.options import ServeOptions
from modelyard.serving.spec import Arm, DeploymentSpec
from modelyard.serving.traffic import Lane, Router

__all__ = ["Follower", "ServeError"]

log = logging.getLogger("modelyard.serving.follow")

_MAX_BACKOFF_S = 300.0


class ServeError(Exception):
    """The model server cannot start: a message for the user."""


class Follower:
    def __init__(self, options: ServeOptions, spec: DeploymentSpec | None, model_root: Path):
        self.options = options
        self.spec = spec  # None: serve the deployment recorded under options.name
        self.generation = 0
        self.model_root = Path(model_root)
        self.server = None  # the ModelServer, once it exists
        self.replica_id = f"{socket.gethostname()}:{options.port}:{os.getpid()}"
        self._client: ServerClient | None = None
        self._failures: dict[str, tuple[int, float, str]] = {}  # version -> (attempts, retry at, error)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def client(self) -> ServerClient:
        if self._client is None:
            self._client = ServerClient(self.options.tracking_uri)
        return self._client

    # -- start-up (before serving) ------------------------------------------------------------------
    def bootstrap(self) -> Router:
        """Register (or read) the deployment, load and warm every version it needs; the first router."""
        try:
            if self.spec is None:
                record = self.client.get_deployment(self.options.name)
                if record is None:
                    raise ServeError(f"no deployment named {self.options.name!r} on {self.options.tracking_uri}: "
                                     "give a model URI or a deployment file to create it")
                self.spec = DeploymentSpec.from_record(record)
            else:
                record = self._register("starting")
            self.generation = record["generation"]
            versions, shadow_version = self._resolve(self.spec)
            lanes: dict[str, Lane] = {}
            for version in dict.fromkeys([*versions, *([shadow_version] if shadow_version else [])]):
                model = load_version(self.spec.model_name, version, self.model_root)
                warm_up(model)
                lanes[version] = self._lane(model)
        except ServerError as exc:
            raise ServeError(exc.message if exc.status == 0 else f"{self.options.tracking_uri}: {exc.message}") from None
        except ServeError:
            raise
        except Exception as exc:  # noqa: BLE001 - any loader error is a start-up failure with its reason
            raise ServeError(f"cannot load {self.spec.model_name if self.spec else self.options.name}: "
                             f"{type(exc).__name__}: {exc}") from None
        return self._router(self.spec, versions, shadow_version, lanes, self.generation)

    def _register(self, status: str) -> dict:
        record = self.spec.to_record()
        record.update(endpoint_url=self.options.endpoint_url, status=status)
        return self.client.put_deployment(record)

    def _lane(self, model: LoadedModel) -> Lane:
        self.server_loads(model.version, "loaded")
        return Lane(model, max(1, self.options.max_batch_rows), self.options.max_batch_wait_ms / 1000.0,
                    on_batch=self._on_batch)

    def _on_batch(self, version: str, rows: int, requests: int, seconds: float) -> None:
        if self.server is not None:
            self.server.on_batch(version, rows, requests, seconds)

    def server_loads(self, version: str, outcome: str) -> None:
        if self.server is not None:
            self.server.m_loads.inc((version, outcome))

    def _resolve(self, spec: DeploymentSpec) -> tuple[list[str], str | None]:
        """Each arm's version now (aliases looked up), and the shadow's."""
        cache: dict[str, str] = {}

        def version_of(arm: Arm) -> str:
            if arm.version is not None:
                return arm.version
            if arm.alias not in cache:
                cache[arm.alias] = self.client.alias_version(spec.model_name, arm.alias)
            return cache[arm.alias]

        return [version_of(a) for a in spec.arms], (version_of(spec.shadow) if spec.shadow else None)

    @staticmethod
    def _router(spec, versions, shadow_version, lanes: dict[str, Lane], generation: int) -> Router:
        arms = [(arm, lanes[v]) for arm, v in zip(spec.arms, versions)]
        return Router(spec, arms, lanes[shadow_version] if shadow_version else None, generation,
                      (tuple(versions), shadow_version))

    # -- the loop ---------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="modelyard-follow", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        try:
            self._heartbeat("stopped")
        except Exception as exc:  # noqa: BLE001 - shutting down: report, never hang or fail on it
            log.warning("last heartbeat failed: %s", exc)
        if self._client is not None:
            self._client.close()

    def _run(self) -> None:
        self._heartbeat_quietly()
        while not self._stop.wait(self.options.poll_interval):
            self.tick()

    def tick(self) -> None:
        """One round: follow the record and the aliases, then heartbeat. Never raises."""
        try:
            self._follow()
            self.server.problems.pop("server", None)
            self.server.problems.pop("follow", None)
        except ServerError as exc:
            if exc.status == 0 or exc.status >= 500:
                self._problem("server", f"cannot reach the server: {exc}")
            else:  # an alias deleted, a deployment refused: keep serving what serves now, and say so
                self._problem("follow", f"cannot follow the registry: {exc}; still serving "
                                        f"{self.server.router.versions}")
        except Exception as exc:  # noqa: BLE001 - the loop must survive anything
            log.exception("following the registry failed")
            self._problem("follow", f"{type(exc).__name__}: {exc}")
        self._heartbeat_quietly()

    def _problem(self, topic: str, message: str) -> None:
        if self.server.problems.get(topic) != message:
            log.warning("%s", message)
        self.server.problems[topic] = message

    def _follow(self) -> None:
        record = self.client.get_deployment(self.spec.name)
        if record is None:
            # Deleted while this replica serves it: record it again, so what runs stays visible.
            record = self._register("serving")
        if record["generation"] > self.generation:
            spec = DeploymentSpec.from_record(record)
            log.warning("deployment %s changed (generation %s): %s", spec.name, record["generation"], spec.describe())
        else:
            spec = self.spec
        versions, shadow_version = self._resolve(spec)
        current = self.server.router
        generation = max(record["generation"], self.generation)
        if spec == current.spec and (tuple(versions), shadow_version) == current.resolved:
            self.spec, self.generation = spec, generation
            self.server.problems.pop("load", None)  # whatever failed to load is no longer wanted
            return
        lanes = {lane.version: lane for lane in current.lanes}
        for version in dict.fromkeys([*versions, *([shadow_version] if shadow_version else [])]):
            if version in lanes:
                continue
            model = self._load(version, current)
            if model is None:
                return  # keep serving what serves now; the failure is reported
            lanes[version] = self._lane(model)
        router = self._router(spec, versions, shadow_version, lanes, generation)
        self.server.install_threadsafe(router)
        self.spec, self.generation = spec, router.generation
        log.warning("now serving %s: %s", spec.name, ", ".join(f"{a.label}=v{v}" for a, v in zip(spec.arms, versions)))

    def _load(self, version: str, current: Router) -> LoadedModel | None:
        attempts, retry_at, error = self._failures.get(version, (0, 0.0, ""))
        if time.monotonic() < retry_at:
            self._problem("load", error)  # still wanted, still failing: waiting to retry
            return None
        model = None
        try:
            model = load_version(self.spec.model_name, version, self.model_root)
            live = [body for lane in current.lanes for body in lane.recent]
            for warning in warm_up(model, live):
                log.warning("%s", warning)
        except Exception as exc:  # noqa: BLE001 - a bad version must never take the old one down
            if model is not None:
                model.release()
            attempts += 1
            backoff = min(_MAX_BACKOFF_S, self.options.poll_interval * 2 ** attempts)
            message = f"version {version} failed to load ({type(exc).__name__}: {exc}); still serving " \
                      f"{current.versions}; retrying in {backoff:.0f}s"
            self._failures[version] = (attempts, time.monotonic() + backoff, message)
            self.server_loads(version, "failed")
            self._problem("load", message)
            return None
        self._failures.pop(version, None)
        self.server.problems.pop("load", None)
        return model

    # -- heartbeats -------------------------------------------------------------------------------------
    def _heartbeat(self, status: str | None = None) -> None:
        server = self.server
        problems = server.problems
        beat = {
            "name": self.spec.name, "replica_id": self.replica_id, "endpoint_url": self.options.endpoint_url,
            "status": status or server.status, "model_version": server.router.versions,
        }
        if problems:
            beat["message"] = "; ".join(problems.values())
        try:
            self.client.heartbeat(beat)
        except ServerError as exc:
            if exc.status == 404 and status != "stopped":
                self._register(beat["status"])
                self.client.heartbeat(beat)
            else:
                raise

    def _heartbeat_quietly(self) -> None:
        try:
            self._heartbeat()
        except ServerError as exc:
            self._problem("server", f"heartbeat failed: {exc}")
