"""``modelyard``: the command line, a thin layer over the Python API.

Every ``modelyard server`` flag comes from :class:`modelyard.settings.Settings`, so the flags, the
``MODELYARD_*`` variables and the help text cannot drift apart.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import socket
import sys
from pathlib import Path

import click

from modelyard import __version__
from modelyard.settings import Settings, env_name, setting_fields

__all__ = ["main"]


def _settings_options(fn):
    for f in reversed(setting_fields()):
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} [env {env_name(f.name)}; default {f.default}]"
        if kind == "bool":
            fn = click.option(flag, f.name, is_flag=True, default=None, help=help_text)(fn)
            continue
        click_type = {"int": int, "Path": click.Path(path_type=Path)}.get(kind, str)
        fn = click.option(flag, f.name, type=click_type, default=None, help=help_text)(fn)
    return fn


@click.group()
@click.version_option(__version__, prog_name="modelyard")
def main():
    """modelyard: MLflow-compatible tracking and registry, pipelines, serving and monitoring."""


@main.command()
@_settings_options
def server(**options):
    """Start the tracking and registry server."""
    settings = Settings.from_env(**options)
    if not settings.auth and not settings.insecure_no_auth and not _is_loopback(settings.host):
        raise click.ClickException(
            f"refusing to listen on {settings.host} without authentication: anyone who can reach it could read "
            "and change every model. Start with --auth (after `modelyard admin create-user`), or pass "
            "--insecure-no-auth if this network is trusted.")
    serve(settings)


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(settings: Settings) -> None:
    """Migrate once, then serve with one process or ``settings.workers`` processes sharing a socket."""
    import uvicorn

    from modelyard.store.db import Database
    from modelyard.store.migrate import upgrade

    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url)
    upgrade(db.write_engine)
    db.close()

    sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {settings.host}:{settings.port}: {exc}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    click.echo(f"modelyard {__version__} listening on http://{settings.host}:{settings.port} "
               f"(store {_redact(settings.resolved_database_url)}, artifacts {settings.resolved_artifacts_uri})",
               err=True)
    if settings.workers <= 1:
        _worker(settings, sock)
        return
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(settings, sock), daemon=True) for _ in range(settings.workers)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()


def _worker(settings: Settings, sock: socket.socket) -> None:
    import uvicorn

    from modelyard.server.app import create_app

    app = create_app(settings, migrate=False)
    config = uvicorn.Config(
        app, log_level=settings.log_level, access_log=False, loop="uvloop", http="httptools",
        lifespan="on", timeout_keep_alive=30, backlog=2048,
    )
    uvicorn.Server(config).run(sockets=[sock])


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}" if ":" in creds else url
    return url


@main.group()
def db():
    """Database maintenance."""


@db.command("upgrade")
@click.option("--database-url", default=None, help="SQLAlchemy URL; default: the server's SQLite file.")
@click.option("--data-dir", default=None, type=click.Path(path_type=Path))
def db_upgrade(database_url, data_dir):
    """Apply every pending migration."""
    from modelyard.store.db import Database
    from modelyard.store.migrate import upgrade

    settings = Settings.from_env(database_url=database_url, data_dir=data_dir)
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    database = Database(settings.resolved_database_url)
    upgrade(database.write_engine)
    database.close()
    click.echo(f"database at {_redact(settings.resolved_database_url)} is up to date")


# -- admin: people, projects and tokens, straight on the database ------------------------------------
_db_options = [
    click.option("--database-url", default=None, help="SQLAlchemy URL; default: the server's SQLite file."),
    click.option("--data-dir", default=None, type=click.Path(path_type=Path), help="The server's --data-dir."),
]


def _with_db(fn):
    for option in reversed(_db_options):
        fn = option(fn)
    return fn


def _run_admin(database_url, data_dir, action):
    """Run ``action(stores)`` (a coroutine function) against the server's database."""
    from modelyard.errors import MlflowError
    from modelyard.store import run_offline

    settings = Settings.from_env(database_url=database_url, data_dir=data_dir)
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    try:
        return run_offline(settings.resolved_database_url, action)
    except MlflowError as exc:
        raise click.ClickException(exc.message) from exc


def _expiry(days: int | None) -> int | None:
    import time

    return None if not days else int((time.time() + days * 86400) * 1000)


def _print_token(token: dict) -> None:
    click.echo(f"token {token['token_id']} ({token['name']}, scopes {','.join(token['scopes'])})")
    click.echo("Copy it now; it is not shown again:")
    click.echo(token["token"])


@main.group()
def admin():
    """Users, projects, members and access tokens (run on the server's machine)."""


@admin.command("create-user")
@click.argument("username")
@click.option("--admin", "is_admin", is_flag=True, help="A server administrator (owner of every project).")
@click.option("--token-name", default="cli", show_default=True, help="Name of the personal token made with it.")
@click.option("--scopes", default="api", show_default=True, help="Token scopes: api and/or read_api, comma-separated.")
@click.option("--expires-in-days", type=int, default=None, help="Token lifetime; default: no expiry.")
@_with_db
def admin_create_user(username, is_admin, token_name, scopes, expires_in_days, database_url, data_dir):
    """Create a user and a personal access token for them."""

    async def action(stores):
        await stores.tokens.create_user(username, is_admin)
        return await stores.tokens.create_personal_token(username, token_name, scopes.split(","),
                                                         _expiry(expires_in_days))

    token = _run_admin(database_url, data_dir, action)
    click.echo(f"user {username} created{' (administrator)' if is_admin else ''}")
    _print_token(token)


@admin.command("create-token")
@click.argument("username")
@click.option("--name", "token_name", required=True, help="What the token is for.")
@click.option("--scopes", default="api", show_default=True, help="api and/or read_api, comma-separated.")
@click.option("--expires-in-days", type=int, default=None)
@_with_db
def admin_create_token(username, token_name, scopes, expires_in_days, database_url, data_dir):
    """Create a personal access token for an existing user."""
    token = _run_admin(database_url, data_dir, lambda stores: stores.tokens.create_personal_token(
        username, token_name, scopes.split(","), _expiry(expires_in_days)))
    _print_token(token)


@admin.command("create-project")
@click.argument("name")
@click.option("--owner", default=None, help="Username to make the project's owner.")
@click.option("--description", default=None)
@_with_db
def admin_create_project(name, owner, description, database_url, data_dir):
    """Create a project (with its Default experiment)."""

    async def action(stores):
        project = await stores.projects.create(name, description, None, None)
        if owner:
            await stores.projects.set_member(name, owner, "owner")
        return project

    project = _run_admin(database_url, data_dir, action)
    click.echo(f"project {project['name']} created; tracking URI: http://<host>:<port>/p/{project['name']}")


@admin.command("add-member")
@click.argument("project")
@click.argument("username")
@click.argument("role", type=click.Choice(["guest", "reporter", "developer", "maintainer", "owner"]))
@_with_db
def admin_add_member(project, username, role, database_url, data_dir):
    """Give a user a role in a project (or change it)."""
    _run_admin(database_url, data_dir, lambda stores: stores.projects.set_member(project, username, role))
    click.echo(f"{username} is {role} in {project}")


@admin.command("create-project-token")
@click.argument("project")
@click.option("--name", "token_name", required=True)
@click.option("--role", type=click.Choice(["guest", "reporter", "developer", "maintainer", "owner"]),
              default="developer", show_default=True)
@click.option("--scopes", default="api", show_default=True)
@click.option("--expires-in-days", type=int, default=None)
@_with_db
def admin_create_project_token(project, token_name, role, scopes, expires_in_days, database_url, data_dir):
    """Create a project access token (a bot member of that project only)."""
    token = _run_admin(database_url, data_dir, lambda stores: stores.tokens.create_project_token(
        project, token_name, role, scopes.split(","), _expiry(expires_in_days)))
    _print_token(token)


@admin.command("revoke-token")
@click.argument("token_id")
@_with_db
def admin_revoke_token(token_id, database_url, data_dir):
    """Revoke a token by its id (takes effect within seconds on every server process)."""
    _run_admin(database_url, data_dir, lambda stores: stores.tokens.revoke(token_id))
    click.echo(f"token {token_id} revoked")


@admin.command("list-users")
@_with_db
def admin_list_users(database_url, data_dir):
    """List users."""
    for user in _run_admin(database_url, data_dir, lambda stores: stores.tokens.list_users()):
        flags = [f for f, on in (("admin", user["is_admin"]), ("bot", user["bot"]), ("blocked", user["blocked"])) if on]
        click.echo(f"{user['username']}{'  (' + ', '.join(flags) + ')' if flags else ''}")


@admin.command("list-tokens")
@click.option("--user", "username", default=None)
@click.option("--project", default=None)
@_with_db
def admin_list_tokens(username, project, database_url, data_dir):
    """List tokens (never their values)."""
    for t in _run_admin(database_url, data_dir, lambda stores: stores.tokens.list_tokens(username, project)):
        state = "active" if t["active"] else ("revoked" if "revoked_at" in t else "expired")
        click.echo(f"{t['token_id']}  {t['name']:<20} {','.join(t['scopes']):<12} {t.get('project', '-'):<12} {state}")


def _serve_options(fn):
    # The flags of `modelyard serve` are the fields of modelyard.serving.options.ServeOptions
    # (a stdlib-only module: numpy, mlflow and uvicorn load only when the command runs).
    from modelyard.serving.options import env_name as serve_env, option_fields

    for f in reversed([f for f in option_fields() if f.name != "model_uri"]):
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} [env {serve_env(f.name)}; default {f.default}]"
        if kind == "bool":
            fn = click.option(f"{flag}/--no-{flag[2:]}", f.name, default=None, help=help_text)(fn)
            continue
        click_type = {"int": int, "float": float}.get(kind, click.Path(path_type=Path) if "Path" in kind else str)
        fn = click.option(flag, f.name, type=click_type, default=None, help=help_text)(fn)
    return fn


@main.command("serve")
@click.argument("model_uri", required=False)
@_serve_options
def serve_model(model_uri, **options):
    """Serve a registered model over HTTP: MLflow's /invocations and the V2 inference protocol.

    MODEL_URI is models:/NAME@ALIAS (the server follows the alias as it moves) or
    models:/NAME/VERSION; or give --deployment FILE for several versions with traffic weights
    and a shadow. The model comes from the modelyard server at --tracking-uri.
    """
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        raise click.ClickException("modelyard serve loads models with MLflow: pip install 'modelyard[serve]'")
    from modelyard.serving import ServeError, ServeOptions, SpecError, run

    try:
        run(ServeOptions.from_env(model_uri=model_uri, **options))
    except (SpecError, ServeError) as exc:
        raise click.ClickException(str(exc)) from None


# -- pipelines: the group lives with its package (``python -m modelyard.pipelines`` runs it alone) -------------
from modelyard.pipelines.cli import _TRACKING, pipeline  # noqa: E402 - after main, which it is added to

main.add_command(pipeline)


# -- monitoring ------------------------------------------------------------------------------------------------
@main.group()
def monitor():
    """Monitors of deployed models: list, create, evaluate now, show the latest report; drift reports
    of two data files; reference profiles."""


def _monitoring_client(tracking_uri: str):
    from modelyard.monitoring.client import MonitoringClient

    return MonitoringClient(tracking_uri)


def _client_call(fn):
    from modelyard.monitoring.client import ClientError

    try:
        return fn()
    except ClientError as exc:
        raise click.ClickException(str(exc)) from None


@monitor.command("list")
@_TRACKING
@click.option("--deployment", default=None, help="Only the monitors of this deployment.")
def monitor_list(tracking_uri, deployment):
    """List monitors with their last evaluation."""
    import datetime as dt

    for m in _client_call(lambda: _monitoring_client(tracking_uri).monitors(deployment)):
        last = dt.datetime.fromtimestamp(m["last_eval_ms"] / 1000).strftime("%Y-%m-%d %H:%M:%S") \
            if m.get("last_eval_ms") else "never"
        cfg = m["config"]
        click.echo(f"{m['name']:<24} {m['deployment']:<20} {cfg['mode']:<8} {cfg['window_seconds']:>6}s "
                   f"{'on ' if m['enabled'] else 'off'} {last} {m.get('last_status', '')}")


@monitor.command("create")
@_TRACKING
@click.argument("name")
@click.option("--deployment", required=True, help="The deployment whose prediction log it watches.")
@click.option("--window", "window_seconds", type=int, default=3600, show_default=True, help="Window, in seconds.")
@click.option("--every", "every_seconds", type=int, default=None, help="Sliding windows: seconds between evaluations.")
@click.option("--reference-id", default=None, help="Compare with this reference profile (default: the version's).")
@click.option("--config", "config_json", default=None, help="Any other settings, as JSON (see the API docs).")
def monitor_create(tracking_uri, name, deployment, window_seconds, every_seconds, reference_id, config_json):
    """Create a monitor over tumbling windows (or sliding ones with --every)."""
    import json

    config = json.loads(config_json) if config_json else {}
    config.setdefault("window_seconds", window_seconds)
    if every_seconds:
        config.update(mode="sliding", every_seconds=every_seconds)
    if reference_id:
        config["reference"] = {"reference_id": reference_id}
    created = _client_call(lambda: _monitoring_client(tracking_uri).create_monitor(name, deployment, config))
    click.echo(f"created monitor {created['name']} on {created['deployment']}")


def _print_evaluation(ev: dict) -> None:
    report = ev.get("report", {})
    click.echo(f"window {report.get('window', {}).get('start_ms')}..{ev.get('ts_ms')}: {report.get('rows', 0)} rows")
    drift = report.get("data_drift")
    if drift:
        flagged = ", ".join(drift["drifted_columns"]) or "none"
        click.echo(f"data drift: {len(drift['drifted_columns'])} of {drift['tested']} features ({flagged})")
        for c in drift["columns"]:
            mark = "DRIFT" if c["drifted"] else "ok"
            value = "-" if c["value"] is None else f"{c['value']:.4g}"
            click.echo(f"  {c['column']:<24} {c['method']:<14} {value:>10}  {mark}")
    pred = report.get("prediction_drift")
    if pred:
        click.echo(f"prediction drift: {', '.join(pred['drifted_columns']) or 'none'}")
    perf = report.get("performance")
    if perf and perf.get("labeled_rows"):
        shown = {k: v for k, v in perf.items() if isinstance(v, float)}
        click.echo("performance: " + ", ".join(f"{k}={v:.4g}" for k, v in shown.items())
                   + f" ({perf['labeled_rows']} labeled)")
    health = report.get("health")
    if health and "latency_p99_seconds" in health:
        click.echo(f"health: {health['traffic_per_second']:.3g} predictions/s, "
                   f"p50 {health['latency_p50_seconds'] * 1000:.3g} ms, p99 {health['latency_p99_seconds'] * 1000:.3g} ms, "
                   f"{health['errors']} errors")
    if report.get("note"):
        click.echo(f"note: {report['note']}")
    for rule, summary in (ev.get("alerts") or {}).items():
        click.echo(f"rule {rule}: " + ", ".join(f"{k} {v}" for k, v in summary.items() if v))


@monitor.command("evaluate")
@_TRACKING
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the whole evaluation as JSON.")
def monitor_evaluate(tracking_uri, name, as_json):
    """Evaluate a monitor now (the window ending now) and print what it found."""
    ev = _client_call(lambda: _monitoring_client(tracking_uri).evaluate(name))
    if as_json:
        import json

        click.echo(json.dumps(ev, indent=1))
    else:
        _print_evaluation(ev)


@monitor.command("show")
@_TRACKING
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def monitor_show(tracking_uri, name, as_json):
    """Show a monitor's latest report."""
    found = _client_call(lambda: _monitoring_client(tracking_uri).report(name))
    if as_json:
        import json

        click.echo(json.dumps(found, indent=1))
    else:
        _print_evaluation({"ts_ms": found["ts_ms"], "report": found["report"]})


def _read_table(path: Path):
    from modelyard.monitoring.references import read_table

    try:
        return read_table(path.read_bytes(), path.name)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"{path}: {exc}") from None


@monitor.command("report")
@click.argument("reference", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("current", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("drift-report.html"),
              show_default=True, help="Where to write the HTML report.")
@click.option("--method", default=None, help="Drift test for every column (default: chosen per column).")
@click.option("--threshold", type=float, default=None, help="Threshold of that test.")
@click.option("--columns", default=None, help="Comma-separated columns to compare (default: all).")
def monitor_report(reference, current, output, method, threshold, columns):
    """Write a standalone HTML drift report of CURRENT against REFERENCE (CSV, Parquet or JSON files)."""
    from modelyard.monitoring.drift import METHODS
    from modelyard.monitoring.report import drift_report, render_html

    if method is not None and method not in METHODS:
        raise click.BadParameter(f"one of {', '.join(METHODS)}", param_hint="--method")
    report = drift_report(_read_table(reference), _read_table(current), method=method, threshold=threshold,
                          columns=columns.split(",") if columns else None)
    output.write_text(render_html(report, reference_name=reference.name, current_name=current.name))
    click.echo(f"{len(report['drifted_columns'])} of {len(report['columns'])} columns drifted"
               f"{': ' + ', '.join(report['drifted_columns']) if report['drifted_columns'] else ''}; wrote {output}")


@monitor.command("reference")
@_TRACKING
@click.argument("data", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", "model_name", default=None, help="The registered model it is the reference of.")
@click.option("--version", "model_version", default=None, help="The model version it is the reference of.")
@click.option("--name", default=None, help="A name for the profile (default: MODEL/VERSION or the file name).")
def monitor_reference(tracking_uri, data, model_name, model_version, name):
    """Profile a data file here and upload the profile as a reference (the rows stay here)."""
    from modelyard.monitoring.profile import profile_frame

    profile = profile_frame(_read_table(data))
    label = name or (f"{model_name}/{model_version}" if model_name else data.name)
    ref = _client_call(lambda: _monitoring_client(tracking_uri).upload_reference(
        label, profile.to_dict(), model_name, model_version, f"file {data.name}"))
    click.echo(f"uploaded reference {ref['reference_id']} ({ref['rows']} rows, {len(profile.columns)} columns)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
