"""Latency of the exported serving signatures (TF Serving export).

Builds Sports-sized SASRec and FAME models (18,357 items, d=64, 2 blocks,
2 heads, FAME with 4 experts; random weights: latency does not depend on
training) with a vocabulary of SKU-like ids (`sku-0000001`, ...), exports each
with `keras_fame.export.export_for_serving`, loads the SavedModel back and
times, on full-length histories (50 ids), for batches of 1 and 256 histories:

- `serving_default`: a string of the user's ids per history in, the user's
  ids out (the vocabulary lookup, the left-padding and the decoding included);
- `recommend_ids`: the same in model ids (int32 in, int32 out).

Two ways of calling each are timed:

- `signature`: `tf.saved_model.load(path).signatures["serving_default"]`,
  what a Python client of the SavedModel does;
- `session`: the TF1 session loader, feeding and fetching the SignatureDef's
  tensors by name, which is how the TF Serving model server runs a request
  (without its HTTP/JSON or gRPC handling).

Each timed call includes converting the outputs to NumPy. Results (median,
99th percentile, mean, min in milliseconds) go to
`benchmarks/results/serving_latency.json` with the command, machine, commit
and date.

Usage:
    python benchmarks/bench_serving.py
    python benchmarks/bench_serving.py --calls 1000 --batches 1 32 256
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.provenance import source_commit  # noqa: E402
from keras_fame.datasets import Vocabulary  # noqa: E402
from keras_fame.export import export_for_serving  # noqa: E402
from keras_fame.models import FAME, SASRec  # noqa: E402

SPORTS = dict(
    num_items=18357, max_len=50, hidden_dim=64, num_blocks=2, num_heads=2, dropout=0.5
)
TARGET_MEDIAN_MS = 5.0


def _machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    affinity = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    )
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "usable_cpus": affinity,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "gpus_visible": len(tf.config.list_physical_devices("GPU")),
    }


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _stats(times_s: list[float]) -> dict:
    ms = np.asarray(times_s) * 1e3
    return {
        "median_ms": round(float(np.median(ms)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "min_ms": round(float(ms.min()), 3),
        "calls": int(len(ms)),
    }


def _histories(rng, batch: int, pool: int, length: int, num_items: int):
    return [
        rng.integers(1, num_items + 1, size=(batch, length)).astype("int32")
        for _ in range(pool)
    ]


def _sku(model_ids: np.ndarray) -> np.ndarray:
    """The text requests of model-id histories: one space-separated row each."""
    return np.asarray(
        [" ".join(f"sku-{i:07d}" for i in row) for row in model_ids], dtype=object
    )


# How each signature is fed: (input name, inputs from model-id histories).
SIGNATURES = {
    "serving_default": ("history", _sku),  # your ids in and out (vocabulary)
    "recommend_ids": ("item_ids", lambda ids: ids),  # model ids in and out
}


def _time_signature(path: str, name: str, batches, args, rng) -> list[dict]:
    serve = tf.saved_model.load(path).signatures[name]
    input_name, make = SIGNATURES[name]
    results = []
    for batch in batches:
        ids = _histories(rng, batch, 16, SPORTS["max_len"], SPORTS["num_items"])
        pool = [make(i) for i in ids]
        for i in range(args.warmup):
            serve(**{input_name: tf.constant(pool[i % len(pool)])})
        times = []
        for i in range(args.calls):
            inputs = pool[i % len(pool)]
            start = time.perf_counter()
            out = serve(**{input_name: tf.constant(inputs)})
            [value.numpy() for value in out.values()]
            times.append(time.perf_counter() - start)
        results.append(
            {"caller": "signature", "signature": name, "batch": batch, **_stats(times)}
        )
    return results


def _time_session(path: str, name: str, batches, args, rng) -> list[dict]:
    results = []
    from tensorflow.python.util import deprecation

    input_name, make = SIGNATURES[name]
    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as sess:
        with deprecation.silence():
            meta_graph = tf.compat.v1.saved_model.loader.load(
                sess, [tf.saved_model.SERVING], path
            )
        signature = meta_graph.signature_def[name]
        feed_name = signature.inputs[input_name].name
        fetches = {key: info.name for key, info in signature.outputs.items()}
        run = sess.make_callable(list(fetches.values()), [feed_name])
        for batch in batches:
            ids = _histories(rng, batch, 16, SPORTS["max_len"], SPORTS["num_items"])
            pool = [make(i) for i in ids]
            for i in range(args.warmup):
                run(pool[i % len(pool)])
            times = []
            for i in range(args.calls):
                inputs = pool[i % len(pool)]
                start = time.perf_counter()
                run(inputs)
                times.append(time.perf_counter() - start)
            results.append(
                {
                    "caller": "session",
                    "signature": name,
                    "batch": batch,
                    **_stats(times),
                }
            )
    return results


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--calls", type=int, default=300, help="timed calls each")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--models", nargs="+", default=["sasrec", "fame"])
    parser.add_argument(
        "--output",
        default=str(ROOT / "benchmarks" / "results" / "serving_latency.json"),
    )
    args = parser.parse_args(argv)

    load_before = _load_average()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    builders = {
        "sasrec": lambda: SASRec(**SPORTS),
        "fame": lambda: FAME(num_experts=4, **SPORTS),
    }
    results = []
    with tempfile.TemporaryDirectory() as base:
        for key in args.models:
            model = builders[key]()
            model.set_vocabulary(
                Vocabulary([f"sku-{i:07d}" for i in range(1, SPORTS["num_items"] + 1)])
            )
            start = time.perf_counter()
            path = export_for_serving(model, base, name=key, k=args.k)
            export_s = time.perf_counter() - start
            print(f"{key}: exported in {export_s:.1f} s (with verification)")
            for name in SIGNATURES:
                for row in _time_signature(
                    path, name, args.batches, args, rng
                ) + _time_session(path, name, args.batches, args, rng):
                    row = {"model": key, **row}
                    print(json.dumps(row))
                    results.append(row)

    report = {
        "benchmark": "latency of the exported SavedModel's serving signatures",
        "command": "python "
        + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]]),
        "machine": {
            **_machine(),
            "load_average_1min_before": load_before,
            "load_average_1min_after": _load_average(),
            "note": "shared machine: other jobs may run during the benchmark",
        },
        "commit": source_commit(ROOT),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "config": {
            **{key: value for key, value in SPORTS.items() if key != "dropout"},
            "fame_num_experts": 4,
            "k": args.k,
            "history_length": SPORTS["max_len"],
            "vocabulary": "sku-0000001 .. sku-0018357 (strings)",
            "weights": "random (untrained)",
            "warmup_calls": args.warmup,
            "timed_calls": args.calls,
            "timing": "wall clock per call, outputs converted to NumPy",
        },
        "target": f"median under {TARGET_MEDIAN_MS} ms for one history",
        "target_met": all(
            row["median_ms"] < TARGET_MEDIAN_MS for row in results if row["batch"] == 1
        ),
        "results": results,
    }
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as file:
        json.dump(report, file, indent=2)
        file.write("\n")
    print(f"wrote {args.output}")
    return report


if __name__ == "__main__":
    main()
