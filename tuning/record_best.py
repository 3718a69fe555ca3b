"""Writes a search's best FAME trial as a `benchmarks/results/` record.

The record holds the trial's own validation and test metrics (the ones in
the search's `summary.json`, measured on the trial's best checkpoint), so the
benchmark table and the tuning summary report the same run.

Usage:
    python tuning/record_best.py runs/tuning-toys --dataset toys \
        --command "python tuning/search.py --protocol paper ..."
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.provenance import machine_description, source_commit  # noqa: E402
from tuning.hypermodel import HP_NAMES  # noqa: E402

METRICS = ("HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20", "MRR")


def best_fame_trial(summary: dict) -> dict:
    """The FAME trial with the highest validation NDCG@20."""
    trials = [
        t
        for t in summary["trials"]
        if t.get("model") == "fame" and t.get("status") == "COMPLETED"
    ]
    if not trials:
        raise ValueError("the search holds no completed FAME trial")
    return max(trials, key=lambda t: t["val_NDCG@20"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", help="the search folder (has summary.json)")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--command", required=True, help="the search command")
    parser.add_argument("--settings", default="{}", help="JSON: fixed search settings")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    settings = json.loads(args.settings)
    summary = json.loads((Path(args.directory) / "summary.json").read_text())
    trial = best_fame_trial(summary)
    commit = source_commit(ROOT)
    record = {
        "dataset": args.dataset,
        "model": "fame",
        "test": {m: trial[f"test_{m}"] for m in METRICS},
        "valid": {m: trial[f"val_{m}"] for m in METRICS},
        "best_epoch": trial["best_epoch"],
        "epochs_run": trial["epochs_run"],
        "epoch_seconds": trial["train_seconds"] / max(trial["epochs_run"], 1),
        "config": {k: trial[k] for k in HP_NAMES if k != "model"} | settings,
        "seed": settings.get("seed", 0),
        "tuning_trial": f"{trial['phase']}/{trial['trial']}",
        "commit": commit,
        "machine": machine_description(),
        "command": args.command,
        "date": time.strftime("%Y-%m-%d"),
    }
    out = Path(
        args.out or ROOT / "benchmarks" / "results" / f"{args.dataset}-fame-tuned.json"
    )
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"best FAME trial {record['tuning_trial']}: {record['config']}")
    print(f"test {record['test']}")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
