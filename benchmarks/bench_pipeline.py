"""Input-pipeline benchmark: sequences/second of the train and eval tf.data pipelines.

Measures, per dataset: loading time, split-array construction time, and the
throughput of iterating the training pipeline (shuffle + batch + gather +
prefetch, consumed from Python as `model.fit` would) and the evaluation
pipeline. The training pipeline must deliver far more sequences per second
than a model can train on (a few thousand per second on CPU).

Usage:
    python benchmarks/bench_pipeline.py                       # Amazon (if found) + synthetic
    python benchmarks/bench_pipeline.py --datasets synthetic --epochs 5
    python benchmarks/bench_pipeline.py --data-dir ../shared/datasets/amazon \
        --out benchmarks/results/pipeline.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "datasets" / "amazon"


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def _iterate(dataset, epochs: int) -> tuple[int, int, float]:
    """Iterates `epochs` passes; returns (sequences, batches, seconds)."""
    rows = batches = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for element in dataset:
            target = element[1]
            rows += int(target.shape[0])
            batches += 1
    return rows, batches, time.perf_counter() - start


def bench_dataset(name: str, data_dir, args) -> dict:
    from keras_fame.datasets import load

    ds, load_s = _timed(lambda: load(name, data_dir=data_dir))
    result = {"dataset": name, "describe": ds.describe(), "load_s": round(load_s, 3)}
    for windows in (False, True):
        key = "train_windows" if windows else "train"
        arrays, arrays_s = _timed(
            lambda w=windows: ds.train_arrays(args.max_len, windows=w)
        )
        pipeline, build_s = _timed(
            lambda w=windows: ds.train_dataset(
                batch_size=args.batch_size, max_len=args.max_len, seed=0, windows=w
            )
        )
        _iterate(pipeline.take(2), 1)  # warm-up (graph tracing)
        rows, batches, seconds = _iterate(pipeline, args.epochs)
        result[key] = {
            "rows_per_epoch": len(arrays[0]),
            "arrays_s": round(arrays_s, 3),
            "build_s": round(build_s, 3),
            "epochs": args.epochs,
            "sequences_per_s": round(rows / seconds),
            "batches_per_s": round(batches / seconds, 1),
            "epoch_s": round(seconds / args.epochs, 3),
        }
    for split in ("valid", "test"):
        pipeline, build_s = _timed(
            lambda s=split: ds.eval_dataset(
                s, batch_size=args.batch_size, max_len=args.max_len
            )
        )
        _iterate(pipeline.take(2), 1)
        rows, batches, seconds = _iterate(pipeline, args.epochs)
        result[f"eval_{split}"] = {
            "users": rows // args.epochs,
            "build_s": round(build_s, 3),
            "sequences_per_s": round(rows / seconds),
            "pass_s": round(seconds / args.epochs, 3),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=None)
    parser.add_argument("--data-dir", default=None, help="folder with the Amazon files")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    data_dir = args.data_dir or os.environ.get("KERAS_FAME_DATA_DIR")
    if data_dir is None and DEFAULT_DATA_DIR.is_dir():
        data_dir = str(DEFAULT_DATA_DIR)
    names = args.datasets or (
        ["beauty", "sports", "toys", "synthetic"] if data_dir else ["synthetic"]
    )

    import tensorflow as tf

    results = []
    for name in names:
        result = bench_dataset(name, data_dir, args)
        results.append(result)
        print(
            f"{name:10s} train {result['train']['sequences_per_s']:>9,} seq/s "
            f"({result['train']['rows_per_epoch']:,} rows, {result['train']['epoch_s']} s/epoch) | "
            f"windows {result['train_windows']['sequences_per_s']:>9,} seq/s | "
            f"eval(test) {result['eval_test']['sequences_per_s']:>9,} users/s"
        )
    report = {
        "benchmark": "input pipeline (keras_fame.datasets)",
        "command": "python benchmarks/bench_pipeline.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v}"
            for k, v in vars(args).items()
            if v is not None and k not in ("out", "datasets", "data_dir")
        ),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "device": "CPU only (tf.data runs on the host)",
            "load_average_1min": round(os.getloadavg()[0], 2),
        },
        "batch_size": args.batch_size,
        "max_len": args.max_len,
        "results": results,
    }
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
