"""``generate``: a synthetic fraud data set, reproducible from its params."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from modelyard.pipelines import job_params


def generate(out: str) -> dict:
    p = job_params()["data"]
    rng = np.random.default_rng(p["seed"])
    rows, features, informative = p["rows"], p["features"], p["informative"]
    x = rng.normal(size=(rows, features))
    weights = np.zeros(features)
    weights[:informative] = rng.uniform(0.8, 2.0, size=informative) * rng.choice([-1, 1], size=informative)
    merchant = rng.integers(0, 20, size=rows)
    logits = x @ weights - 2.2 + 0.6 * x[:, 0] * x[:, 1] + 0.8 * (merchant % 5 == 0)
    label = (rng.uniform(size=rows) < 1 / (1 + np.exp(-logits))).astype(int)
    x[rng.uniform(size=x.shape) < 0.01] = np.nan  # a little missing data for prepare to clean
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([f"f{i}" for i in range(features)] + ["merchant", "is_fraud"])
        for row, m, y in zip(x, merchant, label):
            w.writerow([("" if np.isnan(v) else f"{v:.6f}") for v in row] + [int(m), int(y)])
    return {"rows": rows, "fraud_rate": float(label.mean())}
