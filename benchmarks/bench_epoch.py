"""Times one training epoch of SASRec and of FAME, and compares with matmul peak.

Setting (issue 2): Amazon Sports, d=64, 2 blocks, 2 heads, FAME with 4
experts, max_len 50, batch 256, Adam 1e-3, full-softmax cross-entropy.

Prints, and saves as JSON:
- the epoch time of each model (measured in the same process, after a
  warm-up) and FAME's time as a ratio of SASRec's;
- the floating-point work of an epoch (counted from the shapes that are
  actually computed) and the achieved FLOP/s against the machine's measured
  float32 matrix-multiply peak; `matmul_bound_ratio` is the epoch time divided
  by the time a purely matmul-bound implementation would need for the same
  work (goal: at most 2).

Usage:
    python benchmarks/bench_epoch.py --data-dir ../shared/datasets/amazon
    python benchmarks/bench_epoch.py --dataset sports --bucket  # length buckets
    python benchmarks/bench_epoch.py --bucket --prefixes \
        --output benchmarks/results/epoch_time_prefixes.json  # the recipe's rows
    python benchmarks/bench_epoch.py --bucket --prefixes \
        --models sasrec,sasrec-full,fame,fame-full  # with/without last-position-only
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.provenance import machine_description, source_commit  # noqa: E402
from keras_fame import datasets  # noqa: E402
from keras_fame.models import FAME, SASRec  # noqa: E402


def matmul_peak_flops(size: int = 2048, repeats: int = 10) -> float:
    """Best float32 matmul throughput (FLOP/s) of this machine, via TensorFlow."""
    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    matmul = tf.function(lambda a, b: tf.matmul(a, b))
    matmul(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def epoch_shapes(train) -> list[tuple[int, int, int, bool]]:
    """(rows, width, real targets, one target per row) of every batch of `train`."""
    return [
        (
            int(x.shape[0]),
            int(x.shape[1]),
            int(np.count_nonzero(y.numpy())),
            len(y.shape) == 1,
        )
        for x, y in train
    ]


def epoch_flops(
    shapes, model_kind, d, blocks, heads, experts, num_items, ffn, sampled=None
):
    """Forward+backward FLOPs (3x forward) of the matmuls of one epoch.

    Counts what the implementation computes: every position of every batch
    as it is fed (padded to the batch's width) for the blocks, except that
    with one target per row (`prefixes`) the last block computes queries,
    attention and everything after it for the last position only (keys and
    values still for every position); and the real (non-padding) target
    positions only for the item logits (against every item, or with
    `sampled=(uniform_draws, in_batch)` against the sampled candidates).
    Elementwise work (softmax, LayerNorm, GELU, Adam) is left out.
    """
    forward = 0.0
    head_dim = d // heads
    for rows, width, real, one_per_row in shapes:
        tokens = rows * width
        queries = rows if one_per_row else tokens
        keys_values = 2 * 2 * d * d  # per position
        sasrec_block = 2 * (4 * d * d + 2 * d * ffn) + 2 * 2 * width * d
        forward += tokens * sasrec_block * (blocks - 1)
        if model_kind == "sasrec":
            per_query = sasrec_block - keys_values
        else:
            per_query = 2 * d * d * experts  # expert queries
            per_query += 2 * 2 * width * d * experts  # every expert attends
            per_query += 2 * heads * experts * head_dim * experts  # router
            per_query += 2 * 2 * heads * head_dim * head_dim  # FFN'
            per_query += 2 * d * heads + 2 * heads * head_dim * d  # gate, facet query
        forward += tokens * keys_values + queries * per_query
        if sampled is None:
            forward += real * 2 * d * (num_items + 1)
        else:  # the shared candidates: uniform draws and/or the batch's targets
            uniform, in_batch = sampled
            forward += real * 2 * d * (uniform + (real if in_batch else 0) + 1)
    return 3.0 * forward


def _in_last_column(item_ids, next_item_ids):
    """One-target-per-row batches in the two-dimensional form: the targets in
    the last column, zeros elsewhere. Same loss, but the models then run the
    last block over every position (the cost before one-target rows)."""
    width = tf.shape(item_ids)[1]
    padding = tf.zeros([tf.shape(next_item_ids)[0], width - 1], next_item_ids.dtype)
    return item_ids, tf.concat([padding, next_item_ids[:, None]], axis=1)


def run(args):
    keras.utils.set_random_seed(args.seed)
    data = datasets.load(args.dataset, data_dir=args.data_dir)
    inputs, targets = data.train_arrays(max_len=args.max_len, prefixes=args.prefixes)
    kwargs = dict(
        num_items=data.num_items,
        max_len=args.max_len,
        hidden_dim=args.hidden_dim,
        num_blocks=args.num_blocks,
        num_heads=args.num_heads,
        dropout=0.5,
        softmax=args.softmax,
        negatives=args.negatives,
        num_negatives=args.num_negatives,
        sampler_seed=args.seed,
    )
    sampled = None
    if args.softmax == "sampled":
        sampled = (
            args.num_negatives if args.negatives != "in_batch" else 0,
            args.negatives != "uniform",
        )
    peak = matmul_peak_flops()
    print(f"matmul peak: {peak / 1e9:.1f} GFLOP/s")
    results = {}
    for kind in args.models.split(","):
        base, _, variant = kind.partition("-")
        if base not in ("sasrec", "fame") or variant not in ("", "full"):
            raise ValueError(f"--models: unknown model {kind!r}")
        if variant and not args.prefixes:
            raise ValueError(f"--models {kind}: the -full variants need --prefixes")
        keras.utils.set_random_seed(args.seed)
        if base == "sasrec":
            model = SASRec(**kwargs)
        else:
            model = FAME(num_experts=args.num_experts, **kwargs)
        if sampled is not None and sampled[1]:
            model.set_item_frequencies(
                np.bincount(targets[targets > 0], minlength=data.num_items + 1)
            )
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        train = data.train_dataset(
            batch_size=args.batch_size,
            max_len=args.max_len,
            seed=args.seed,
            bucket=args.bucket,
            prefixes=args.prefixes,
        )
        if variant == "full":
            train = train.map(_in_last_column)
        model.fit(train.take(args.warmup_steps), epochs=1, verbose=0)  # trace
        times = []
        for _ in range(args.epochs):
            start = time.perf_counter()
            history = model.fit(train, epochs=1, verbose=0)
            times.append(time.perf_counter() - start)
        flops = epoch_flops(
            epoch_shapes(train),
            base,
            args.hidden_dim,
            args.num_blocks,
            args.num_heads,
            args.num_experts,
            data.num_items,
            4 * args.hidden_dim,
            sampled,
        )
        seconds = min(times)
        results[kind] = {
            "epoch_seconds": seconds,
            "epoch_seconds_all": times,
            "sequences_per_second": len(inputs) / seconds,
            "loss": history.history["loss"][-1],
            "epoch_gflop": flops / 1e9,
            "achieved_gflops": flops / seconds / 1e9,
            "fraction_of_peak": flops / seconds / peak,
            "matmul_bound_seconds": flops / peak,
            "matmul_bound_ratio": seconds / (flops / peak),
        }
        print(
            f"{kind:6s} epoch {seconds:7.2f} s  ({len(inputs) / seconds:7.0f} seq/s)  "
            f"{flops / seconds / 1e9:6.1f} GFLOP/s = {flops / seconds / peak:.0%} of peak; "
            f"{seconds / (flops / peak):.2f}x a matmul-bound epoch"
        )
    ratio = None
    if {"fame", "sasrec"} <= results.keys():
        ratio = results["fame"]["epoch_seconds"] / results["sasrec"]["epoch_seconds"]
        print(f"FAME / SASRec epoch time: {ratio:.2f}x (goal <= 1.25x)")
    for kind in ("sasrec", "fame"):
        if {kind, f"{kind}-full"} <= results.keys():
            saving = (
                results[f"{kind}-full"]["epoch_seconds"]
                / results[kind]["epoch_seconds"]
            )
            print(f"{kind}: full last block / last position only: {saving:.2f}x")
    report = {
        "benchmark": "epoch_time",
        "dataset": args.dataset,
        "rows": int(len(inputs)),
        "real_positions": int(np.count_nonzero(targets)),
        "config": {k: v for k, v in vars(args).items() if k != "output"},
        "seed": args.seed,
        "matmul_peak_gflops": peak / 1e9,
        "models": results,
        "fame_over_sasrec": ratio,
        "machine": machine_description(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "commit": source_commit(ROOT),
        "command": "python benchmarks/bench_epoch.py " + " ".join(args.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {out}")


def main(argv=None):
    import sys

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="sports")
    parser.add_argument("--data-dir", default=os.environ.get("KERAS_FAME_DATA_DIR"))
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--hidden-dim", type=int, default=64)
    parser.add_argument("--num-blocks", type=int, default=2)
    parser.add_argument("--num-heads", type=int, default=2)
    parser.add_argument("--num-experts", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs per model")
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--bucket", action="store_true", help="length-bucketed batches")
    parser.add_argument(
        "--prefixes",
        action="store_true",
        help="one row per target, as TrainConfig's default (else one row per user)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--models",
        default="sasrec,fame",
        help="comma-separated; with --prefixes also sasrec-full and fame-full: "
        "the same rows with the targets in the last column, so the last block "
        "runs over every position",
    )
    parser.add_argument("--softmax", default="full", choices=("full", "sampled"))
    parser.add_argument(
        "--negatives", default="uniform", choices=("uniform", "in_batch", "mixed")
    )
    parser.add_argument("--num-negatives", type=int, default=1024)
    parser.add_argument(
        "--output", default=str(ROOT / "benchmarks/results/epoch_time.json")
    )
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.argv = argv
    run(args)


if __name__ == "__main__":
    main()
