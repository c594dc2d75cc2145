"""``train_logreg`` and ``train_forest``: fit one scikit-learn model, save it with its training metrics."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import joblib
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, os.getcwd())
from modelyard.pipelines import job_params  # noqa: E402
from pipeline.common import LABEL, feature_columns  # noqa: E402


def build(kind: str, p: dict):
    if kind == "logreg":
        return make_pipeline(StandardScaler(), LogisticRegression(C=p["C"], max_iter=p["max_iter"],
                                                                  class_weight="balanced"))
    return RandomForestClassifier(n_estimators=p["n_estimators"], max_depth=p["max_depth"], random_state=p["seed"],
                                  class_weight="balanced", n_jobs=1)


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("--model", choices=["logreg", "forest"], required=True)
    args.add_argument("--train", required=True)
    args.add_argument("--out", required=True)
    a = args.parse_args()
    p = job_params()["train"][a.model]
    df = pd.read_parquet(a.train)
    x, y = df[feature_columns(df.columns)], df[LABEL]
    model = build(a.model, p).fit(x, y)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, out / "model.joblib")
    metrics = {"train_f1": float(f1_score(y, model.predict(x)))}
    (out / "metrics.json").write_text(json.dumps(metrics))
    print(f"{a.model}: train f1 {metrics['train_f1']:.3f}")


if __name__ == "__main__":
    main()
