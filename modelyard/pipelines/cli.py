"""``modelyard pipeline ...``: the command line of the pipelines, a thin layer over their Python API.

``modelyard/cli.py`` adds this group to ``modelyard``; ``python -m modelyard.pipelines`` runs it on
its own, without the start-up of the rest of the CLI (a fully cached run takes a tenth of a second,
and a third of that would be the other commands' options).
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

__all__ = ["pipeline"]

_TRACKING = click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", default="http://127.0.0.1:5000",
                         show_default=True, help="The modelyard server [env MLFLOW_TRACKING_URI].")
_FILE = click.option("-f", "--file", "spec_file", default="modelyard.yml", show_default=True,
                     type=click.Path(path_type=Path), help="The pipeline file.")


def _load_pipeline(spec_file: Path):
    from modelyard.pipelines import SpecError, load

    try:
        return load(spec_file)
    except SpecError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)


@click.group()
def pipeline():
    """ML pipelines: run modelyard.yml locally or on Ray, export it to GitLab CI."""


@pipeline.command("run")
@click.argument("targets", nargs=-1)
@_FILE
@_TRACKING
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Run jobs as local processes or as Ray tasks.")
@click.option("--ray-address", envvar="RAY_ADDRESS", default=None,
              help="Ray cluster to use (host:port or ray://host:10001); default: a local Ray for the run.")
@click.option("-j", "--jobs", type=int, default=None, help="Local executor: CPUs to fill (default: all).")
@click.option("--gpus", type=float, default=None, help="Local executor: GPUs available (default: detected).")
@click.option("--force", is_flag=True, help="Run every job, cached or not.")
@click.option("--force-job", multiple=True, help="Run this job (and what depends on it) even if cached.")
@click.option("--dry-run", is_flag=True, help="Print what would run and why; run and record nothing.")
@click.option("--only", multiple=True, help="Run only this job (its inputs must exist or be in this run's records).")
@click.option("--manual", multiple=True, help="Run this manual job too.")
@click.option("--run-key", default=None, help="Join the run with this key (all CI jobs of one CI pipeline share one).")
@click.option("--queued", is_flag=True, help="Run the runs of this pipeline that triggers queued, then exit.")
@click.option("--changes-since", default=None, help="Base commit for 'changes' rules (default: HEAD, or CI's).")
@click.option("-q", "--quiet", is_flag=True, help="Do not stream the jobs' output (a failed job's tail is shown).")
def pipeline_run(targets, spec_file, tracking_uri, executor, ray_address, jobs, gpus, force, force_job, dry_run,
                 only, manual, run_key, queued, changes_since, quiet):
    """Run the pipeline (or TARGETS and what they need), skipping jobs whose inputs did not change."""
    from modelyard.pipelines.runner import PipelineFailed, RunOptions, dry_run as plan_only, run_pipeline

    pipe = _load_pipeline(spec_file)
    options = RunOptions(tracking_uri=tracking_uri, executor=executor, ray_address=ray_address, jobs=jobs,
                         gpus=gpus, force=force, force_jobs=tuple(force_job), targets=tuple(targets),
                         only=tuple(only), manual=tuple(manual), run_key=run_key, changes_since=changes_since,
                         quiet=quiet)
    try:
        if dry_run:
            plan_only(pipe, options)
            return
        if queued:
            from modelyard.pipelines.worker import run_queued

            ok = run_queued(pipe, options, once=True)
        else:
            ok = run_pipeline(pipe, options).ok
    except PipelineFailed as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(0 if ok else 1)


@pipeline.command("worker")
@_FILE
@_TRACKING
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--ray-address", envvar="RAY_ADDRESS", default=None)
@click.option("--poll", type=float, default=5.0, show_default=True, help="Seconds between looks for queued runs.")
def pipeline_worker(spec_file, tracking_uri, executor, ray_address, poll):
    """Wait for triggered runs of the pipeline (alert actions, API calls) and run them as they come."""
    from modelyard.pipelines.runner import RunOptions
    from modelyard.pipelines.worker import run_queued

    pipe = _load_pipeline(spec_file)
    run_queued(pipe, RunOptions(tracking_uri=tracking_uri, executor=executor, ray_address=ray_address),
               once=False, poll=poll)


@pipeline.command("validate")
@_FILE
def pipeline_validate(spec_file):
    """Check the pipeline file; print every problem with its line."""
    pipe = _load_pipeline(spec_file)
    click.echo(f"{spec_file}: pipeline {pipe.name}, {len(pipe.jobs)} jobs in stages {', '.join(pipe.stages)}: ok")


@pipeline.command("export")
@_FILE
@click.option("--gitlab-ci", "gitlab", is_flag=True, required=True, help="Write a .gitlab-ci.yml.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path(".gitlab-ci.yml"), show_default=True,
              help="Where to write it ('-' for standard output).")
@click.option("--image", default=None, help="Docker image of the CI jobs (default: the file's ci.image or python:3.11-slim).")
@click.option("--install", default=None, help="Command that installs modelyard in a CI job.")
def pipeline_export(spec_file, gitlab, output, image, install):
    """Write the pipeline as GitLab CI configuration: one CI job per job, the same DAG."""
    from modelyard.pipelines.ci import gitlab_ci

    pipe = _load_pipeline(spec_file)
    try:
        rel = spec_file.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        rel = spec_file.name
    text = gitlab_ci(pipe, spec_path=rel, image=image, install=install)
    if str(output) == "-":
        click.echo(text, nl=False)
    else:
        output.write_text(text)
        click.echo(f"wrote {output}: {len(pipe.jobs)} CI jobs in {len(pipe.stages)} stages", err=True)


@pipeline.command("trigger")
@click.argument("name")
@_TRACKING
@click.option("--reason", default=None, help="Why, recorded with the trigger.")
def pipeline_trigger(name, tracking_uri, reason):
    """Queue a run of the pipeline NAME; a `modelyard pipeline worker` (or `run --queued`) runs it."""
    from modelyard.pipelines.client import Client, ServerError

    trigger = {"type": "cli", **({"reason": reason} if reason else {})}
    try:
        run = Client(tracking_uri).api("POST", "/pipelines/runs/trigger", {"pipeline": name, "trigger": trigger})["run"]
    except ServerError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"queued {name} #{run['number']} ({run['run_id']})")


@pipeline.command("runs")
@click.argument("name", required=False)
@_TRACKING
@click.option("-n", "--max-results", type=int, default=20, show_default=True)
def pipeline_runs(name, tracking_uri, max_results):
    """List recent pipeline runs (of NAME, or of every pipeline)."""
    from modelyard.pipelines.client import Client, ServerError

    try:
        runs = Client(tracking_uri).api("GET", "/pipelines/runs", pipeline=name, max_results=max_results)
    except ServerError as exc:
        raise click.ClickException(exc.message) from None
    for run in runs.get("runs", []):
        took = f"{run['duration_ms'] / 1000:.1f}s" if "duration_ms" in run else ""
        trig = (run.get("trigger") or {}).get("type", "")
        click.echo(f"{run['pipeline']:<20} #{run['number']:<5} {run['status']:<9} {took:>8} {trig:<8} {run['run_id']}")
