"""``prepare``: join the merchants' risk, fill missing values, split into train and test Parquet files."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from modelyard.pipelines import job_params
from pipeline.common import LABEL, feature_columns


def main(raw: str, merchants: str, out_dir: str) -> None:
    p = job_params()["prepare"]
    df = pd.read_csv(raw)
    risk = pd.read_csv(merchants).set_index("merchant")["risk"]
    df["f_merchant_risk"] = df.pop("merchant").map(risk).fillna(risk.mean())
    features = feature_columns(df.columns)
    df[features] = df[features].fillna(df[features].median())
    rng = np.random.default_rng(p["seed"])
    test = rng.uniform(size=len(df)) < p["test_size"]
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    df[~test].reset_index(drop=True).to_parquet(f"{out_dir}/train.parquet", index=False)
    df[test].reset_index(drop=True).to_parquet(f"{out_dir}/test.parquet", index=False)
    print(f"train {int((~test).sum())} rows, test {int(test.sum())} rows, fraud rate {df[LABEL].mean():.3f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
