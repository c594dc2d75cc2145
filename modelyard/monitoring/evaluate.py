"""One evaluation of a monitor: a window summary (and a reference profile) in, series and a report out.

Monitor configuration (every key optional; :func:`normalise_config` fills the defaults)::

    kinds            data_drift, prediction_drift, data_quality, performance, health (default: all)
    window_seconds   length of the window (default 3600)
    every_seconds    time between evaluations; equal to the window for tumbling windows
    mode             "tumbling" (default) or "sliding"
    min_rows         windows with fewer rows are not judged for drift (default 100)
    drift            {method: auto|ks|chisquare|z|wasserstein|jensenshannon|psi, threshold, columns,
                      per_column: {col: {method, threshold}}, drift_share: 0.5}
    reference        {reference_id} or {model_name, version}: what to compare with (default: the
                     profile of the version that served most of the window)
    prediction_column  the reference column predictions are compared with (default: prediction,
                     target, label or y, whichever the reference has)
    task             classification | regression (default: inferred from the labels)
    positive_label   the positive class for binary precision, recall, F1 and ROC AUC

Series are (metric, feature, value); feature is '' for window-level metrics.
"""
from __future__ import annotations

import math

from modelyard.monitoring.drift import METHODS, data_drift, data_quality
from modelyard.monitoring.profile import Profile
from modelyard.monitoring.window import WindowSummary

__all__ = ["KINDS", "normalise_config", "evaluate_window", "ConfigError", "METRIC_HELP"]

KINDS = ("data_drift", "prediction_drift", "data_quality", "performance", "health")
_TARGETS = ("prediction", "target", "label", "y")

# Every metric a monitor writes, with its meaning (``/metrics`` shows these as HELP lines).
METRIC_HELP = {
    "rows": "Predictions in the window.",
    "traffic_per_second": "Predictions per second over the window.",
    "error_rate": "Share of the window's predictions that reported an error.",
    "latency_p50_seconds": "Median prediction latency.",
    "latency_p90_seconds": "90th percentile prediction latency.",
    "latency_p99_seconds": "99th percentile prediction latency.",
    "drift_score": "Drift statistic of a feature (p-value or distance, see the report for the method).",
    "drift_detected": "1 when the feature drifted from the reference, else 0.",
    "drift_share": "Share of the tested features that drifted.",
    "dataset_drift": "1 when the share of drifted features reached drift_share, else 0.",
    "drifted_features": "Number of drifted features.",
    "prediction_drift_score": "Drift statistic of a prediction column against the reference.",
    "prediction_drift_detected": "1 when the predictions drifted from the reference, else 0.",
    "null_ratio": "Share of rows where the feature is null or missing.",
    "out_of_range_ratio": "Share of rows with a value outside the reference's range.",
    "unseen_category_ratio": "Share of rows with a category the reference never had.",
    "type_error_ratio": "Share of rows whose value has the wrong type.",
    "schema_violations": "Missing columns, extra columns and columns with type errors.",
    "missing_columns": "Reference columns absent from the window.",
    "extra_columns": "Window columns the reference does not have.",
    "labeled_rows": "Predictions in the window whose label has arrived.",
    "label_ratio": "Share of the window's predictions with a label.",
    "accuracy": "Accuracy over labeled predictions.",
    "precision": "Precision (binary: of the positive label; else macro average).",
    "recall": "Recall (binary: of the positive label; else macro average).",
    "f1": "F1 score (binary: of the positive label; else macro average).",
    "roc_auc": "ROC AUC from the predicted scores.",
    "log_loss": "Log loss from the predicted probabilities.",
    "mae": "Mean absolute error.",
    "rmse": "Root mean squared error.",
    "r2": "Coefficient of determination.",
}


class ConfigError(ValueError):
    pass


def normalise_config(config: dict | None, bucket_seconds: int) -> dict:
    """Defaults filled in and every value checked; raises :class:`ConfigError` with the reason."""
    c = dict(config or {})
    unknown = set(c) - {"kinds", "window_seconds", "every_seconds", "mode", "min_rows", "drift", "reference",
                        "prediction_column", "task", "positive_label"}
    if unknown:
        raise ConfigError(f"Unknown monitor setting(s): {', '.join(sorted(unknown))}.")
    kinds = c.get("kinds") or list(KINDS)
    if not isinstance(kinds, list) or any(k not in KINDS for k in kinds):
        raise ConfigError(f"'kinds' is a list of: {', '.join(KINDS)}.")
    mode = c.get("mode", "tumbling")
    if mode not in ("tumbling", "sliding"):
        raise ConfigError("'mode' is 'tumbling' or 'sliding'.")
    window = _positive_int(c.get("window_seconds", 3600), "window_seconds")
    every = _positive_int(c.get("every_seconds", window if mode == "tumbling" else max(window // 4, bucket_seconds)),
                          "every_seconds")
    for name, value in (("window_seconds", window), ("every_seconds", every)):
        if value % bucket_seconds:
            raise ConfigError(f"'{name}' must be a multiple of the server's bucket width ({bucket_seconds} s).")
    if mode == "tumbling" and every != window:
        raise ConfigError("A tumbling window is evaluated once per window: 'every_seconds' equals 'window_seconds'.")
    drift = dict(c.get("drift") or {})
    if set(drift) - {"method", "threshold", "columns", "per_column", "drift_share"}:
        raise ConfigError("'drift' takes method, threshold, columns, per_column and drift_share.")
    method = drift.get("method", "auto")
    if method != "auto" and method not in METHODS:
        raise ConfigError(f"drift method is auto or one of: {', '.join(METHODS)}.")
    for col, opts in (drift.get("per_column") or {}).items():
        if not isinstance(opts, dict) or (opts.get("method", "auto") != "auto" and opts.get("method") not in METHODS):
            raise ConfigError(f"per_column[{col!r}] is {{method, threshold}} with a known method.")
    if drift.get("threshold") is not None and not _is_number(drift["threshold"]):
        raise ConfigError("drift threshold is a number.")
    share = drift.get("drift_share", 0.5)
    if not _is_number(share) or not 0 < share <= 1:
        raise ConfigError("drift_share is a number in (0, 1].")
    ref = c.get("reference")
    if ref is not None and (not isinstance(ref, dict) or not (ref.get("reference_id") or ref.get("model_name"))):
        raise ConfigError("'reference' is {reference_id} or {model_name, version}.")
    task = c.get("task")
    if task not in (None, "classification", "regression"):
        raise ConfigError("'task' is classification or regression.")
    return {"kinds": kinds, "mode": mode, "window_seconds": window, "every_seconds": every,
            "min_rows": _positive_int(c.get("min_rows", 100), "min_rows"),
            "drift": {"method": method, "threshold": drift.get("threshold"), "columns": drift.get("columns"),
                      "per_column": drift.get("per_column") or {}, "drift_share": share},
            "reference": ref, "prediction_column": c.get("prediction_column"), "task": task,
            "positive_label": None if c.get("positive_label") is None else str(c["positive_label"])}


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _positive_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 1 or int(v) != v:
        raise ConfigError(f"'{name}' is a positive whole number.")
    return int(v)


def _prediction_reference(reference: Profile, outputs: Profile, column: str | None) -> tuple[Profile, Profile]:
    """Pair each prediction column of the window with its reference column, as two profiles with
    the same column names."""
    ref_cols, cur_cols = {}, {}
    for name, col in outputs.columns.items():
        if name == "prediction":
            candidates = [column] if column else list(_TARGETS)
        else:
            candidates = [name.split(".", 1)[-1], name]
        for cand in candidates:
            if cand and cand in reference.columns:
                ref_cols[name], cur_cols[name] = reference.columns[cand], col
                break
    return Profile(reference.rows, ref_cols), Profile(outputs.rows, cur_cols)


def evaluate_window(config: dict, window: WindowSummary, reference: Profile | None, start_ms: int, end_ms: int,
                    histograms: bool = True) -> tuple[list[tuple[str, str, float]], dict]:
    """(series, report) for one window. Nothing is judged on an empty window; drift waits for
    ``min_rows`` rows."""
    kinds = config["kinds"]
    series: list[tuple[str, str, float]] = []
    report: dict = {"window": {"start_ms": start_ms, "end_ms": end_ms}, "rows": window.rows,
                    "versions": window.versions}

    def put(metric: str, feature: str, value) -> None:
        if value is not None and isinstance(value, (int, float)) and math.isfinite(value):
            series.append((metric, feature, float(value)))

    seconds = max((end_ms - start_ms) / 1000, 1e-9)
    if "health" in kinds:
        put("rows", "", window.rows)
        put("traffic_per_second", "", window.rows / seconds)
        if window.rows:
            put("error_rate", "", window.errors / window.rows)
        health = {"rows": window.rows, "errors": window.errors, "traffic_per_second": window.rows / seconds}
        if window.latency.count:
            for q, name in ((0.5, "p50"), (0.9, "p90"), (0.99, "p99")):
                value = float(window.latency.quantiles([q])[0]) / 1000
                put(f"latency_{name}_seconds", "", value)
                health[f"latency_{name}_seconds"] = value
        report["health"] = health
    judged = reference is not None and window.rows >= config["min_rows"]
    drift_opts = config["drift"]
    if "data_drift" in kinds and judged:
        result = data_drift(reference, window.inputs, columns=drift_opts["columns"], method=drift_opts["method"],
                            threshold=drift_opts["threshold"], per_column=drift_opts["per_column"],
                            drift_share=drift_opts["drift_share"], min_rows=config["min_rows"], histogram=histograms)
        for col in result["columns"]:
            put("drift_score", col.column, col.value)
            put("drift_detected", col.column, 1.0 if col.drifted else 0.0)
        if result["tested"]:
            put("drift_share", "", result["drift_share"])
            put("dataset_drift", "", 1.0 if result["dataset_drift"] else 0.0)
            put("drifted_features", "", len(result["drifted_columns"]))
        report["data_drift"] = {**result, "columns": [c.to_dict() for c in result["columns"]]}
    if "prediction_drift" in kinds and judged:
        ref_pred, cur_pred = _prediction_reference(reference, window.outputs, config.get("prediction_column"))
        if ref_pred.columns:
            result = data_drift(ref_pred, cur_pred, method=drift_opts["method"], threshold=drift_opts["threshold"],
                                min_rows=config["min_rows"], histogram=histograms)
            for col in result["columns"]:
                put("prediction_drift_score", col.column, col.value)
                put("prediction_drift_detected", col.column, 1.0 if col.drifted else 0.0)
            report["prediction_drift"] = {**result, "columns": [c.to_dict() for c in result["columns"]]}
    if "data_quality" in kinds and window.rows:
        quality = data_quality(reference, window.inputs)
        for name, entry in quality["columns"].items():
            for metric, value in entry.items():
                put(metric, name, value)
        for metric in ("schema_violations",):
            if metric in quality:
                put(metric, "", quality[metric])
        if "missing_columns" in quality:
            put("missing_columns", "", len(quality["missing_columns"]))
            put("extra_columns", "", len(quality["extra_columns"]))
        report["data_quality"] = quality
    if "performance" in kinds:
        perf = window.performance
        put("labeled_rows", "", perf.labeled)
        if window.rows:
            put("label_ratio", "", perf.labeled / window.rows)
        metrics = perf.metrics(config.get("task"), config.get("positive_label"))
        for name, value in metrics.items():
            put(name, "", value)
        report["performance"] = {"labeled_rows": perf.labeled, "task": config.get("task") or perf.task(), **metrics}
    if reference is None:
        report["note"] = "no reference profile: drift and range checks need one"
    elif window.rows < config["min_rows"]:
        report["note"] = f"{window.rows} rows is below min_rows={config['min_rows']}: drift not judged"
    return series, report
