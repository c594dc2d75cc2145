"""Drift benchmark: modelyard's drift evaluation against Evidently's DataDriftPreset, one sitting.

    .venv/bin/python bench/drift.py [--rows 200000] [--no-drift-rows 1000000] [--repeat 3]
                                    [--skip-evidently]

1. Generates the shared benchmark data (``../shared/bench/drift_data.py --rows N``: 20 numeric and
   5 categorical columns, 4 of them drifted) unless it is already there.
2. Runs Evidently 0.7's ``DataDriftPreset`` on it (``../shared/bench/drift_evidently.py``, in its own
   venv with pandas<3, made on first use at ``$MODELYARD_EVIDENTLY_VENV``, default
   /tmp/modelyard-evidently) and modelyard's drift evaluation on the same DataFrames: profile the
   reference, profile the current data, compare. Both are timed from frames in memory to the list
   of drifted columns (neither counts reading the Parquet files).
3. Times the per-window cost when the reference profile is already stored (what a monitor pays).
4. False alarms: two independent samples of the reference distribution at ``--no-drift-rows``
   rows each; counts the columns flagged (the target is at most 5%).

Prints one JSON object per step and a summary; the figures go into docs/benchmarks.md by hand with
the command and the date.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "bench"
EVIDENTLY_VERSION = "0.7.23"
EVIDENTLY_PACKAGES = [f"evidently=={EVIDENTLY_VERSION}", "pandas<3", "pyarrow"]

sys.path.insert(0, str(REPO))


def ensure_evidently(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating the Evidently venv at {venv}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    probe = f"import evidently, pandas; assert evidently.__version__ == {EVIDENTLY_VERSION!r}"
    if subprocess.run([str(python), "-c", probe], stderr=subprocess.DEVNULL).returncode != 0:
        print(f"installing {' '.join(EVIDENTLY_PACKAGES)} into {venv}", file=sys.stderr)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *EVIDENTLY_PACKAGES], check=True)
    return python


def make_data(rows: int, out: Path) -> None:
    if (out / "current.parquet").exists() and (out / "truth.json").exists():
        return
    subprocess.run([sys.executable, str(SHARED / "drift_data.py"), "--rows", str(rows), "--out", str(out)], check=True)


def modelyard_drift(ref, cur) -> tuple[float, list[str], float]:
    """(seconds from frames to flagged columns, flagged, seconds with the reference precomputed)."""
    from modelyard.monitoring.drift import data_drift
    from modelyard.monitoring.profile import profile_frame

    t0 = time.perf_counter()
    ref_profile = profile_frame(ref)
    t1 = time.perf_counter()
    result = data_drift(ref_profile, profile_frame(cur))
    t2 = time.perf_counter()
    return t2 - t0, sorted(result["drifted_columns"]), t2 - t1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--no-drift-rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/modelyard-drift-bench"))
    ap.add_argument("--skip-evidently", action="store_true")
    ap.add_argument("--wide", action="store_true",
                    help="also time Evidently issue 763's shape: 356,251 rows x 100 numeric columns (modelyard only)")
    a = ap.parse_args()

    import pandas as pd

    data = a.data_dir / f"rows{a.rows}"
    make_data(a.rows, data)
    truth = sorted(json.loads((data / "truth.json").read_text())["drifted"])
    summary = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
               "rows": a.rows, "truth": truth}

    evidently = None
    if not a.skip_evidently:
        python = ensure_evidently(Path(os.environ.get("MODELYARD_EVIDENTLY_VENV", "/tmp/modelyard-evidently")))
        out = subprocess.run([str(python), str(SHARED / "drift_evidently.py"), str(data)], check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()[-1]
        evidently = json.loads(out)
        print(json.dumps(evidently), flush=True)
        summary["evidently_seconds"] = evidently["seconds"]
        summary["evidently_flagged"] = evidently["flagged"]

    ref, cur = pd.read_parquet(data / "reference.parquet"), pd.read_parquet(data / "current.parquet")
    runs = [modelyard_drift(ref, cur) for _ in range(a.repeat)]
    wall = statistics.median(r[0] for r in runs)
    window = statistics.median(r[2] for r in runs)
    flagged = runs[0][1]
    mine = {"tool": "modelyard", "rows": a.rows, "columns": ref.shape[1], "seconds": round(wall, 3),
            "seconds_all_runs": [round(r[0], 3) for r in runs], "seconds_reference_precomputed": round(window, 3),
            "flagged": flagged, "truth": truth}
    print(json.dumps(mine), flush=True)
    summary.update(modelyard_seconds=mine["seconds"], modelyard_window_seconds=mine["seconds_reference_precomputed"],
                   modelyard_flagged=flagged)
    if evidently:
        summary["speedup"] = round(evidently["seconds"] / wall, 1)
        summary["same_columns"] = evidently["flagged"] == flagged

    if a.no_drift_rows:
        import numpy as np

        spec = importlib.util.spec_from_file_location("drift_data", SHARED / "drift_data.py")
        drift_data = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(drift_data)
        r1 = drift_data.frame(np.random.default_rng(11), a.no_drift_rows, False)
        r2 = drift_data.frame(np.random.default_rng(12), a.no_drift_rows, False)
        seconds, flagged, _ = modelyard_drift(r1, r2)
        share = len(flagged) / r1.shape[1]
        print(json.dumps({"tool": "modelyard", "no_drift_rows": a.no_drift_rows, "seconds": round(seconds, 3),
                          "flagged": flagged, "flagged_share": share}), flush=True)
        summary.update(no_drift_rows=a.no_drift_rows, no_drift_flagged=flagged, no_drift_flagged_share=share,
                       no_drift_seconds=round(seconds, 3))
    if a.wide:
        import numpy as np

        rng = np.random.default_rng(5)
        n, k = 356_251, 100
        r1 = pd.DataFrame(rng.normal(size=(n, k)), columns=[f"c{i}" for i in range(k)])
        r2 = pd.DataFrame(rng.normal(size=(n, k)), columns=r1.columns)
        seconds, flagged, window = modelyard_drift(r1, r2)
        print(json.dumps({"tool": "modelyard", "wide_rows": n, "columns": k, "seconds": round(seconds, 3),
                          "seconds_reference_precomputed": round(window, 3), "flagged": flagged}), flush=True)
        summary.update(wide_seconds=round(seconds, 3), wide_window_seconds=round(window, 3))
    print(json.dumps({"summary": summary}, indent=1))


if __name__ == "__main__":
    main()
