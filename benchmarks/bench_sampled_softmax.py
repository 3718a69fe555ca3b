"""Quality and speed of the sampled softmax against the full softmax.

Trains SASRec on an Amazon dataset with `softmax="sampled"` and the same
configuration as a committed full-softmax run (`--baseline`, default
`benchmarks/results/<dataset>-sasrec.json`: its `config` is reused, only the
loss changes), then writes both side by side to
`benchmarks/results/sampled_softmax_<dataset>_<negatives>.json`: test and
validation metrics, seconds per training epoch, best epoch and time to the
best validation NDCG@20. Epoch times are only comparable on the same,
equally loaded machine: the record keeps both runs' `machine` and date.

Usage:
    python benchmarks/bench_sampled_softmax.py --dataset sports \
        --data-dir ../shared/datasets/amazon --negatives mixed --num-negatives 1024 \
        --baseline benchmarks/results/paper-recipe/sports-sasrec.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="sports")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--negatives", default="mixed", choices=("uniform", "in_batch", "mixed")
    )
    parser.add_argument("--num-negatives", type=int, default=1024)
    parser.add_argument("--workdir", default=None)
    parser.add_argument(
        "--baseline",
        default=None,
        help="the full-softmax results file to compare with "
        "(default: RESULTS_DIR/<dataset>-sasrec.json)",
    )
    parser.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    from benchmarks.provenance import machine_description, source_commit

    commit = source_commit(ROOT)  # the code this run uses (read before training)

    from keras_fame import datasets
    from keras_fame.training import METRICS, config_from_record, train_sasrec

    results_dir = Path(args.results_dir)
    full_path = Path(args.baseline or results_dir / f"{args.dataset}-sasrec.json")
    if not full_path.exists():
        raise SystemExit(
            f"{full_path} is missing: run examples/train_sports.py --dataset "
            f"{args.dataset} first (the full-softmax baseline)."
        )
    full = json.loads(full_path.read_text())
    config = config_from_record(full["config"])
    config = dataclasses.replace(
        config,
        softmax="sampled",
        negatives=args.negatives,
        num_negatives=args.num_negatives,
    )
    data = datasets.load(args.dataset, data_dir=args.data_dir)
    workdir = args.workdir or str(
        ROOT / "runs" / f"{args.dataset}-sampled-{args.negatives}-{args.num_negatives}"
    )
    print(f"config: {json.dumps(dataclasses.asdict(config))}")
    _, results = train_sasrec(data, config, workdir, verbose=2)

    sampled = {
        "test": {m: results["test"][m] for m in (*METRICS, "MRR")},
        "valid": {m: results["valid"][m] for m in (*METRICS, "MRR")},
        "best_epoch": results["best_epoch"],
        "epochs_run": results["epochs_run"],
        "epoch_seconds": results["epoch_seconds"],
        "seconds_to_best": results["seconds_to_best"],
        "config": dataclasses.asdict(config),
        "commit": commit,
        "machine": machine_description(),
        "date": time.strftime("%Y-%m-%d"),
    }
    baseline = {
        k: full[k]
        for k in (
            "test",
            "valid",
            "best_epoch",
            "epochs_run",
            "epoch_seconds",
            "seconds_to_best",
            "config",
            "commit",
            "machine",
            "date",
        )
        if k in full
    }
    record = {
        "dataset": args.dataset,
        "model": "sasrec",
        "command": "python benchmarks/bench_sampled_softmax.py " + " ".join(argv),
        "seed": config.seed,
        "full_softmax": baseline,
        "sampled_softmax": sampled,
    }
    out = results_dir / f"sampled_softmax_{args.dataset}_{args.negatives}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\n{'':22s}" + "".join(f"{m:>9s}" for m in METRICS) + "   s/epoch  best")
    for name, run in (
        ("full softmax", baseline),
        ("sampled " + args.negatives, sampled),
    ):
        print(
            f"{name:22s}"
            + "".join(f"{run['test'][m]:9.4f}" for m in METRICS)
            + f"  {run['epoch_seconds']:8.1f}  {run['best_epoch']:4d}"
        )
    print(f"saved {out}")


if __name__ == "__main__":
    main()
