"""The tables, in SQLAlchemy Core, for SQLite and PostgreSQL alike.

Migrations under ``migrations/versions`` create and change these tables; this module is what the
stores query. Big tables (metric history) are narrow and keyed for the reads the API makes.
"""
from __future__ import annotations

import sqlalchemy as sa

__all__ = ["metadata"]

metadata = sa.MetaData()

KEY = sa.String(250)
ID = sa.String(64)

experiments = sa.Table(
    "experiments", metadata,
    sa.Column("experiment_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("project", sa.String(64), nullable=False, server_default="default"),
    sa.Column("name", sa.String(500), nullable=False),
    sa.Column("artifact_location", sa.Text, nullable=False),
    sa.Column("lifecycle_stage", sa.String(32), nullable=False),
    sa.Column("creation_time", sa.BigInteger, nullable=False),
    sa.Column("last_update_time", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("project", "name", name="uq_experiments_project_name"),
)

experiment_tags = sa.Table(
    "experiment_tags", metadata,
    sa.Column("experiment_id", sa.BigInteger, primary_key=True),
    sa.Column("key", KEY, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

runs = sa.Table(
    "runs", metadata,
    sa.Column("run_uuid", ID, primary_key=True),
    sa.Column("experiment_id", sa.BigInteger, nullable=False),
    sa.Column("name", sa.String(250), nullable=False),
    sa.Column("user_id", sa.String(256), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("start_time", sa.BigInteger, nullable=False),
    sa.Column("end_time", sa.BigInteger),
    sa.Column("lifecycle_stage", sa.String(20), nullable=False),
    sa.Column("artifact_uri", sa.Text, nullable=False),
    sa.Column("deleted_time", sa.BigInteger),
    sa.Index("ix_runs_experiment_start", "experiment_id", "start_time", "run_uuid"),
)

# The value indexes let runs/search page through runs in a param's or tag's order (migration
# 0009). PostgreSQL cannot index a value of thousands of characters (a btree entry must stay under
# about 2.7 kB), so there the index holds values of up to 256 characters, and a second one finds
# the keys with longer values, which are sorted without it.
params = sa.Table(
    "params", metadata,
    sa.Column("run_uuid", ID, primary_key=True),
    sa.Column("key", KEY, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Index("ix_params_key_value", "key", "value", postgresql_where=sa.text("length(value) <= 256")),
    sa.Index("ix_params_key_long", "key", postgresql_where=sa.text("length(value) > 256")).ddl_if(dialect="postgresql"),
    sqlite_with_rowid=False,
)

tags = sa.Table(
    "tags", metadata,
    sa.Column("run_uuid", ID, primary_key=True),
    sa.Column("key", KEY, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Index("ix_tags_key_value", "key", "value", postgresql_where=sa.text("length(value) <= 256")),
    sa.Index("ix_tags_key_long", "key", postgresql_where=sa.text("length(value) > 256")).ddl_if(dialect="postgresql"),
    sqlite_with_rowid=False,
)

# Every logged value; the primary key makes a retried (key, timestamp, step, value) idempotent.
metrics = sa.Table(
    "metrics", metadata,
    sa.Column("run_uuid", ID, primary_key=True),
    sa.Column("key", KEY, primary_key=True),
    sa.Column("step", sa.BigInteger, primary_key=True),
    sa.Column("timestamp", sa.BigInteger, primary_key=True),
    sa.Column("value", sa.Float(53), primary_key=True),
    sa.Column("is_nan", sa.Boolean, primary_key=True),
    sa.Column("model_id", ID),
    sa.Column("dataset_name", sa.String(500)),
    sa.Column("dataset_digest", sa.String(36)),
    sqlite_with_rowid=False,
)

# The value of the highest (step, timestamp, value) per key: what runs/get and search read.
# ix_latest_metrics_key_value walks a metric's values in order, NaN (is_nan, value 0) apart.
latest_metrics = sa.Table(
    "latest_metrics", metadata,
    sa.Column("run_uuid", ID, primary_key=True),
    sa.Column("key", KEY, primary_key=True),
    sa.Column("value", sa.Float(53), nullable=False),
    sa.Column("is_nan", sa.Boolean, nullable=False),
    sa.Column("timestamp", sa.BigInteger, nullable=False),
    sa.Column("step", sa.BigInteger, nullable=False),
    sa.Index("ix_latest_metrics_key_value", "key", "is_nan", "value"),
    sqlite_with_rowid=False,
)

datasets = sa.Table(
    "datasets", metadata,
    sa.Column("dataset_uuid", ID, primary_key=True),
    sa.Column("experiment_id", sa.BigInteger, nullable=False),
    sa.Column("name", sa.String(500), nullable=False),
    sa.Column("digest", sa.String(36), nullable=False),
    sa.Column("source_type", sa.String(36), nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("schema", sa.Text),
    sa.Column("profile", sa.Text),
    sa.UniqueConstraint("experiment_id", "name", "digest", name="uq_datasets_experiment_name_digest"),
)

# A dataset used by a run (source DATASET -> destination RUN), as MLflow records run inputs.
run_inputs = sa.Table(
    "run_inputs", metadata,
    sa.Column("input_uuid", ID, primary_key=True),
    sa.Column("run_uuid", ID, nullable=False),
    sa.Column("dataset_uuid", ID, nullable=False),
    sa.UniqueConstraint("run_uuid", "dataset_uuid", name="uq_run_inputs_run_dataset"),
)

input_tags = sa.Table(
    "input_tags", metadata,
    sa.Column("input_uuid", ID, primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("value", sa.String(500), nullable=False),
)

run_model_inputs = sa.Table(
    "run_model_inputs", metadata,
    sa.Column("run_uuid", ID, primary_key=True),
    sa.Column("model_id", ID, primary_key=True),
)

run_model_outputs = sa.Table(
    "run_model_outputs", metadata,
    sa.Column("run_uuid", ID, primary_key=True),
    sa.Column("model_id", ID, primary_key=True),
    sa.Column("step", sa.BigInteger, nullable=False),
)

logged_models = sa.Table(
    "logged_models", metadata,
    sa.Column("model_id", ID, primary_key=True),
    sa.Column("experiment_id", sa.BigInteger, nullable=False, index=True),
    sa.Column("name", sa.String(500), nullable=False),
    sa.Column("artifact_location", sa.Text, nullable=False),
    sa.Column("creation_timestamp_ms", sa.BigInteger, nullable=False),
    sa.Column("last_updated_timestamp_ms", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(40), nullable=False),
    sa.Column("lifecycle_stage", sa.String(20), nullable=False),
    sa.Column("model_type", sa.String(500)),
    sa.Column("source_run_id", ID),
    sa.Column("status_message", sa.Text),
)

logged_model_params = sa.Table(
    "logged_model_params", metadata,
    sa.Column("model_id", ID, primary_key=True),
    sa.Column("key", KEY, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

logged_model_tags = sa.Table(
    "logged_model_tags", metadata,
    sa.Column("model_id", ID, primary_key=True),
    sa.Column("key", KEY, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

logged_model_metrics = sa.Table(
    "logged_model_metrics", metadata,
    sa.Column("model_id", ID, primary_key=True),
    sa.Column("key", KEY, primary_key=True),
    sa.Column("step", sa.BigInteger, primary_key=True),
    sa.Column("timestamp", sa.BigInteger, primary_key=True),
    sa.Column("run_id", ID, primary_key=True),
    sa.Column("dataset_name", sa.String(500), primary_key=True, server_default=""),
    sa.Column("dataset_digest", sa.String(36), primary_key=True, server_default=""),
    sa.Column("value", sa.Float(53), nullable=False),
    sa.Column("is_nan", sa.Boolean, nullable=False),
    sa.Column("experiment_id", sa.BigInteger, nullable=False),
)

registered_models = sa.Table(
    "registered_models", metadata,
    sa.Column("project", sa.String(64), primary_key=True, server_default="default"),
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("creation_time", sa.BigInteger, nullable=False),
    sa.Column("last_updated_time", sa.BigInteger, nullable=False),
    sa.Column("description", sa.Text),
)

registered_model_tags = sa.Table(
    "registered_model_tags", metadata,
    sa.Column("project", sa.String(64), primary_key=True, server_default="default"),
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("key", KEY, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

registered_model_aliases = sa.Table(
    "registered_model_aliases", metadata,
    sa.Column("project", sa.String(64), primary_key=True, server_default="default"),
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("alias", sa.String(256), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)

model_versions = sa.Table(
    "model_versions", metadata,
    sa.Column("project", sa.String(64), primary_key=True, server_default="default"),
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("creation_time", sa.BigInteger, nullable=False),
    sa.Column("last_updated_time", sa.BigInteger, nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("user_id", sa.String(256)),
    sa.Column("current_stage", sa.String(20), nullable=False),
    sa.Column("source", sa.Text),
    sa.Column("storage_location", sa.Text),
    sa.Column("run_id", ID),
    sa.Column("run_link", sa.Text),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("status_message", sa.Text),
    sa.Column("model_id", ID),
    sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.false()),
)

model_version_tags = sa.Table(
    "model_version_tags", metadata,
    sa.Column("project", sa.String(64), primary_key=True, server_default="default"),
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("key", KEY, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

# -- projects, people and access (the projects issue) ------------------------------------------------
projects = sa.Table(
    "projects", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("description", sa.Text),
    sa.Column("protected_aliases", sa.Text, nullable=False),  # JSON list of alias names
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

users = sa.Table(
    "users", metadata,
    sa.Column("user_id", ID, primary_key=True),
    sa.Column("username", sa.String(255), nullable=False, unique=True),
    sa.Column("is_admin", sa.Boolean, nullable=False),
    sa.Column("is_bot", sa.Boolean, nullable=False),
    sa.Column("blocked", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

project_members = sa.Table(
    "project_members", metadata,
    sa.Column("project", sa.String(64), primary_key=True),
    sa.Column("user_id", ID, primary_key=True),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Index("ix_project_members_user", "user_id"),
)

# Only a hash of each token is kept; the token itself is shown once, at creation.
access_tokens = sa.Table(
    "access_tokens", metadata,
    sa.Column("token_id", ID, primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("user_id", ID, nullable=False, index=True),
    sa.Column("project", sa.String(64)),  # set for project access tokens
    sa.Column("scopes", sa.String(255), nullable=False),  # comma-separated: api, read_api
    sa.Column("expires_at", sa.BigInteger),
    sa.Column("revoked_at", sa.BigInteger),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("last_used_at", sa.BigInteger),
)

audit_events = sa.Table(
    "audit_events", metadata,
    sa.Column("event_id", ID, primary_key=True),
    sa.Column("time_ms", sa.BigInteger, nullable=False),
    sa.Column("project", sa.String(64), nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("action", sa.String(255), nullable=False),
    sa.Column("object_type", sa.String(64)),
    sa.Column("object_id", sa.String(512)),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("source_ip", sa.String(64)),
    sa.Column("details", sa.Text),
    sa.Index("ix_audit_events_project_time", "project", "time_ms"),
    # The history of one object (a model's alias moves, in the UI) without scanning the whole log.
    sa.Index("ix_audit_events_object", "project", "object_type", "object_id", "time_ms"),
)

# -- deployments (the serving issue) ------------------------------------------------------------------
# The spec (versions is a JSON list of {"version" | "alias", "weight"}) and the last reported state.
deployments = sa.Table(
    "deployments", metadata,
    sa.Column("project", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("model_name", sa.String(256), nullable=False),
    sa.Column("versions", sa.Text, nullable=False),
    sa.Column("shadow_version", sa.String(32)),
    sa.Column("shadow_alias", sa.String(256)),
    sa.Column("endpoint_url", sa.Text),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("message", sa.Text),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("creation_time", sa.BigInteger, nullable=False),
    sa.Column("last_updated_time", sa.BigInteger, nullable=False),
    sa.Column("last_heartbeat_time", sa.BigInteger),
    sa.Index("ix_deployments_project_model", "project", "model_name"),
)

# One row per model-server process of a deployment, refreshed by its heartbeats.
deployment_replicas = sa.Table(
    "deployment_replicas", metadata,
    sa.Column("project", sa.String(64), primary_key=True),
    sa.Column("deployment", sa.String(256), primary_key=True),
    sa.Column("replica_id", sa.String(256), primary_key=True),
    sa.Column("endpoint_url", sa.Text),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("model_version", sa.String(64)),
    sa.Column("message", sa.Text),
    sa.Column("started_time", sa.BigInteger, nullable=False),
    sa.Column("last_heartbeat_time", sa.BigInteger, nullable=False),
)

# -- pipelines (the pipelines issue) -------------------------------------------------------------------
# A pipeline is known once a runner has run it; spec is a JSON summary (stages, jobs, needs) for the UI.
pipelines = sa.Table(
    "pipelines", metadata,
    sa.Column("project", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("experiment_id", sa.BigInteger),
    sa.Column("spec", sa.Text),
    sa.Column("creation_time", sa.BigInteger, nullable=False),
    sa.Column("last_update_time", sa.BigInteger, nullable=False),
)

# One run of a pipeline: queued by a trigger, or started by a runner. trigger, ci and planned_jobs are JSON.
pipeline_runs = sa.Table(
    "pipeline_runs", metadata,
    sa.Column("run_id", ID, primary_key=True),
    sa.Column("project", sa.String(64), nullable=False),
    sa.Column("pipeline", sa.String(256), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("run_key", sa.String(256)),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("trigger", sa.Text),
    sa.Column("mlflow_run_id", ID),
    sa.Column("experiment_id", sa.BigInteger),
    sa.Column("executor", sa.String(32)),
    sa.Column("git_commit", sa.String(64)),
    sa.Column("ci", sa.Text),
    sa.Column("planned_jobs", sa.Text),
    sa.Column("claimed_by", sa.String(256)),
    sa.Column("message", sa.Text),
    sa.Column("creation_time", sa.BigInteger, nullable=False),
    sa.Column("start_time", sa.BigInteger),
    sa.Column("end_time", sa.BigInteger),
    sa.UniqueConstraint("project", "pipeline", "number", name="uq_pipeline_runs_number"),
    sa.UniqueConstraint("project", "pipeline", "run_key", name="uq_pipeline_runs_run_key"),
    sa.Index("ix_pipeline_runs_status", "status", "creation_time"),
)

# One job of a pipeline run. cache_key + key_parts are what caching compares; outputs (a manifest)
# and result are JSON; outputs_run_id is the MLflow run whose artifacts hold the outputs.
pipeline_jobs = sa.Table(
    "pipeline_jobs", metadata,
    sa.Column("run_id", ID, primary_key=True),
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("project", sa.String(64), nullable=False),
    sa.Column("pipeline", sa.String(256), nullable=False),
    sa.Column("stage", sa.String(100)),
    sa.Column("kind", sa.String(20)),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("cache_key", sa.String(64)),
    sa.Column("key_parts", sa.Text),
    sa.Column("cached_from", ID),
    sa.Column("outputs_run_id", ID),
    sa.Column("mlflow_run_id", ID),
    sa.Column("outputs", sa.Text),
    sa.Column("result", sa.Text),
    sa.Column("attempt", sa.Integer),
    sa.Column("message", sa.Text),
    sa.Column("start_time", sa.BigInteger),
    sa.Column("end_time", sa.BigInteger),
    sa.Index("ix_pipeline_jobs_cache", "project", "pipeline", "name", "cache_key"),
    sa.Index("ix_pipeline_jobs_history", "project", "pipeline", "name", "end_time"),
)

# -- registry webhooks (MLflow's webhook API) --------------------------------------------------------------
webhooks = sa.Table(
    "webhooks", metadata,
    sa.Column("webhook_id", sa.String(36), primary_key=True),
    sa.Column("project", sa.String(64), nullable=False),
    sa.Column("name", sa.String(63), nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("secret", sa.Text),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("creation_timestamp", sa.BigInteger, nullable=False),
    sa.Column("last_updated_timestamp", sa.BigInteger, nullable=False),
    sa.Column("deleted_timestamp", sa.BigInteger),
    sa.Index("ix_webhooks_project", "project", "creation_timestamp"),
)

webhook_events = sa.Table(
    "webhook_events", metadata,
    sa.Column("webhook_id", sa.String(36), primary_key=True),
    sa.Column("entity", sa.String(50), primary_key=True),
    sa.Column("action", sa.String(20), primary_key=True),
    sa.Index("ix_webhook_events_event", "entity", "action"),
)

# Every delivery attempt's outcome, so an operator can see why a CI was not triggered.
webhook_deliveries = sa.Table(
    "webhook_deliveries", metadata,
    sa.Column("delivery_id", sa.String(36), primary_key=True),
    sa.Column("webhook_id", sa.String(36), nullable=False),
    sa.Column("event", sa.String(80), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("response_status", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("creation_time", sa.BigInteger, nullable=False),
    sa.Column("last_attempt_time", sa.BigInteger),
    sa.Index("ix_webhook_deliveries_webhook_time", "webhook_id", "creation_time"),
)

# -- monitoring and alerting (the monitoring issue) ---------------------------------------------------
# Prediction rows live in one table per UTC day (``prediction_log_YYYYMMDD``, made on first use by
# store/predictions.py, see ``prediction_partition``), so a window's query touches only its days and
# retention drops whole tables. This table lists the partitions that exist.
prediction_partitions = sa.Table(
    "prediction_partitions", metadata,
    sa.Column("day", sa.Integer, primary_key=True, autoincrement=False),  # YYYYMMDD
    sa.Column("table_name", sa.String(64), nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
)

# Ground truth, keyed by the request id it belongs to; it may arrive before or after the prediction.
prediction_labels = sa.Table(
    "prediction_labels", metadata,
    sa.Column("project", sa.String(64), primary_key=True),
    sa.Column("request_id", sa.String(256), primary_key=True),
    sa.Column("label", sa.Text, nullable=False),  # JSON
    sa.Column("received_ms", sa.BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

# One row per deployment and time bucket: how many rows and labels arrived (bumped by ingestion),
# how many the stored profile covers, and the profile itself. A bucket whose counts moved is
# summarised again; evaluating a window merges its buckets' profiles and reads no rows.
window_buckets = sa.Table(
    "window_buckets", metadata,
    sa.Column("project", sa.String(64), primary_key=True),
    sa.Column("deployment", sa.String(256), primary_key=True),
    sa.Column("bucket_ms", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("rows_seen", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("labels_seen", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("rows_done", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("labels_done", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("summary", sa.LargeBinary),
    sa.Column("updated_ms", sa.BigInteger),
)

reference_profiles = sa.Table(
    "reference_profiles", metadata,
    sa.Column("reference_id", sa.String(64), primary_key=True),
    sa.Column("project", sa.String(64), nullable=False),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("model_name", sa.String(256)),
    sa.Column("model_version", sa.String(64)),
    sa.Column("source", sa.Text),
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("profile", sa.LargeBinary, nullable=False),
    sa.Index("ix_reference_profiles_model", "project", "model_name", "model_version"),
)

monitors = sa.Table(
    "monitors", metadata,
    sa.Column("monitor_id", sa.String(64), primary_key=True),
    sa.Column("project", sa.String(64), nullable=False),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("deployment", sa.String(256), nullable=False),
    sa.Column("config", sa.Text, nullable=False),  # JSON
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    # The scheduler claims an evaluation by moving next_eval_ms forward with a conditional UPDATE,
    # so with several server processes each window is evaluated once.
    sa.Column("next_eval_ms", sa.BigInteger, nullable=False),
    sa.Column("last_eval_ms", sa.BigInteger),
    sa.Column("last_status", sa.String(32)),
    sa.Column("last_error", sa.Text),
    sa.UniqueConstraint("project", "name", name="uq_monitors_project_name"),
)

# The monitor series: one value per (evaluation time, metric, feature); feature '' when none.
monitor_series = sa.Table(
    "monitor_series", metadata,
    sa.Column("monitor_id", sa.String(64), primary_key=True),
    sa.Column("ts_ms", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("metric", sa.String(64), primary_key=True),
    sa.Column("feature", sa.String(256), primary_key=True),
    sa.Column("value", sa.Float(53), nullable=False),
    sqlite_with_rowid=False,
)

# The full result of recent evaluations (histograms per feature, for reports and charts).
monitor_reports = sa.Table(
    "monitor_reports", metadata,
    sa.Column("monitor_id", sa.String(64), primary_key=True),
    sa.Column("ts_ms", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("report", sa.LargeBinary, nullable=False),
)

alert_rules = sa.Table(
    "alert_rules", metadata,
    sa.Column("rule_id", sa.String(64), primary_key=True),
    sa.Column("project", sa.String(64), nullable=False),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),  # JSON: expr, for, severity, labels, channels, actions, ...
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    sa.Column("created_by", sa.String(256)),
    sa.UniqueConstraint("project", "name", name="uq_alert_rules_project_name"),
)

# One row per alert instance (a rule and one label set) and incident: pending, firing, resolved.
alerts = sa.Table(
    "alerts", metadata,
    sa.Column("alert_id", sa.String(64), primary_key=True),
    sa.Column("project", sa.String(64), nullable=False),
    sa.Column("rule_id", sa.String(64), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("labels", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("value", sa.Float(53)),
    sa.Column("active_at_ms", sa.BigInteger, nullable=False),
    sa.Column("fired_at_ms", sa.BigInteger),
    sa.Column("resolved_at_ms", sa.BigInteger),
    sa.Column("last_true_ms", sa.BigInteger),
    sa.Column("last_eval_ms", sa.BigInteger, nullable=False),
    sa.Index("ix_alerts_rule_state", "rule_id", "state"),
    sa.Index("ix_alerts_project_state", "project", "state"),
)

# Alert, notification and action history (the audit log of the projects issue records them too).
alert_events = sa.Table(
    "alert_events", metadata,
    sa.Column("event_id", sa.String(64), primary_key=True),
    sa.Column("project", sa.String(64), nullable=False),
    sa.Column("ts_ms", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("rule_id", sa.String(64)),
    sa.Column("alert_id", sa.String(64)),
    sa.Column("detail", sa.Text),
    sa.Index("ix_alert_events_project_ts", "project", "ts_ms"),
)

# Notification groups: alerts of one rule sharing the group_by labels page together, once.
alert_groups = sa.Table(
    "alert_groups", metadata,
    sa.Column("rule_id", sa.String(64), primary_key=True),
    sa.Column("group_key", sa.String(512), primary_key=True),
    sa.Column("project", sa.String(64), nullable=False),
    sa.Column("labels", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # firing | resolved
    sa.Column("notified_ms", sa.BigInteger),
    sa.Column("notified_alerts", sa.Text),  # JSON list of the alert ids in the last notification
)

silences = sa.Table(
    "silences", metadata,
    sa.Column("silence_id", sa.String(64), primary_key=True),
    sa.Column("project", sa.String(64), nullable=False),
    sa.Column("matchers", sa.Text, nullable=False),  # JSON list of {name, op, value}
    sa.Column("starts_ms", sa.BigInteger, nullable=False),
    sa.Column("ends_ms", sa.BigInteger, nullable=False),
    sa.Column("comment", sa.Text),
    sa.Column("created_by", sa.String(256)),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
)

notification_channels = sa.Table(
    "notification_channels", metadata,
    sa.Column("channel_id", sa.String(64), primary_key=True),
    sa.Column("project", sa.String(64), nullable=False),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("type", sa.String(16), nullable=False),  # webhook | slack | email
    sa.Column("config", sa.Text, nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("project", "name", name="uq_notification_channels_project_name"),
)

# Every notification and webhook action to deliver: retried with backoff, each attempt recorded.
notification_deliveries = sa.Table(
    "notification_deliveries", metadata,
    sa.Column("delivery_id", sa.String(64), primary_key=True),
    sa.Column("project", sa.String(64), nullable=False),
    sa.Column("channel", sa.String(256)),
    sa.Column("target", sa.Text, nullable=False),  # JSON {type, config}, copied when queued
    sa.Column("rule_id", sa.String(64)),
    sa.Column("group_key", sa.String(512)),
    sa.Column("kind", sa.String(16), nullable=False),  # firing | resolved | test | action
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending | sent | failed
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_ms", sa.BigInteger, nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("sent_ms", sa.BigInteger),
    sa.Index("ix_notification_deliveries_due", "status", "next_attempt_ms"),
    sa.Index("ix_notification_deliveries_project", "project", "created_ms"),
)

alert_actions = sa.Table(
    "alert_actions", metadata,
    sa.Column("action_id", sa.String(64), primary_key=True),
    sa.Column("project", sa.String(64), nullable=False),
    sa.Column("rule_id", sa.String(64)),
    sa.Column("group_key", sa.String(512)),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # done | failed | refused
    sa.Column("result", sa.Text),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Index("ix_alert_actions_project", "project", "created_ms"),
)

# Leases for work that one server process at a time should do (reference sweeps, retention).
monitor_leases = sa.Table(
    "monitor_leases", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("until_ms", sa.BigInteger, nullable=False),
)
