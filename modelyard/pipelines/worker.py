"""Running triggered runs: claim a queued run of the pipeline from the server, run it, repeat.

A trigger (an alert rule's action, ``modelyard pipeline trigger``, a webhook handler calling
``POST /api/modelyard/v1/pipelines/runs/trigger``) queues a run on the server; the server does not
run it, since the pipeline's code and data live where the runner is. ``modelyard pipeline worker``
waits for queued runs; ``modelyard pipeline run --queued`` runs those waiting and exits (for cron
or a scheduled CI job). Claiming is atomic, so several workers can share a queue.
"""
from __future__ import annotations

import dataclasses
import time

from modelyard.pipelines.client import Client, ServerError
from modelyard.pipelines.runner import PipelineFailed, RunOptions, default_runner_name, run_pipeline
from modelyard.pipelines.spec import Pipeline

__all__ = ["run_queued"]


def run_queued(pipeline: Pipeline, options: RunOptions, once: bool = True, poll: float = 5.0) -> bool:
    """Run queued runs of ``pipeline``; with ``once``, until none is left. True if every run finished."""
    client = Client(options.tracking_uri)
    runner = default_runner_name()
    all_ok = True
    ran = 0
    while True:
        try:
            claimed = client.api("POST", "/pipelines/runs/claim", {"pipelines": [pipeline.name], "runner": runner})
        except ServerError as exc:
            if once:
                raise PipelineFailed(f"cannot reach {options.tracking_uri}: {exc.message}") from None
            time.sleep(poll)
            continue
        run = claimed.get("run")
        if run is None:
            if once:
                if not ran:
                    options.out.write(f"no queued run of {pipeline.name}\n")
                return all_ok
            time.sleep(poll)
            continue
        ran += 1
        trigger = run.get("trigger") or {}
        options.out.write(f"claimed {pipeline.name} #{run['number']} (trigger: {trigger.get('type', '?')})\n")
        try:
            result = run_pipeline(pipeline, dataclasses.replace(options, run_id=run["run_id"], trigger=trigger))
            all_ok = all_ok and result.ok
        except PipelineFailed as exc:
            options.out.write(f"{pipeline.name} #{run['number']} could not run: {exc}\n")
            try:
                client.api("POST", "/pipelines/runs/update", {"run_id": run["run_id"], "status": "FAILED",
                                                               "message": str(exc)})
            except ServerError:
                pass
            all_ok = False
