"""Drift and data quality: compare a current profile with a reference profile.

The test for each column is chosen as Evidently's ``DataDriftPreset`` chooses it
(``legacy/calculations/stattests/registry.py``), so results and thresholds carry over:

==========================  ===============================  ==============================
reference rows              numeric, more than 5 values      categorical, or at most 5 values
==========================  ===============================  ==============================
at most 1000                Kolmogorov-Smirnov (p < 0.05)    chi-squared (p < 0.05); z-test if 2 values
more than 1000              normed Wasserstein (>= 0.1)      Jensen-Shannon distance (>= 0.1)
==========================  ===============================  ==============================

On large samples a p-value test flags almost every column (a shift far too small to matter is
still "significant"), which is Evidently's issue 50; distances with thresholds do not. A user may
pick the method and threshold for all columns or per column. Windows with fewer rows than
``min_rows`` are not judged at all (tiny windows raise false alarms).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from modelyard.monitoring import stats
from modelyard.monitoring.profile import ColumnProfile, Profile

__all__ = ["METHODS", "ColumnDrift", "choose_method", "column_drift", "data_drift", "data_quality"]

# method -> (default threshold, "p_value" or "distance")
METHODS = {
    "ks": (0.05, "p_value"),
    "chisquare": (0.05, "p_value"),
    "z": (0.05, "p_value"),
    "wasserstein": (0.1, "distance"),
    "jensenshannon": (0.1, "distance"),
    "psi": (0.1, "distance"),
}
_HIST_BINS = 30
_HIST_CATEGORIES = 20


@dataclass
class ColumnDrift:
    column: str
    method: str
    value: float
    threshold: float
    drifted: bool
    kind: str
    reference_rows: int
    current_rows: int
    histogram: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"column": self.column, "method": self.method, "value": _finite(self.value),
                "threshold": self.threshold, "drifted": self.drifted, "statistic": self.kind,
                "reference_rows": self.reference_rows, "current_rows": self.current_rows,
                "histogram": self.histogram}


def _finite(v: float):
    return None if v is None or not math.isfinite(v) else v


def _rows(col: ColumnProfile, kind: str) -> int:
    return col.numeric.n if kind == "numeric" else col.categories.total


def _pooled_unique(ref: ColumnProfile, cur: ColumnProfile, kind: str) -> int:
    """Distinct values of both samples together; "many" (a large number) when not counted."""
    if kind == "categorical":
        return len(set(ref.value_counts()) | set(cur.value_counts()))
    if ref.numeric.distinct is None or cur.numeric.distinct is None:
        # A sketch that is exact still knows its values.
        rv, cv = ref.value_counts(), cur.value_counts()
        if rv and cv:
            return len(set(rv) | set(cv))
        return 1 << 30
    return len(set(ref.numeric.distinct) | set(cur.numeric.distinct))


def choose_method(ref: ColumnProfile, cur: ColumnProfile) -> str:
    """Evidently's default test for this column, from its type, the reference size and the
    number of distinct values."""
    kind = ref.kind
    n_values = _pooled_unique(ref, cur, kind)
    if _rows(ref, kind) <= 1000:
        if kind == "numeric" and n_values > 5:
            return "ks"
        return "chisquare" if n_values > 2 else "z"
    if kind == "numeric" and n_values > 5:
        return "wasserstein"
    return "jensenshannon"


def _shares(ref: ColumnProfile, cur: ColumnProfile, kind: str) -> tuple[np.ndarray, np.ndarray, list]:
    """Evidently's binning: Sturges' bins for numbers with more than 20 reference values,
    categories (or the few numbers) by value otherwise. Returns (ref shares, cur shares, labels)."""
    if kind == "numeric" and (ref.n_unique is None or ref.n_unique > 20):
        low, high = min(ref.numeric.min, cur.numeric.min), max(ref.numeric.max, cur.numeric.max)
        p, q = stats.binned_shares(ref.numeric.sketch, cur.numeric.sketch, low, high)
        return p, q, list(np.linspace(low, high, len(p) + 1)) if high > low else [low, high]
    rc, cc = ref.value_counts(), cur.value_counts()
    keys = sorted(set(rc) | set(cc), key=str)
    r = np.array([rc.get(k, 0) for k in keys], float)
    c = np.array([cc.get(k, 0) for k in keys], float)
    return r / max(r.sum(), 1), c / max(c.sum(), 1), keys


def column_drift(name: str, ref: ColumnProfile, cur: ColumnProfile, method: str | None = None,
                 threshold: float | None = None, histogram: bool = False) -> ColumnDrift:
    """Drift of one column. ``method`` None or "auto" picks Evidently's default."""
    kind = ref.kind
    if method in (None, "", "auto"):
        method = choose_method(ref, cur)
    if method not in METHODS:
        raise ValueError(f"unknown drift method {method!r}; one of {', '.join(METHODS)}")
    default, statistic = METHODS[method]
    threshold = default if threshold is None else float(threshold)
    if method == "ks":
        _, value = stats.ks_test(ref.numeric.sketch, cur.numeric.sketch)
    elif method == "wasserstein":
        value = stats.wasserstein_normed(ref.numeric.sketch, cur.numeric.sketch, ref.numeric.std)
    elif method == "chisquare":
        _, value = stats.chi_square_test(ref.value_counts(), cur.value_counts())
    elif method == "z":
        _, value = stats.z_test(ref.value_counts(), cur.value_counts())
    else:
        p, q, _ = _shares(ref, cur, kind)
        value = stats.jensen_shannon(p, q) if method == "jensenshannon" else stats.psi(p, q)
    if statistic == "p_value":
        drifted = bool(math.isfinite(value) and value < threshold)
    else:
        drifted = bool(math.isfinite(value) and value >= threshold)
    hist = _histogram(ref, cur, kind) if histogram else {}
    return ColumnDrift(name, method, value, threshold, drifted, statistic, _rows(ref, kind), _rows(cur, kind), hist)


def _histogram(ref: ColumnProfile, cur: ColumnProfile, kind: str) -> dict:
    """Reference and current shares side by side, for charts (at most 30 bins or 20 categories)."""
    if kind == "numeric" and (ref.n_unique is None or ref.n_unique > _HIST_CATEGORIES):
        low = min(ref.numeric.min, cur.numeric.min) if cur.numeric.n else ref.numeric.min
        high = max(ref.numeric.max, cur.numeric.max) if cur.numeric.n else ref.numeric.max
        if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
            return {}
        edges = np.linspace(low, high, _HIST_BINS + 1)

        def shares(s):
            if not len(s.values):
                return np.zeros(_HIST_BINS)
            below = np.searchsorted(s.values, edges, side="left").astype(float)
            below[-1] = np.searchsorted(s.values, edges[-1], side="right")
            return np.diff(below) / len(s.values)

        return {"type": "numeric", "edges": edges.tolist(), "reference": shares(ref.numeric.sketch).tolist(),
                "current": shares(cur.numeric.sketch).tolist()}
    p, q, keys = _shares(ref, cur, kind)
    order = np.argsort(-(p + q), kind="stable")[:_HIST_CATEGORIES]
    return {"type": "categorical", "labels": [str(keys[i]).replace("\x00other", "(other)") for i in order],
            "reference": p[order].tolist(), "current": q[order].tolist()}


def data_drift(reference: Profile, current: Profile, columns: list[str] | None = None, method: str | None = None,
               threshold: float | None = None, per_column: dict | None = None, drift_share: float = 0.5,
               min_rows: int = 1, histogram: bool = False) -> dict:
    """Drift of every reference column present in ``current``; the dataset drifts when the share
    of drifted columns reaches ``drift_share`` (Evidently's default 0.5)."""
    per_column = per_column or {}
    names = [c for c in (columns or reference.columns) if c in reference.columns and c in current.columns]
    results = []
    for name in names:
        ref, cur = reference.columns[name], current.columns[name]
        if _rows(cur, ref.kind) < min_rows or _rows(ref, ref.kind) == 0:
            continue
        opts = per_column.get(name, {})
        results.append(column_drift(name, ref, cur, opts.get("method", method), opts.get("threshold", threshold),
                                    histogram=histogram))
    drifted = [r.column for r in results if r.drifted]
    share = len(drifted) / len(results) if results else 0.0
    return {"columns": results, "drifted_columns": drifted, "drift_share": share,
            "dataset_drift": bool(results) and share >= drift_share, "tested": len(results)}


def data_quality(reference: Profile | None, current: Profile) -> dict:
    """Nulls, values out of the reference range, unseen categories and schema violations per column.

    Ratios are of the window's rows. Without a reference only nulls are judged.
    """
    rows = max(current.rows, 1)
    out: dict[str, dict] = {}
    for name, cur in current.columns.items():
        missing = current.rows - cur.present
        entry = {"null_ratio": (cur.nulls + missing) / rows}
        ref = reference.columns.get(name) if reference else None
        if ref is not None:
            if ref.kind == "numeric":
                wrong = cur.categories.total
                s = cur.numeric.sketch
                outside = 0.0
                if cur.numeric.n and ref.numeric.n:
                    below = np.searchsorted(s.values, ref.numeric.min, side="left") / len(s.values)
                    above = 1 - np.searchsorted(s.values, ref.numeric.max, side="right") / len(s.values)
                    outside = (below + above) * cur.numeric.n
                entry["out_of_range_ratio"] = float(outside) / rows
            else:
                wrong = cur.numeric.n
                known = ref.categories.counts
                unseen = sum(v for k, v in cur.categories.counts.items() if k not in known)
                if not ref.categories.other:  # the reference kept every category it saw
                    unseen += cur.categories.other
                entry["unseen_category_ratio"] = unseen / rows
            entry["type_error_ratio"] = wrong / rows
        out[name] = entry
    result = {"columns": out}
    if reference is not None:
        missing_cols = [c for c in reference.columns if c not in current.columns or current.columns[c].present == 0]
        extra_cols = [c for c in current.columns if c not in reference.columns]
        typed = [c for c, e in out.items() if e.get("type_error_ratio", 0) > 0]
        result.update(missing_columns=missing_cols, extra_columns=extra_cols,
                      schema_violations=len(missing_cols) + len(extra_cols) + len(typed))
    return result
