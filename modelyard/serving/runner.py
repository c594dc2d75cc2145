"""Starting the model server: one process, or several sharing one listening socket.

Each process bootstraps on its own (registers the deployment, loads and warms the model), then
runs uvicorn with uvloop and httptools over the socket the parent bound; each batches its own
traffic and follows the registry on its own, like replicas behind a load balancer.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path

from modelyard.serving.follow import Follower, ServeError
from modelyard.serving.options import ServeOptions
from modelyard.serving.spec import DeploymentSpec, SpecError

__all__ = ["run", "spec_from_options"]

log = logging.getLogger("modelyard.serving")


def spec_from_options(options: ServeOptions) -> DeploymentSpec | None:
    """The spec to register, or None to serve the deployment the server records under ``--name``."""
    if options.model_uri and options.deployment:
        raise SpecError("give a model URI or --deployment, not both")
    if options.model_uri:
        return DeploymentSpec.from_model_uri(options.model_uri, options.name)
    if options.deployment:
        return DeploymentSpec.from_file(options.deployment, options.name)
    if options.name:
        return None
    raise SpecError("say what to serve: models:/NAME@ALIAS, models:/NAME/VERSION, --deployment FILE, or --name "
                    "of a deployment recorded in the server")


def run(options: ServeOptions) -> None:
    """Serve until interrupted. Raises :class:`SpecError` or :class:`ServeError` with a message for the user."""
    spec = spec_from_options(options)
    sock = socket.socket(socket.AF_INET6 if ":" in options.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((options.host, options.port))
    except OSError as exc:
        raise ServeError(f"cannot listen on {options.host}:{options.port}: {exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    if options.workers <= 1:
        _worker(options, spec, sock)
        return
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(options, spec, sock), daemon=False) for _ in range(options.workers)]
    for p in procs:
        p.start()

    def stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    code = 0
    try:
        while all(p.exitcode is None for p in procs):
            procs[0].join(0.5)
        code = next(p.exitcode for p in procs if p.exitcode is not None)
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.exitcode is None:
                p.terminate()  # SIGTERM: each worker shuts down cleanly (last heartbeat, log flush)
        for p in procs:
            p.join(60)
    if code:
        raise ServeError(f"a worker exited with status {code}")


def _worker_main(options: ServeOptions, spec: DeploymentSpec | None, sock: socket.socket) -> None:
    try:
        _worker(options, spec, sock)
    except ServeError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(1)


def _worker(options: ServeOptions, spec: DeploymentSpec | None, sock: socket.socket) -> None:
    import uvicorn

    logging.basicConfig(level=options.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s")
    _point_mlflow_at(options.tracking_uri)
    from modelyard.serving.app import ModelServer
    from modelyard.serving.predlog import PredictionLog

    temporary = options.model_dir is None
    model_root = Path(tempfile.mkdtemp(prefix="modelyard-serve-")) if temporary else Path(options.model_dir)
    try:
        follower = Follower(options, spec, model_root)
        router = follower.bootstrap()
        predlog = None
        if options.log_predictions:
            predlog = PredictionLog(options.tracking_uri, router.spec.name, router.spec.model_name,
                                    max_rows=options.prediction_buffer_rows,
                                    input_names={lane.version: lane.model.input_names for lane in router.lanes})
        server = ModelServer(options, router, predlog)
        follower.server, server.follower = server, follower
        for lane in router.lanes:
            server.m_loads.inc((lane.version, "loaded"))
        log.warning("serving %s on %s (%s)", router.spec.name, options.endpoint_url, router.spec.describe())
        settle_garbage_collector()
        config = uvicorn.Config(
            server, loop="uvloop", http="httptools", lifespan="on", access_log=False,
            log_level=options.log_level, server_header=False, date_header=False, timeout_keep_alive=30,
            backlog=2048, proxy_headers=False,  # no X-Forwarded-* rewriting on the hot path
        )
        # uvicorn shuts down cleanly on SIGTERM, then raises the signal again; exit 0 then, through
        # the finally below (which removes the downloaded models), rather than die of it.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        if temporary:
            shutil.rmtree(model_root, ignore_errors=True)


def settle_garbage_collector() -> None:
    """Move everything alive at start (MLflow, pandas, the model: a million objects) out of the
    collector's sight, and collect the young generation less often. Requests keep their inputs
    alive until the prediction log ships them, so objects survive into the older generations and
    full collections come often; each used to rescan all of that. Measured at 32 concurrent
    single-row requests: about 30 of the 115 microseconds of CPU a request cost with the log on."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 50)


def _point_mlflow_at(tracking_uri: str) -> None:
    """MLflow's loader reads the registry through the same server, over HTTP."""
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    os.environ["MLFLOW_REGISTRY_URI"] = tracking_uri
    # Flavors check this to behave as they do under `mlflow models serve`.
    os.environ["_MLFLOW_IS_IN_SERVING_ENVIRONMENT"] = "true"
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
