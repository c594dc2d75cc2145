"""``evaluate``: score the candidates on the test set and keep the best as an MLflow model."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import joblib
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from pipeline.common import LABEL, feature_columns


def evaluate(candidates: list[str], test: str, out: str, report: str) -> None:
    df = pd.read_parquet(test)
    x, y = df[feature_columns(df.columns)], df[LABEL]
    scores = {}
    for folder in candidates:
        model = joblib.load(Path(folder) / "model.joblib")
        scores[folder] = {"f1": float(f1_score(y, model.predict(x))),
                          "accuracy": float(accuracy_score(y, model.predict(x))),
                          "roc_auc": float(roc_auc_score(y, model.predict_proba(x)[:, 1]))}
        print(f"{folder}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores[folder].items()))
    best = max(scores, key=lambda k: scores[k]["f1"])
    import mlflow.sklearn  # imported here: only this job pays for it
    from mlflow.models import infer_signature

    model = joblib.load(Path(best) / "model.joblib")
    shutil.rmtree(out, ignore_errors=True)
    mlflow.sklearn.save_model(model, out, signature=infer_signature(x.head(50), model.predict(x.head(50))),
                              input_example=x.head(3))
    Path(report).parent.mkdir(parents=True, exist_ok=True)
    Path(report).write_text(json.dumps({**scores[best], "candidates": {k: v["f1"] for k, v in scores.items()}}))
    print(f"best: {best}")
