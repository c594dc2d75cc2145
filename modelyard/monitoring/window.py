"""Window summaries: everything a monitor needs from a stretch of prediction logs, mergeable.

A :class:`WindowSummary` holds the inputs' profile, the outputs' profile (the prediction columns),
latency and error counts, the versions that answered, and a :class:`Performance` accumulator over
the rows whose label has arrived. The server keeps one summary per deployment and time bucket;
a window is the merge of its buckets.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import orjson

from modelyard.monitoring.profile import Profile, profile_records
from modelyard.monitoring.sketch import QuantileSketch

__all__ = ["WindowSummary", "Performance", "prediction_columns", "summarise_rows"]

SCORE_BINS = 1000
_MAX_CLASSES = 50


def prediction_columns(outputs: Any) -> dict:
    """The prediction of one row as columns: a scalar is ``prediction``; an object gives one column
    per key (``prediction.<key>``) unless it has a ``prediction`` key; a list of one is its item."""
    if isinstance(outputs, list):
        if len(outputs) == 1:
            return prediction_columns(outputs[0])
        return {f"prediction_{i}": v for i, v in enumerate(outputs[:_MAX_CLASSES]) if not isinstance(v, (list, dict))}
    if isinstance(outputs, dict):
        if "prediction" in outputs or "predictions" in outputs:
            return prediction_columns(outputs.get("prediction", outputs.get("predictions")))
        return {f"prediction.{k}": v for k, v in list(outputs.items())[:_MAX_CLASSES] if not isinstance(v, (list, dict))}
    return {"prediction": outputs}


def _predicted_and_score(outputs: Any) -> tuple[Any, float | None, dict | None]:
    """(predicted value, positive-class score, class probabilities) as far as the output says."""
    score = probs = None
    if isinstance(outputs, dict):
        raw = outputs.get("probabilities", outputs.get("probability"))
        if isinstance(raw, dict):
            probs = {str(k): float(v) for k, v in raw.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        elif isinstance(raw, list) and len(raw) == 2 and all(isinstance(v, (int, float)) for v in raw):
            probs = {"0": float(raw[0]), "1": float(raw[1])}
        s = outputs.get("score")
        if isinstance(s, (int, float)) and not isinstance(s, bool):
            score = float(s)
        pred = outputs.get("prediction", outputs.get("predictions"))
        if pred is None and probs:
            pred = max(probs, key=probs.get)
        outputs = pred
    if isinstance(outputs, list) and len(outputs) == 1:
        outputs = outputs[0]
    if probs and score is None and len(probs) == 2:
        score = probs[sorted(probs)[-1]]
    return outputs, score, probs


def _key(v: Any) -> str:
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class Performance:
    """Mergeable model-quality accumulator over (prediction, label) pairs.

    Classification: a confusion table by (label, predicted), log loss sums when probabilities
    come with the prediction, and per-class score histograms for ROC AUC (1000 bins).
    Regression: sums of errors, squared errors and labels, enough for MAE, RMSE and R2.
    """

    labeled: int = 0
    confusion: dict[str, int] = field(default_factory=dict)  # "label\x1fpredicted" -> count
    logloss_sum: float = 0.0
    logloss_n: int = 0
    scores: dict[str, list[int]] = field(default_factory=dict)  # label -> histogram of positive score
    reg_n: int = 0
    abs_err: float = 0.0
    sq_err: float = 0.0
    y_sum: float = 0.0
    y_sq: float = 0.0

    def add(self, outputs: Any, label: Any) -> None:
        if isinstance(label, dict):
            label = label.get("label", label.get("value"))
        if label is None:
            return
        pred, score, probs = _predicted_and_score(outputs)
        self.labeled += 1
        if _is_number(label) and _is_number(pred):
            err = float(pred) - float(label)
            self.reg_n += 1
            self.abs_err += abs(err)
            self.sq_err += err * err
            self.y_sum += float(label)
            self.y_sq += float(label) ** 2
        lk, pk = _key(label), _key(pred)
        if len(self.confusion) < _MAX_CLASSES ** 2 or f"{lk}\x1f{pk}" in self.confusion:
            k = f"{lk}\x1f{pk}"
            self.confusion[k] = self.confusion.get(k, 0) + 1
        if probs and lk in probs:
            self.logloss_sum += -math.log(min(max(probs[lk], 1e-15), 1.0))
            self.logloss_n += 1
        if score is not None and 0.0 <= score <= 1.0:
            hist = self.scores.get(lk)
            if hist is None:
                if len(self.scores) >= 2:
                    return
                hist = self.scores[lk] = [0] * SCORE_BINS
            hist[min(int(score * SCORE_BINS), SCORE_BINS - 1)] += 1

    @classmethod
    def merge(cls, parts: list["Performance"]) -> "Performance":
        out = cls()
        for p in parts:
            out.labeled += p.labeled
            for k, v in p.confusion.items():
                out.confusion[k] = out.confusion.get(k, 0) + v
            out.logloss_sum += p.logloss_sum
            out.logloss_n += p.logloss_n
            for k, h in p.scores.items():
                mine = out.scores.setdefault(k, [0] * SCORE_BINS)
                out.scores[k] = [a + b for a, b in zip(mine, h)]
            out.reg_n += p.reg_n
            out.abs_err += p.abs_err
            out.sq_err += p.sq_err
            out.y_sum += p.y_sum
            out.y_sq += p.y_sq
        return out

    def task(self) -> str:
        """Regression when every pair was numeric and the labels are not a handful of classes."""
        labels = {k.split("\x1f")[0] for k in self.confusion}
        if self.reg_n and self.reg_n == self.labeled and len(labels) > 10:
            return "regression"
        return "classification"

    def metrics(self, task: str | None = None, positive: str | None = None) -> dict[str, float]:
        if not self.labeled:
            return {}
        task = task or self.task()
        if task == "regression":
            if not self.reg_n:
                return {}
            n = self.reg_n
            sst = self.y_sq - self.y_sum ** 2 / n
            out = {"mae": self.abs_err / n, "rmse": math.sqrt(self.sq_err / n)}
            if sst > 0:
                out["r2"] = 1 - self.sq_err / sst
            return out
        pairs = {tuple(k.split("\x1f", 1)): v for k, v in self.confusion.items()}
        total = sum(pairs.values())
        correct = sum(v for (y, p), v in pairs.items() if y == p)
        classes = sorted({y for y, _ in pairs} | {p for _, p in pairs})
        out = {"accuracy": correct / total}

        def prf(c: str) -> tuple[float, float, float]:
            tp = pairs.get((c, c), 0)
            fp = sum(v for (y, p), v in pairs.items() if p == c and y != c)
            fn = sum(v for (y, p), v in pairs.items() if y == c and p != c)
            prec = tp / (tp + fp) if tp + fp else 0.0
            rec = tp / (tp + fn) if tp + fn else 0.0
            return prec, rec, (2 * prec * rec / (prec + rec) if prec + rec else 0.0)

        if len(classes) <= 2:
            pos = positive if positive is not None else (classes[-1] if classes else None)
            out["precision"], out["recall"], out["f1"] = prf(pos) if pos is not None else (0.0, 0.0, 0.0)
        else:  # macro averages over the classes seen
            scores = [prf(c) for c in classes]
            out["precision"] = float(np.mean([s[0] for s in scores]))
            out["recall"] = float(np.mean([s[1] for s in scores]))
            out["f1"] = float(np.mean([s[2] for s in scores]))
        if self.logloss_n:
            out["log_loss"] = self.logloss_sum / self.logloss_n
        if len(self.scores) == 2:
            neg_key, pos_key = sorted(self.scores) if positive is None else (
                next(k for k in self.scores if k != positive), positive)
            if pos_key in self.scores:
                out["roc_auc"] = _auc(np.array(self.scores[neg_key]), np.array(self.scores[pos_key]))
        return out

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: dict) -> "Performance":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def _auc(neg: np.ndarray, pos: np.ndarray) -> float:
    """ROC AUC from two score histograms: P(score_pos > score_neg), ties in a bin counting half."""
    n_neg, n_pos = neg.sum(), pos.sum()
    if not n_neg or not n_pos:
        return math.nan
    neg_below = np.cumsum(neg) - neg
    return float((np.sum(pos * neg_below) + 0.5 * np.sum(pos * neg)) / (n_neg * n_pos))


@dataclass
class WindowSummary:
    rows: int = 0
    errors: int = 0
    inputs: Profile = field(default_factory=Profile)
    outputs: Profile = field(default_factory=Profile)
    latency: QuantileSketch = field(default_factory=QuantileSketch)
    versions: dict[str, int] = field(default_factory=dict)
    performance: Performance = field(default_factory=Performance)

    @classmethod
    def merge(cls, parts: list["WindowSummary"]) -> "WindowSummary":
        versions: dict[str, int] = {}
        for p in parts:
            for k, v in p.versions.items():
                versions[k] = versions.get(k, 0) + v
        return cls(sum(p.rows for p in parts), sum(p.errors for p in parts),
                   Profile.merge([p.inputs for p in parts], size=1024),
                   Profile.merge([p.outputs for p in parts], size=1024),
                   QuantileSketch.merge([p.latency for p in parts], size=1024),
                   versions, Performance.merge([p.performance for p in parts]))

    def to_dict(self) -> dict:
        return {"rows": self.rows, "errors": self.errors, "inputs": self.inputs.to_dict(),
                "outputs": self.outputs.to_dict(), "latency": self.latency.to_dict(), "versions": self.versions,
                "performance": self.performance.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "WindowSummary":
        return cls(int(d.get("rows", 0)), int(d.get("errors", 0)), Profile.from_dict(d.get("inputs", {})),
                   Profile.from_dict(d.get("outputs", {})), QuantileSketch.from_dict(d.get("latency", {})),
                   dict(d.get("versions", {})), Performance.from_dict(d.get("performance", {})))


def summarise_rows(rows: Iterable[tuple]) -> WindowSummary:
    """Summarise logged rows ``(inputs_json, outputs_json, latency_ms, error, model_version, label_json)``."""
    inputs, outputs, latencies = [], [], []
    versions: dict[str, int] = {}
    perf = Performance()
    errors = 0
    for inp, out, latency, error, version, label in rows:
        inputs.append(orjson.loads(inp) if inp else {})
        o = orjson.loads(out) if out else None
        outputs.append(prediction_columns(o))
        if latency is not None:
            latencies.append(latency)
        if error:
            errors += 1
        versions[str(version)] = versions.get(str(version), 0) + 1
        if label is not None:
            perf.add(o, orjson.loads(label))
    lat = np.asarray(latencies, dtype=np.float64)
    lat = lat[np.isfinite(lat)]
    return WindowSummary(len(inputs), errors, profile_records(inputs), profile_records(outputs),
                         QuantileSketch.from_values(lat), versions, perf)
