"""The pipeline runner: plan, skip what the cache holds, run the rest, record everything.

One run goes like this:

1. The plan (rules, targets, manual jobs) says which jobs are in the run.
2. Every job's cache key is computed from what is on disk, and the server is asked in the same
   call that starts the run (a fully cached run costs two HTTP calls: start, end).
3. Jobs are taken in DAG order as their needs end. Each job's key is computed again when it
   becomes ready, from its inputs as they are then, so a key is never stale. A key the server
   knows (a successful job with that key) skips the job: its outputs are restored from the
   artifact store unless the files on disk already match. Otherwise the job runs on the executor
   with its MLflow run (``MLFLOW_RUN_ID``) made first, and its log and outputs are stored.
4. A failed job stops what depends on it; the run ends FAILED and the CLI exits non-zero.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from modelyard.pipelines import cache as caching
from modelyard.pipelines.ci import ci_tags, ci_variables, git_commit
from modelyard.pipelines.client import Client, ServerError
from modelyard.pipelines.plan import Plan, make_plan
from modelyard.pipelines.rules import RuleContext
from modelyard.pipelines.spec import Job, Pipeline

if TYPE_CHECKING:
    from concurrent.futures import Future

__all__ = ["RunOptions", "RunResult", "run_pipeline", "dry_run", "PipelineFailed"]


class JobState:
    """What the runner knows of a job of this pipeline run (the ML steps read their upstream's)."""

    __slots__ = ("status", "result", "metrics", "mlflow_run_id", "outputs_run_id", "outputs_artifact_uri",
                 "outputs", "cache_key", "message")

    def __init__(self, status: str = "PENDING", cache_key: str | None = None, message: str | None = None,
                 result: dict | None = None, metrics: dict | None = None, mlflow_run_id: str | None = None,
                 outputs_run_id: str | None = None, outputs_artifact_uri: str | None = None,
                 outputs: dict | None = None):
        self.status, self.cache_key, self.message = status, cache_key, message
        self.result, self.metrics, self.outputs = result or {}, metrics or {}, outputs or {}
        self.mlflow_run_id, self.outputs_run_id, self.outputs_artifact_uri = mlflow_run_id, outputs_run_id, outputs_artifact_uri


class PipelineFailed(Exception):
    """The run could not start (bad target, unreachable server, a job that can never run here)."""


@dataclass
class RunOptions:
    tracking_uri: str
    executor: str = "local"
    ray_address: str | None = None
    jobs: int | None = None          # local executor's CPU budget
    gpus: float | None = None
    force: bool = False
    force_jobs: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    only: tuple[str, ...] = ()
    manual: tuple[str, ...] = ()
    run_key: str | None = None
    run_id: str | None = None         # a queued run to execute
    trigger: dict | None = None
    changes_since: str | None = None
    quiet: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)


@dataclass
class RunResult:
    run: dict
    states: dict[str, JobState]
    ok: bool = False


class _Reporter:
    """One line per job event, and the jobs' output prefixed with their name."""

    SYMBOL = {"RUNNING": "▶", "SUCCEEDED": "✓", "CACHED": "↷", "FAILED": "✗", "SKIPPED": "·", "CANCELED": "■"}

    def __init__(self, out: TextIO, quiet: bool):
        self.out, self.quiet = out, quiet
        self.lock = threading.Lock()
        self.width = 12

    def event(self, status: str, name: str, detail: str = "") -> None:
        with self.lock:
            self.out.write(f"{self.SYMBOL.get(status, ' ')} {name:<{self.width}} {status.lower():<9} {detail}".rstrip() + "\n")
            self.out.flush()

    def line(self, name: str, text: str) -> None:
        if self.quiet:
            return
        with self.lock:
            self.out.write(f"  [{name}] {text}\n")
            self.out.flush()

    def say(self, text: str) -> None:
        with self.lock:
            self.out.write(text + "\n")
            self.out.flush()


def _params_env(pipeline: Pipeline, job: Job) -> dict:
    values = pipeline.param_values(job)
    nested: dict = {}
    for key, value in values.items():
        node = nested
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return nested


class _Run:
    def __init__(self, pipeline: Pipeline, options: RunOptions):
        self.pipeline = pipeline
        self.options = options
        self.client = Client(options.tracking_uri)
        self.report = _Reporter(options.out, options.quiet)
        self.hasher = caching.Hasher(pipeline.root)
        self.states: dict[str, JobState] = {}
        self.keys: dict[str, str] = {}
        self.parts: dict[str, dict] = {}
        self.known: dict[str, dict] = {}  # cache key -> lookup entry
        self.spec_keys: dict[str, str] = {}
        self.tried: set[str] = set()  # keys already looked up and missed
        self.pending_records: list[dict] = []
        self.record_lock = threading.Lock()
        self.tags = {**ci_tags()}
        commit = git_commit(pipeline.root)
        self.commit = commit
        if commit:
            self.tags.setdefault("mlflow.source.git.commit", commit)
            self.tags.setdefault("modelyard.git.commit", commit)
        self.run: dict = {}
        self.log_dir = pipeline.root / caching.STATE_DIR / "logs"

    # -- planning and keys -----------------------------------------------------------------------------
    def plan(self) -> Plan:
        ctx = RuleContext.detect(self.pipeline.root, self.pipeline.variables, self.options.changes_since)
        try:
            return make_plan(self.pipeline, ctx, list(self.options.targets), list(self.options.only),
                             list(self.options.manual))
        except KeyError as exc:
            raise PipelineFailed(f"no job named {exc.args[0]!r} in {self.pipeline.path.name}") from None

    def key_for(self, name: str, plan: Plan, upstream_keys: dict[str, str]) -> tuple[str, dict]:
        job = self.pipeline.jobs[name]
        parts = caching.key_parts(self.pipeline, job, self.hasher, upstream_keys)
        return caching.cache_key(parts), parts

    def speculative_keys(self, plan: Plan, recorded: dict[str, str]) -> dict[str, str]:
        """Keys as the files on disk stand now (the prefetch; each is checked again when its job is ready)."""
        keys: dict[str, str] = {}
        for name in self.pipeline.order():
            ups = {d: keys.get(d) or recorded.get(d) for d in self.pipeline.deps(name)
                   if plan.entries[d].included or d in recorded or d in keys}
            if any(v is None for v in ups.values()):
                continue
            try:
                keys[name], _ = self.key_for(name, plan, ups)
            except FileNotFoundError:
                continue
        return keys

    # -- server calls ------------------------------------------------------------------------------------
    def spec_summary(self) -> dict:
        return {"stages": self.pipeline.stages, "file": self.pipeline.path.name,
                "jobs": [{"name": j.name, "stage": j.stage, "kind": j.kind, "needs": self.pipeline.deps(j.name),
                          **({"when": j.when} if j.when != "on_success" else {})}
                         for j in self.pipeline.jobs.values()]}

    def record(self, jobs: list[dict], status: str | None = None, message: str | None = None) -> dict:
        body: dict = {"run_id": self.run["run_id"], "jobs": jobs}
        if status:
            body["status"] = status
        if message:
            body["message"] = message
        answer = self.client.api("POST", "/pipelines/runs/update", body)
        self.run = answer.get("run", self.run)
        return {j["name"]: j for j in answer.get("jobs", [])}

    def flush(self) -> None:
        with self.record_lock:
            pending, self.pending_records = self.pending_records, []
        if pending:
            self.record(pending)

    def lookup(self, items: list[tuple[str, str]], explain: bool = False) -> None:
        items = [(n, k) for n, k in items if k not in self.known]
        if not items:
            return
        answer = self.client.api("POST", "/pipelines/cache/lookup", {
            "pipeline": self.pipeline.name, "lookup": [{"job": n, "cache_key": k} for n, k in items],
            "explain": explain})
        for entry in answer.get("cache", []):
            self.known[entry["cache_key"]] = entry

    # -- jobs -------------------------------------------------------------------------------------------------
    def restore(self, hit: dict) -> None:
        """Put a cached job's outputs on disk from the artifact store, unless they are there already."""
        import shutil

        manifest = hit.get("outputs") or {}
        root = self.pipeline.root
        for rel, want in manifest.items():
            have = self.hasher.describe(rel)
            if have is not None and have["hash"] == want["hash"]:
                continue
            uri = hit.get("outputs_artifact_uri")
            if not uri:
                raise PipelineFailed(f"the stored outputs of {rel} are gone")
            target = root / rel
            if want["type"] == "file":
                if target.is_dir():
                    shutil.rmtree(target)
                self.client.download(uri, f"outputs/{rel}", target)
            else:
                if target.exists() and not target.is_dir():
                    target.unlink()
                target.mkdir(parents=True, exist_ok=True)
                for sub, (digest, _size) in want["files"].items():
                    if self.hasher.file(target / sub) != digest:
                        self.client.download(uri, f"outputs/{rel}/{sub}", target / sub)
                for extra in [p for p in target.rglob("*") if p.is_file()]:
                    if extra.relative_to(target).as_posix() not in want["files"]:
                        extra.unlink()
            got = self.hasher.describe(rel)
            if got is None or got["hash"] != want["hash"]:
                raise PipelineFailed(f"restored output {rel} does not match its recorded hash")

    def job_env(self, job: Job, mlflow_run_id: str | None) -> dict:
        env = {k: str(v) for k, v in job.variables.items()}
        # `python` in a script is the interpreter the runner runs in, as in an activated virtualenv.
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
        env.update({
            "MLFLOW_TRACKING_URI": self.options.tracking_uri,
            "MODELYARD_TRACKING_URI": self.options.tracking_uri,
            "MODELYARD_PIPELINE_RUN_ID": self.run.get("run_id", ""),
            "MODELYARD_PARAMS": json.dumps(_params_env(self.pipeline, job)),
        })
        if mlflow_run_id:
            env["MLFLOW_RUN_ID"] = mlflow_run_id
        if self.run.get("experiment_id"):
            env["MLFLOW_EXPERIMENT_ID"] = str(self.run["experiment_id"])
        return env

    def lineage(self, names: set[str]) -> list[dict]:
        """Dataset inputs for the tables these jobs read (for the register step: everything upstream)."""
        from modelyard.pipelines.lineage import dataset_entity, is_dataset

        producers = {}
        for pname, pjob in self.pipeline.jobs.items():
            for out in pjob.outputs:
                producers[out] = pname
        seen, out = set(), []
        for name in self.pipeline.order():
            if name not in names:
                continue
            for rel in self.pipeline.jobs[name].inputs:
                if rel in seen or not is_dataset(self.pipeline.root, rel):
                    continue
                seen.add(rel)
                producer = next((p for o, p in producers.items() if rel == o or rel.startswith(o + "/")), None)
                state = self.states.get(producer) if producer else None
                produced_by = (producer, state.outputs_artifact_uri) if state and state.outputs_artifact_uri else None
                digest = self.hasher.content_hash(rel) or ""
                entity = dataset_entity(self.pipeline.root, rel, digest, self.options.tracking_uri, produced_by)
                tags = [{"key": "mlflow.data.context", "value": name}]
                if producer:
                    tags.append({"key": "modelyard.produced_by", "value": producer})
                out.append({"tags": tags, "dataset": entity})
        return out

    def log_lineage(self, name: str, mlflow_run_id: str) -> None:
        datasets = self.lineage({name})
        if datasets:
            try:
                self.client.mlflow("POST", "/runs/log-inputs", {"run_id": mlflow_run_id, "datasets": datasets})
            except ServerError as exc:
                self.report.say(f"  [{name}] could not log its datasets: {exc.message}")


def _metric_list(metrics: dict[str, float], t: int) -> list[dict]:
    return [{"key": k[:250], "value": v, "timestamp": t, "step": 0} for k, v in metrics.items()]


def _param_list(values: dict) -> list[dict]:
    return [{"key": k, "value": json.dumps(v) if isinstance(v, (dict, list)) else str(v)} for k, v in values.items()]


def run_pipeline(pipeline: Pipeline, options: RunOptions) -> RunResult:
    """Run the pipeline against the server at ``options.tracking_uri``."""
    r = _Run(pipeline, options)
    plan = r.plan()
    included = plan.included
    if not included:
        raise PipelineFailed("no job to run: " + "; ".join(f"{n}: {e.reason}" for n, e in plan.entries.items()))
    r.report.width = max(12, *(len(n) for n in included))

    # Keys of needed jobs that are not in this invocation (``--only``): recorded in this run (CI) or as on disk.
    recorded: dict[str, str] = {}
    upstream_records: dict[str, dict] = {}
    if options.run_key or options.run_id:
        upstream_records = _existing_run_jobs(r, options)
        recorded = {n: j["cache_key"] for n, j in upstream_records.items()
                    if j.get("cache_key") and j.get("status") in ("SUCCEEDED", "CACHED")}
    speculative = r.speculative_keys(plan, recorded)
    r.spec_keys = speculative
    forced = set(pipeline.jobs) if options.force else set(options.force_jobs)
    if forced:
        forced = pipeline.downstream(forced)
    lookup = [{"job": n, "cache_key": k} for n, k in speculative.items()
              if n in included and n not in forced and pipeline.jobs[n].cache]
    trigger = options.trigger
    planned = included
    if options.run_key:
        # Each CI job runs one job of the run: the run plans every job, and ends when they all have.
        full = make_plan(pipeline, RuleContext.detect(pipeline.root, pipeline.variables, options.changes_since),
                         manual=list(options.manual))
        planned = list(dict.fromkeys([*full.included, *included]))
    start_body = {
        "pipeline": pipeline.name, "experiment_name": pipeline.experiment, "spec": r.spec_summary(),
        "planned_jobs": planned, "executor": options.executor, "git_commit": r.commit,
        "ci": ci_variables(), "tags": [{"key": k, "value": v} for k, v in r.tags.items()],
        "params": _param_list({k: v for k, v in caching._json_safe(_flat(pipeline.params)).items()}) if pipeline.params else [],
        "lookup": lookup,
    }
    settle = _local_outputs(r, included, speculative, lookup)
    if settle is not None:
        # Every job looks cached and its outputs are on disk: the server may record them all and end
        # the run in this one call, if it finds every key with these very outputs.
        start_body.update(settle=True, local_outputs=settle)
    if trigger:
        start_body["trigger"] = trigger
    if options.run_key:
        start_body["run_key"] = options.run_key
    if options.run_id:
        start_body["run_id"] = options.run_id
    try:
        answer = r.client.api("POST", "/pipelines/runs/start", start_body)
    except ServerError as exc:
        raise PipelineFailed(f"cannot start the run on {options.tracking_uri}: {exc.message}") from None
    r.run = answer["run"]
    for entry in answer.get("cache", []):
        r.known[entry["cache_key"]] = entry
    if answer.get("settled"):
        return _settled(r, plan, included, answer)
    r.report.say(f"pipeline {pipeline.name} #{r.run['number']} ({r.run['run_id']}) on {options.executor}: "
                 f"{len(included)} job{'s' if len(included) != 1 else ''}")
    for name, entry in plan.entries.items():
        if not entry.included and entry.reason != "not selected":
            r.report.event("SKIPPED", name, entry.reason)

    # Needed jobs outside this invocation: their state comes from this run's records (CI) or the cache.
    for name in pipeline.order():
        if name in included:
            continue
        rec = upstream_records.get(name)
        if rec and rec.get("status") in ("SUCCEEDED", "CACHED"):
            r.states[name] = _state_from_record(r, rec)

    pools = _Pools(r, options)
    try:
        _schedule(r, plan, included, forced, pools, upstream_records)
    except BaseException as exc:
        r.flush()
        status = "CANCELED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        try:
            r.record([], status=status, message=f"runner stopped: {type(exc).__name__}: {exc}")
        except ServerError:
            pass
        raise
    finally:
        pools.close()
        r.hasher.save()
    with r.record_lock:
        pending, r.pending_records = r.pending_records, []
    failed = [n for n in included if r.states.get(n) and r.states[n].status == "FAILED"]
    message = f"job{'s' if len(failed) > 1 else ''} {', '.join(failed)} failed" if failed else None
    if options.run_key and not failed:
        r.record(pending)  # the run ends when the last of its CI jobs has reported
    else:
        r.record(pending, status="FAILED" if failed else "FINISHED", message=message)
    counts: dict[str, int] = {}
    for n in included:
        s = r.states[n].status if n in r.states else "SKIPPED"
        counts[s] = counts.get(s, 0) + 1
    summary = ", ".join(f"{v} {k.lower()}" for k, v in counts.items())
    r.report.say(f"pipeline {pipeline.name} #{r.run['number']} {r.run['status'].lower()}: {summary}")
    ok = not failed and all(r.states.get(n) is not None and r.states[n].status in ("SUCCEEDED", "CACHED")
                            for n in included)
    return RunResult(r.run, r.states, ok)


class _Pools:
    """The executor and the thread pool of ML steps, made on first use: a fully cached run needs neither."""

    def __init__(self, r: _Run, options: RunOptions):
        self.r, self.options = r, options
        self._executor = None
        self._steps = None

    @property
    def executor(self):
        if self._executor is None:
            from modelyard.pipelines.executors import make_executor

            o = self.options
            try:
                self._executor = make_executor(o.executor, self.r.pipeline.root, ray_address=o.ray_address,
                                               jobs=o.jobs, gpus=o.gpus, on_line=self.r.report.line)
            except Exception as exc:  # noqa: BLE001 - the run ends with the reason
                raise PipelineFailed(f"cannot start the {o.executor} executor: {exc}") from None
        return self._executor

    @property
    def steps(self):
        if self._steps is None:
            from concurrent.futures import ThreadPoolExecutor

            self._steps = ThreadPoolExecutor(max_workers=4, thread_name_prefix="modelyard-step")
        return self._steps

    def close(self) -> None:
        if self._steps is not None:
            self._steps.shutdown(wait=True)
        if self._executor is not None:
            self._executor.close()


def _local_outputs(r: _Run, included: list[str], keys: dict[str, str], lookup: list[dict]) -> dict | None:
    """``{job: {output path: hash on disk}}`` when every job could be a cache hit, else None."""
    if len(lookup) != len(included) or r.options.run_key or r.options.run_id:
        return None
    out = {}
    for name in included:
        hashes = {}
        for rel in r.pipeline.jobs[name].outputs:
            h = r.hasher.content_hash(rel)
            if h is None:
                return None
            hashes[rel] = h
        out[name] = hashes
    return out


def _settled(r: _Run, plan: Plan, included: list[str], answer: dict) -> RunResult:
    """The server found every job cached with the outputs on disk, recorded them and ended the run."""
    hits = {e["job"]: e for e in answer.get("cache", [])}
    for name, entry in plan.entries.items():
        if not entry.included and entry.reason != "not selected":
            r.report.event("SKIPPED", name, entry.reason)
    for name in included:
        hit = hits[name]["hit"]
        r.states[name] = JobState(status="CACHED", cache_key=hits[name]["cache_key"], result=hit.get("result"),
                                  outputs=hit.get("outputs"), outputs_run_id=hit.get("outputs_run_id"),
                                  mlflow_run_id=hit.get("mlflow_run_id"))
        r.report.event("CACHED", name, f"key {hits[name]['cache_key'][:12]} from run "
                                       f"{(hit.get('cached_from') or hit['run_id'])[:8]}")
    r.hasher.save()
    r.report.say(f"pipeline {r.pipeline.name} #{r.run['number']} {r.run['status'].lower()}: {len(included)} cached")
    return RunResult(r.run, r.states, r.run.get("status") == "FINISHED")


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _existing_run_jobs(r: _Run, options: RunOptions) -> dict[str, dict]:
    """Jobs already recorded in the run this invocation joins (the CI jobs before this one)."""
    try:
        if options.run_id:
            run = r.client.api("GET", "/pipelines/runs/get", run_id=options.run_id)["run"]
        else:
            runs = r.client.api("GET", "/pipelines/runs", pipeline=r.pipeline.name, max_results=50).get("runs", [])
            match = [x for x in runs if x.get("run_key") == options.run_key]
            if not match:
                return {}
            run = r.client.api("GET", "/pipelines/runs/get", run_id=match[0]["run_id"])["run"]
    except ServerError as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST",):
            return {}
        raise
    return {j["name"]: j for j in run.get("jobs", [])}


def _state_from_record(r: _Run, rec: dict) -> JobState:
    state = JobState(status=rec["status"], result=rec.get("result") or {}, mlflow_run_id=rec.get("mlflow_run_id"),
                     outputs_run_id=rec.get("outputs_run_id"), outputs=rec.get("outputs") or {},
                     cache_key=rec.get("cache_key"))
    if state.outputs_run_id:
        try:
            info = r.client.mlflow("GET", "/runs/get", run_id=state.outputs_run_id)["run"]["info"]
            state.outputs_artifact_uri = info.get("artifact_uri")
        except ServerError:
            pass
    state.metrics = {k: float(v) for k, v in (state.result.get("metrics") or {}).items()}
    return state


def _schedule(r: _Run, plan: Plan, included: list[str], forced: set[str], pools: _Pools,
              upstream_records: dict[str, dict]) -> None:
    """Start jobs as their needs end. Each job's unmet needs are counted, so a step costs its edges,
    not a scan of every job (a DAG of thousands of jobs schedules in linear time)."""
    pipeline = r.pipeline
    running: dict[Future, tuple[str, dict]] = {}
    members = set(included)
    unmet = {n: {d for d in plan.deps(n) if d in members} for n in included}
    dependents: dict[str, list[str]] = {n: [] for n in included}
    for n in included:
        for d in unmet[n]:
            dependents[d].append(n)
    ready = deque(n for n in included if not unmet[n])
    blocked: deque[str] = deque()  # ready, but waiting for room on the executor

    # Inputs produced by needed jobs outside this invocation (a CI job's upstream): restore them first.
    for name in included:
        for d in pipeline.upstream({name}) - members:
            st = r.states.get(d)
            if st is not None and st.outputs and st.outputs_artifact_uri:
                r.restore({"outputs": st.outputs, "outputs_artifact_uri": st.outputs_artifact_uri})

    def ended(name: str) -> None:
        for n in dependents[name]:
            unmet[n].discard(name)
            if not unmet[n]:
                ready.append(n)

    to_start: list[tuple[Job, str, dict, str]] = []
    while ready or blocked or running:
        # Jobs that waited for room go first, in the order they became ready.
        queue, blocked = deque([*blocked, *ready]), deque()
        ready.clear()
        while queue:
            name = queue.popleft()
            job = pipeline.jobs[name]
            bad = [d for d in plan.deps(name) if d in members and r.states[d].status not in ("SUCCEEDED", "CACHED")]
            if bad and plan.entries[name].when != "always":
                r.states[name] = JobState(status="SKIPPED", message=f"{bad[0]} did not succeed")
                r.report.event("SKIPPED", name, f"{bad[0]} did not succeed")
                with r.record_lock:
                    r.pending_records.append({"name": name, "status": "SKIPPED", "stage": job.stage, "kind": job.kind,
                                              "message": f"upstream job {bad[0]} did not succeed"})
                ended(name)
                queue.extend(ready)
                ready.clear()
                continue
            if name in r.states and r.states[name].status == "PENDING":
                key, parts = r.states[name].cache_key, r.parts[name]  # came back from `blocked`
            else:
                upstream_keys = {d: (r.states[d].cache_key if d in r.states else r.spec_keys.get(d)) or ""
                                 for d in pipeline.deps(name)}
                try:
                    key, parts = r.key_for(name, plan, upstream_keys)
                except FileNotFoundError as exc:
                    _fail(r, job, str(exc))
                    ended(name)
                    queue.extend(ready)
                    ready.clear()
                    continue
                r.states[name] = JobState(status="PENDING", cache_key=key)
                r.parts[name] = parts
            if job.cache and name not in forced and r.states[name].status == "PENDING" and key not in r.tried:
                r.lookup([(name, key)])
                hit = r.known.get(key, {}).get("hit")
                if hit is not None:
                    try:
                        _cached(r, job, key, parts, hit)
                        ended(name)
                        queue.extend(ready)
                        ready.clear()
                        continue
                    except (PipelineFailed, ServerError, OSError) as exc:
                        r.report.say(f"  [{name}] cannot restore cached outputs ({exc}); running it")
                r.tried.add(key)
            # Only a job that has to run needs the executor (a fully cached run never starts one).
            problem = pools.executor.check(job.resources) if not job.is_step else None
            if problem is not None:
                _fail(r, job, f"cannot run here: {problem}")
                ended(name)
                queue.extend(ready)
                ready.clear()
                continue
            if not job.is_step and not pools.executor.can_start(job.resources):
                blocked.append(name)
                continue
            reason = "forced" if name in forced else ("cache: off" if not job.cache else "; ".join(
                caching.explain(parts, (r.known.get(key, {}).get("last") or {}).get("key_parts"))))
            if not job.is_step:
                pools.executor.reserve(job.resources)
            to_start.append((job, key, parts, reason))
        if to_start:
            for name, info, fut in _start_many(r, to_start, pools):
                running[fut] = (name, info)
            to_start.clear()
        if not running:
            if blocked:
                continue  # cannot happen: an idle executor takes any job; re-try rather than stall
            break
        from concurrent.futures import FIRST_COMPLETED, wait

        done, _ = wait(list(running), return_when=FIRST_COMPLETED)
        records = []
        for fut in done:
            name, info = running.pop(fut)
            records.append(_finish(r, pipeline.jobs[name], fut, info["key"], info["parts"]))
            ended(name)
        r.record(records)  # the jobs that ended together, in one call
    for name in included:
        if name not in r.states:  # its needs never ended (cannot happen in a DAG)
            _fail(r, pipeline.jobs[name], "its needs never ended")


def _fail(r: _Run, job: Job, message: str) -> None:
    r.states[job.name] = JobState(status="FAILED", message=message)
    r.report.event("FAILED", job.name, message)
    with r.record_lock:
        r.pending_records.append({"name": job.name, "status": "FAILED", "stage": job.stage, "kind": job.kind,
                                  "message": message, "end_time": int(time.time() * 1000)})


def _cached(r: _Run, job: Job, key: str, parts: dict, hit: dict) -> None:
    r.restore(hit)
    state = r.states[job.name]
    state.status = "CACHED"
    state.result = hit.get("result") or {}
    state.metrics = {k: float(v) for k, v in (state.result.get("metrics") or {}).items()}
    state.outputs = hit.get("outputs") or {}
    state.outputs_run_id = hit.get("outputs_run_id")
    state.outputs_artifact_uri = hit.get("outputs_artifact_uri")
    state.mlflow_run_id = hit.get("mlflow_run_id")  # the run that made the outputs: a cached job makes none
    t = int(time.time() * 1000)
    r.report.event("CACHED", job.name, f"key {key[:12]} from run {(hit.get('cached_from') or hit['run_id'])[:8]}")
    with r.record_lock:
        r.pending_records.append({
            "name": job.name, "status": "CACHED", "stage": job.stage, "kind": job.kind, "cache_key": key,
            "key_parts": parts, "cached_from": hit.get("cached_from") or hit["run_id"], "outputs_run_id": hit.get("outputs_run_id"),
            "outputs": state.outputs or None, "result": hit.get("result"), "start_time": t, "end_time": t,
            "mlflow_run_id": hit.get("mlflow_run_id")})


def _start_many(r: _Run, batch: list[tuple[Job, str, dict, str]], pools: _Pools) -> list[tuple[str, dict, Future]]:
    """Record the jobs as running in one call (which makes their MLflow runs), then hand each to its pool."""
    with r.record_lock:  # cached jobs recorded first, so the run's history reads in order
        pending, r.pending_records = r.pending_records, []
    t = int(time.time() * 1000)
    tags = [{"key": k, "value": v} for k, v in r.tags.items()]
    answer = r.record(pending + [{"name": job.name, "status": "RUNNING", "stage": job.stage, "kind": job.kind,
                                  "cache_key": key, "key_parts": parts, "start_time": t,
                                  "params": _param_list(r.pipeline.param_values(job)), "tags": tags}
                                 for job, key, parts, _ in batch])
    started = []
    for job, key, parts, reason in batch:
        rec = answer.get(job.name, {})
        state = r.states[job.name]
        state.status = "RUNNING"
        state.mlflow_run_id = rec.get("mlflow_run_id")
        artifact_uri = rec.get("artifact_uri")
        state.outputs_artifact_uri = artifact_uri
        r.report.event("RUNNING", job.name, reason)
        if job.is_step:
            from modelyard.pipelines.steps import StepContext

            ctx = StepContext(client=r.client, pipeline=r.pipeline, job=job, run=r.run,
                              job_run_id=state.mlflow_run_id, artifact_uri=artifact_uri, states=r.states,
                              upstream=lambda n: r.pipeline.upstream({n}), tags=r.tags,
                              log=lambda line, n=job.name: r.report.line(n, line), lineage=r.lineage)
            fut = pools.steps.submit(_run_step, ctx)
        else:
            payload = {
                "name": job.name, "kind": job.kind, "script": job.script, "run": job.run, "args": job.args,
                "root": str(r.pipeline.root), "env": r.job_env(job, state.mlflow_run_id), "outputs": job.outputs,
                "metrics": job.metrics, "timeout": job.timeout, "retry": job.retry,
                "log_path": str(r.log_dir / r.run["run_id"] / f"{job.name}.log"),
                "tracking_uri": r.options.tracking_uri, "artifact_uri": artifact_uri,
            }
            fut = pools.executor.submit(payload, job.resources)
        started.append((job.name, {"key": key, "parts": parts}, fut))
    return started


def _run_step(ctx) -> dict:
    from modelyard.pipelines.steps import StepFailed, run_step

    started = time.time()
    try:
        status, message, result, metrics = run_step(ctx)
    except StepFailed as exc:
        status, message, result, metrics = "FAILED", str(exc), {}, {}
    except ServerError as exc:
        status, message, result, metrics = "FAILED", f"{ctx.job.kind}: the server answered {exc.error_code}: {exc.message}", {}, {}
    except Exception as exc:  # noqa: BLE001 - a bug or a bad file in a step fails the job, with its traceback
        import traceback

        for line in traceback.format_exc().rstrip().splitlines():
            ctx.log(line)
        status, message, result, metrics = "FAILED", f"{ctx.job.kind}: {type(exc).__name__}: {exc}", {}, {}
    return {"name": ctx.job.name, "status": status, "message": message, "result": result, "metrics": metrics,
            "outputs": {}, "attempts": 1, "start_time": int(started * 1000), "end_time": int(time.time() * 1000)}


def _finish(r: _Run, job: Job, fut: Future, key: str, parts: dict) -> dict:
    """Take in a job's result; returns its record for the server."""
    state = r.states[job.name]
    try:
        out = fut.result()
    except Exception as exc:  # noqa: BLE001 - an executor failure is the job's failure
        out = {"status": "FAILED", "message": f"{type(exc).__name__}: {exc}", "outputs": {}, "metrics": {},
               "end_time": int(time.time() * 1000), "attempts": 1}
    state.status = out["status"]
    state.message = out.get("message")
    state.metrics = out.get("metrics") or {}
    state.outputs = out.get("outputs") or {}
    state.result = dict(out.get("result") or {})
    if state.metrics:
        state.result["metrics"] = state.metrics
    if state.status == "SUCCEEDED":
        state.outputs_run_id = state.mlflow_run_id
        if r.options.executor == "ray" and state.outputs:
            # A Ray task may have run on another machine: bring its outputs here for the jobs downstream.
            r.restore({"outputs": state.outputs, "outputs_artifact_uri": state.outputs_artifact_uri})
    else:
        state.outputs_artifact_uri = None
    duration = (out.get("end_time", 0) - out.get("start_time", out.get("end_time", 0))) / 1000
    detail = f"{duration:.1f}s" + (f"  {state.message}" if state.message else "")
    if out.get("attempts", 1) > 1:
        detail += f"  ({out['attempts']} attempts)"
    r.report.event(state.status, job.name, detail)
    if state.status == "FAILED" and out.get("log_path") and r.report.quiet:
        _tail(r, job.name, out["log_path"])
    if state.mlflow_run_id and not job.is_step and state.status == "SUCCEEDED":
        r.log_lineage(job.name, state.mlflow_run_id)
    record = {"name": job.name, "status": state.status, "cache_key": key, "key_parts": parts,
              "end_time": out.get("end_time"), "attempt": out.get("attempts"), "message": state.message,
              "result": state.result or None, "metrics": _metric_list(state.metrics, out.get("end_time") or 0)}
    if state.status == "SUCCEEDED":
        record.update(outputs=state.outputs or None, outputs_run_id=state.mlflow_run_id)
    return record


def _tail(r: _Run, name: str, log_path: str, lines: int = 20) -> None:
    try:
        text = Path(log_path).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return
    for line in text:
        r.report.say(f"  [{name}] {line}")


def dry_run(pipeline: Pipeline, options: RunOptions) -> list[dict]:
    """What a run would do and why, without running or recording anything."""
    r = _Run(pipeline, options)
    plan = r.plan()
    keys = r.speculative_keys(plan, {})
    forced = pipeline.downstream(set(pipeline.jobs) if options.force else set(options.force_jobs)) \
        if (options.force or options.force_jobs) else set()
    try:
        r.lookup([(n, k) for n, k in keys.items() if plan.entries[n].included], explain=True)
    except ServerError as exc:
        raise PipelineFailed(f"cannot reach {options.tracking_uri}: {exc.message}") from None
    rows, will_run = [], set()
    for name in pipeline.order():
        entry = plan.entries[name]
        job = pipeline.jobs[name]
        if not entry.included:
            rows.append({"job": name, "action": "skip", "why": entry.reason})
            continue
        ups_running = [d for d in plan.deps(name) if d in will_run]
        key = keys.get(name)
        if name in forced:
            action, why = "run", "forced"
        elif not job.cache:
            action, why = "run", "cache: off"
        elif ups_running:
            action, why = "run", f"upstream {', '.join(ups_running)} will run"
        elif key is None:
            action, why = "run", "inputs are not there yet"
        elif r.known.get(key, {}).get("hit"):
            hit = r.known[key]["hit"]
            action, why = "cached", f"same key as run {hit['run_id'][:8]}"
        else:
            parts = caching.key_parts(pipeline, job, r.hasher,
                                      {d: keys.get(d, "") for d in pipeline.deps(name)})
            action, why = "run", "; ".join(caching.explain(parts, (r.known.get(key, {}).get("last") or {}).get("key_parts")))
        if action == "run":
            will_run.add(name)
        rows.append({"job": name, "action": action, "why": why, **({"key": key} if key else {})})
    width = max(12, *(len(row["job"]) for row in rows))
    for row in rows:
        r.report.say(f"{row['action']:<7} {row['job']:<{width}} {row['why']}")
    return rows


def default_runner_name() -> str:
    import socket
    import uuid

    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
