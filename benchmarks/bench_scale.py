"""Large catalogues: full vs sampled softmax, full vs chunked evaluation.

A synthetic catalogue of `--num-items` items (default 10^6) and a SASRec
(d=64, 2 blocks, 2 heads) with random weights. Item ids of the training
batches follow a Zipf law (exponent 1.1) so in-batch negatives have a
realistic popularity skew; every position of a `(batch, max_len)` row has a
target (the worst case for the loss: no padding).

Timed, each in a fresh subprocess so that its peak memory is its own:

- `train/<softmax>`: one Adam step (`train_on_batch`) with the full softmax
  over all items, or the sampled softmax with `--num-negatives` uniform
  negatives (`uniform`), the batch's targets (`in_batch`) or both (`mixed`);
- `eval/full`: ranking `--eval-batch` users over every item from the full
  `(users, items)` score matrix (`rank_targets`);
- `eval/chunked`: the same ranks streaming the table `--chunk` items at a
  time (`rank_targets_chunked`); both are checked to give the same ranks.

Peak memory: on a GPU the device allocator's peak (JAX `memory_stats`, or
TensorFlow `get_memory_info`); on CPU the process's peak resident memory
(`ru_maxrss`) and, for comparison, the resident memory before the first
step. Runs on the Keras backend in `KERAS_BACKEND` (TensorFlow or JAX).

Usage:
    python benchmarks/bench_scale.py                       # 10^6 items
    python benchmarks/bench_scale.py --num-items 200000 --batch-size 16
    KERAS_BACKEND=jax python benchmarks/bench_scale.py --out results/x.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TRAIN_VARIANTS = ("full", "uniform", "in_batch", "mixed")
EVAL_VARIANTS = ("full", "chunked")


def _zipf_ids(rng, num_items, size):
    import numpy as np

    ranks = np.arange(1, num_items + 1, dtype="float64")
    p = ranks**-1.1
    p /= p.sum()
    perm = rng.permutation(num_items) + 1  # popular ids spread over the range
    return perm[rng.choice(num_items, size=size, p=p)].astype("int32"), p, perm


def _device_memory():
    """(kind, peak bytes or None) of the accelerator, if there is one."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        device = jax.local_devices()[0]
        if device.platform != "cpu":
            stats = device.memory_stats() or {}
            return device.device_kind, stats.get("peak_bytes_in_use")
    elif keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            info = tf.config.experimental.get_memory_info("GPU:0")
            return "GPU:0", info["peak"]
    return "cpu", None


def _rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _sync(value):
    import numpy as np
    from keras import ops

    return np.asarray(ops.convert_to_numpy(value))


def run_one(kind, variant, args):
    """One measurement in this process; returns a dict."""
    import keras
    import numpy as np

    from keras_fame.models import SASRec

    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    softmax = "full" if variant in ("full", "chunked") else "sampled"
    negatives = variant if softmax == "sampled" else "uniform"
    model = SASRec(
        args.num_items,
        max_len=args.max_len,
        hidden_dim=args.hidden_dim,
        num_blocks=2,
        num_heads=2,
        dropout=0.2,
        softmax=softmax,
        num_negatives=args.num_negatives,
        negatives=negatives,
        sampler_seed=args.seed,
    )
    result = {"kind": kind, "variant": variant}
    if kind == "train":
        shape = (args.batch_size, args.max_len)
        x, p, perm = _zipf_ids(rng, args.num_items, shape[0] * (shape[1] + 1))
        x = x.reshape(shape[0], shape[1] + 1)
        inputs, targets = x[:, :-1], x[:, 1:]
        if softmax == "sampled" and negatives != "uniform":
            counts = np.zeros(args.num_items + 1)
            counts[perm] = p * 1e9
            model.set_item_frequencies(counts)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile="auto")
        rss_before = _rss_bytes()
        start = time.perf_counter()
        loss = model.train_on_batch(inputs, targets)
        result["first_step_seconds"] = time.perf_counter() - start
        for _ in range(args.warmup):
            loss = model.train_on_batch(inputs, targets)
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            loss = model.train_on_batch(inputs, targets)
            times.append(time.perf_counter() - start)
        result.update(
            loss=float(loss),
            step_seconds_median=float(np.median(times)),
            step_seconds_min=float(np.min(times)),
            positions_per_step=int(np.count_nonzero(targets)),
        )
    else:
        from keras import ops

        from keras_fame.evaluation import rank_targets, rank_targets_chunked

        ids, _, _ = _zipf_ids(rng, args.num_items, args.eval_batch * (args.max_len + 1))
        ids = ids.reshape(args.eval_batch, args.max_len + 1)
        history, target = ids[:, :-1], ids[:, -1]
        backend = keras.backend.backend()

        if variant == "full":

            def rank(h, t):
                return rank_targets(model.score(h), t, h)
        else:

            def rank(h, t):
                return rank_targets_chunked(
                    model.user_vectors(h), model.item_table(), t, h, args.chunk
                )

        if backend == "jax":
            import jax

            rank = jax.jit(rank)
        elif backend == "tensorflow":
            import tensorflow as tf

            rank = tf.function(rank)
        h, t = ops.convert_to_tensor(history), ops.convert_to_tensor(target)
        rss_before = _rss_bytes()
        start = time.perf_counter()
        ranks = _sync(rank(h, t))
        result["first_call_seconds"] = time.perf_counter() - start
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            ranks = _sync(rank(h, t))
            times.append(time.perf_counter() - start)
        result.update(
            seconds_median=float(np.median(times)),
            seconds_min=float(np.min(times)),
            users=args.eval_batch,
        )
        np.save(Path(args.ranks_dir) / f"{variant}.npy", ranks)
    device, peak = _device_memory()
    result.update(
        device=device,
        device_peak_bytes=peak,
        rss_before_bytes=rss_before,
        rss_peak_bytes=_rss_bytes(),
    )
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-items", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--hidden-dim", type=int, default=64)
    parser.add_argument("--num-negatives", type=int, default=1024)
    parser.add_argument("--eval-batch", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=65536)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--train", default=",".join(TRAIN_VARIANTS), help="train variants to run"
    )
    parser.add_argument(
        "--eval", default=",".join(EVAL_VARIANTS), help="eval variants to run"
    )
    parser.add_argument("--timeout", type=int, default=600)
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results" / "scale.json")
    )
    parser.add_argument("--ranks-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--one", nargs=2, metavar=("KIND", "VARIANT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)

    if args.one:
        print("RESULT " + json.dumps(run_one(*args.one, args)), flush=True)
        return None

    jobs = [("train", v) for v in args.train.split(",") if v] + [
        ("eval", v) for v in args.eval.split(",") if v
    ]
    passthrough = [a for a in (argv if argv is not None else sys.argv[1:])]
    ranks_dir = tempfile.mkdtemp(prefix="bench_scale_")
    results = []
    for kind, variant in jobs:
        cmd = [
            sys.executable,
            __file__,
            *passthrough,
            "--ranks-dir",
            ranks_dir,
            "--one",
            kind,
            variant,
        ]
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=args.timeout
            )
        except subprocess.TimeoutExpired:
            results.append({"kind": kind, "variant": variant, "error": "timeout"})
            print(f"{kind}/{variant}: timeout after {args.timeout} s", flush=True)
            continue
        line = next(
            (x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None
        )
        if line is None:
            tail = (proc.stderr or "")[-1500:]
            error = (
                "out of memory"
                if "RESOURCE_EXHAUSTED" in tail or proc.returncode == -9
                else tail
            )
            results.append(
                {
                    "kind": kind,
                    "variant": variant,
                    "error": error,
                    "returncode": proc.returncode,
                }
            )
            print(
                f"{kind}/{variant}: FAILED ({proc.returncode}) {tail[-300:]}",
                flush=True,
            )
            continue
        result = json.loads(line[len("RESULT ") :])
        result["wall_seconds"] = time.perf_counter() - start
        results.append(result)
        seconds = result.get("step_seconds_median", result.get("seconds_median"))
        peak = result["device_peak_bytes"] or result["rss_peak_bytes"]
        print(
            f"{kind}/{variant:9s} {seconds * 1000:10.1f} ms  peak {peak / 2**30:7.2f} GiB"
            f" ({'device' if result['device_peak_bytes'] else 'process RSS'})",
            flush=True,
        )
    evals = {
        r["variant"]: r for r in results if r.get("kind") == "eval" and "error" not in r
    }
    comparison = None
    if len(evals) == 2:
        import numpy as np

        full = np.load(Path(ranks_dir) / "full.npy")
        chunked = np.load(Path(ranks_dir) / "chunked.npy")
        differ = full != chunked  # inf == inf: unrankable in both
        gap = np.abs(np.where(differ, full - chunked, 0.0))
        comparison = {
            "users_with_different_rank": int(differ.sum()),
            "max_rank_difference": float(gap.max()),
            "max_relative_rank_difference": float((gap / full).max()),
        }
        print(f"eval full vs chunked ranks: {comparison}")
    import keras

    from benchmarks.provenance import machine_description, source_commit

    record = {
        "command": "python benchmarks/bench_scale.py " + " ".join(passthrough),
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "config": {
            k: getattr(args, k)
            for k in (
                "num_items",
                "batch_size",
                "max_len",
                "hidden_dim",
                "num_negatives",
                "eval_batch",
                "chunk",
                "steps",
                "warmup",
                "seed",
            )
        },
        "machine": machine_description(),
        "commit": source_commit(ROOT),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "results": results,
        "full_vs_chunked_ranks": comparison,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return record


if __name__ == "__main__":
    main()
