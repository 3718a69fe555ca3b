"""Times one training step of SASRec and FAME against its matmul floor.

Setting (issue 42): Amazon Sports' shape with the package's default rows (one
target per row): batch 256, 10 positions, 18,357 items, d=64, 2 blocks, 2
heads, FAME with 4 experts, dropout 0.5, Adam 1e-3, full softmax. The data
are synthetic (random ids of that shape; a step's cost does not depend on
which ids it reads).

In one process, interleaved (each repeat times every variant in turn, in a
rotating order) so that a shared machine's load falls on all of them alike,
it prints and saves:
- the matmul floor: the dense matmuls a step cannot avoid, forward and
  backward (the item logits, and each block's Q/K/V/output projections and
  FFN; the last block computes K and V at every position, the rest at the
  last position only), each a `(m, k) @ (k, n)` product plus its two
  gradient products;
- the full-softmax loss alone (forward and backward over `(batch, items)`
  logits, from a table with a padding row) with the fused loss, the fused
  loss with a plain `table[1:]` slice (what `_without_padding_row`'s
  gradient buys), and the earlier loss, and its three matmuls;
- FAME's scoring query alone (forward and backward at the last position),
  as the layer computes it (a tensordot) and as the einsum it replaced;
- the SASRec and FAME train-step times with the fused loss ("after") and
  with the earlier loss ("before", `_fused_full_softmax = False`), and the
  ratios step / floor and FAME / SASRec;
- with `--parts`, the parts of each (fused) step: forward and loss with and
  without dropout, forward and backward, and Adam's update of the item
  table and of the other weights (a profile by subtraction).

Times are the median and the minimum over the repeats of the mean time of
`--steps` calls; on a loaded machine the minimum is the less disturbed.

Usage:
    python benchmarks/bench_step.py                  # Sports' shape
    python benchmarks/bench_step.py --repeats 15 --steps 10
    python benchmarks/bench_step.py --num-items 500  # the per-step overhead
    python benchmarks/bench_step.py --parts --output \
        benchmarks/results/step_parts.json  # where a step's time goes
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_fame.layers import FacetGatedScorer  # noqa: E402
from keras_fame.models import FAME, SASRec  # noqa: E402
from keras_fame.models.base import (  # noqa: E402
    _without_padding_row,
    full_softmax_cross_entropy,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.provenance import machine_description, source_commit  # noqa: E402

SHARED_NOTE = (
    "Measured on a machine shared with other jobs (2 CPU cores): absolute "
    "times are noisy; the ratios come from interleaved repeats in one process."
)


def floor_shapes(args) -> list[tuple[int, int, int]]:
    """`(m, k, n)` of every forward matmul the floor counts."""
    d, batch = args.hidden_dim, args.batch_size
    tokens = batch * args.positions
    inner = 4 * d
    shapes = [(batch, d, args.num_items)]  # item logits
    for block in range(args.num_blocks):
        last = block == args.num_blocks - 1
        rows = batch if last else tokens
        shapes += [(tokens, d, d), (tokens, d, d)]  # K, V
        shapes += [(rows, d, d), (rows, d, d)]  # Q, output projection
        shapes += [(rows, d, inner), (rows, inner, d)]  # FFN
    return shapes


def floor_function(shapes):
    """A tf.function running each matmul forward and its two gradients."""
    rng = np.random.default_rng(0)
    tensors = []
    for m, k, n in shapes:
        tensors.append(
            tuple(
                tf.constant(rng.normal(size=s).astype("float32"))
                for s in ((m, k), (k, n), (m, n))
            )
        )

    @tf.function
    def run():
        outputs = []
        for x, w, dy in tensors:
            outputs.append(tf.matmul(x, w))  # forward
            outputs.append(tf.matmul(dy, w, transpose_b=True))  # d x
            outputs.append(tf.matmul(x, dy, transpose_a=True))  # d w
        return outputs

    return run


def loss_functions(args):
    """Forward+backward of the full-softmax loss alone, from a table variable
    with a padding row, as in the models: the fused loss (with the padding
    row dropped by `_without_padding_row`, and by a plain slice) and the
    earlier loss (plain slice, Keras's sparse cross-entropy)."""
    rng = np.random.default_rng(1)
    shape = (args.batch_size, args.hidden_dim)
    vectors = tf.Variable(rng.normal(0, 0.1, shape).astype("float32"))
    table = tf.Variable(
        rng.normal(0, 0.1, (args.num_items + 1, args.hidden_dim)).astype("float32")
    )
    labels = tf.constant(rng.integers(0, args.num_items, args.batch_size), "int32")

    def fused_with(drop_padding):
        @tf.function
        def fused():
            with tf.GradientTape() as tape:
                losses = full_softmax_cross_entropy(
                    vectors, drop_padding(table), labels
                )
                loss = tf.reduce_mean(losses)
            return tape.gradient(loss, [vectors, table])

        return fused

    @tf.function
    def earlier():
        with tf.GradientTape() as tape:
            logits = tf.matmul(vectors, table[1:], transpose_b=True)
            loss = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(
                    labels, logits, from_logits=True
                )
            )
        return tape.gradient(loss, [vectors, table])

    return {
        "loss_fused": fused_with(_without_padding_row),
        "loss_fused_plain_slice": fused_with(lambda t: t[1:]),
        "loss_earlier": earlier,
    }


def scorer_functions(args) -> dict:
    """Forward+backward of FAME's scoring query at the last position: the
    layer's (a tensordot) and the einsum it replaced."""
    heads = args.num_heads
    head_dim = args.hidden_dim // heads
    scorer = FacetGatedScorer(heads)
    scorer.build((None, 1, heads, head_dim), (args.num_items + 1, args.hidden_dim))
    rng = np.random.default_rng(2)
    states = tf.constant(
        rng.normal(size=(args.batch_size, 1, heads, head_dim)).astype("float32")
    )

    def einsum_query(head_states):
        gate = scorer.gate(head_states)
        weighted = head_states * gate[..., None]
        return keras.ops.einsum("...hk,hdk->...d", weighted, scorer.facet_kernel)

    def timed(query):
        @tf.function
        def run():
            with tf.GradientTape() as tape:
                tape.watch(states)
                loss = tf.reduce_sum(tf.square(query(states)))
            return tape.gradient(loss, [states, *scorer.trainable_variables])

        return run

    return {
        "scorer_query": timed(scorer.query),
        "scorer_query_einsum": timed(einsum_query),
    }


def synthetic_batch(args):
    """Left-padded ids `(batch, positions)` and one target per row."""
    rng = np.random.default_rng(args.seed)
    ids = rng.integers(1, args.num_items + 1, (args.batch_size, args.positions))
    lengths = rng.integers(1, args.positions + 1, args.batch_size)
    for row, length in enumerate(lengths):
        ids[row, : args.positions - length] = 0
    targets = rng.integers(1, args.num_items + 1, args.batch_size)
    return tf.constant(ids, "int32"), tf.constant(targets, "int32")


def _model(kind: str, fused: bool, args):
    """A fresh compiled model (seeded) whose optimizer is built."""
    keras.utils.set_random_seed(args.seed)
    kwargs = dict(
        num_items=args.num_items,
        max_len=args.max_len,
        hidden_dim=args.hidden_dim,
        num_blocks=args.num_blocks,
        num_heads=args.num_heads,
        dropout=args.dropout,
    )
    if kind == "sasrec":
        model = SASRec(**kwargs)
    else:
        model = FAME(num_experts=args.num_experts, **kwargs)
    model._fused_full_softmax = fused
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.optimizer.build(model.trainable_variables)
    return model


def step_function(kind: str, fused: bool, args):
    """A traced train step of a fresh model; `fused` picks the loss."""
    model = _model(kind, fused, args)
    step = tf.function(model.train_step)
    batch = synthetic_batch(args)
    step(batch)  # trace with this loss
    return lambda: step(batch)


def part_functions(kind: str, args) -> dict:
    """The parts of a step (fused loss), each a traced function: the forward
    pass and loss with and without dropout, forward and backward, and
    Adam's update of all weights and of the item table alone."""
    model = _model(kind, True, args)
    x, y = synthetic_batch(args)
    weights = model.trainable_variables
    table = [model.item_embedding.embeddings]
    others = [w for w in weights if w is not table[0]]

    def loss(training):
        model._one_target_per_row = True
        try:
            return model.compute_loss(x, y, model(x, training=training))
        finally:
            model._one_target_per_row = False

    def gradients():
        with tf.GradientTape() as tape:
            value = loss(True)
        return tape.gradient(value, weights)

    grads = [tf.convert_to_tensor(g) for g in tf.function(gradients)()]
    table_grad = [grads[weights.index(table[0])]]
    other_grads = [g for g, w in zip(grads, weights, strict=True) if w is not table[0]]
    return {
        f"{kind}_part_forward": tf.function(lambda: loss(True)),
        f"{kind}_part_forward_no_dropout": tf.function(lambda: loss(False)),
        f"{kind}_part_forward_backward": tf.function(gradients),
        f"{kind}_part_adam_item_table": tf.function(
            lambda: model.optimizer.apply(table_grad, table)
        ),
        f"{kind}_part_adam_other_weights": tf.function(
            lambda: model.optimizer.apply(other_grads, others)
        ),
    }


def time_interleaved(functions: dict, repeats: int, steps: int) -> dict:
    """Median over `repeats` of the mean seconds of `steps` calls, each repeat
    running every function in turn (the order rotating between repeats)."""
    names = list(functions)
    for name in names:  # warm-up
        for _ in range(2):
            functions[name]()
    samples = {name: [] for name in names}
    for repeat in range(repeats):
        order = names[repeat % len(names) :] + names[: repeat % len(names)]
        for name in order:
            start = time.perf_counter()
            for _ in range(steps):
                functions[name]()
            samples[name].append((time.perf_counter() - start) / steps)
    return {
        name: {
            "median_ms": 1e3 * float(np.median(s)),
            "min_ms": 1e3 * float(np.min(s)),
            "all_ms": [1e3 * x for x in s],
        }
        for name, s in samples.items()
    }


def step_ratios(ms: dict) -> dict:
    """Each step and part over the floor, FAME over SASRec, the loss over
    its matmuls, and the scorer's einsum over its tensordot."""
    floor = ms["floor"]
    ratios = {}
    for name in ms:
        if name.startswith(("sasrec", "fame")):
            ratios[f"{name}_over_floor"] = ms[name] / floor
    for label in ("before", "after"):
        if f"fame_{label}" in ms and f"sasrec_{label}" in ms:
            ratios[f"fame_over_sasrec_{label}"] = (
                ms[f"fame_{label}"] / ms[f"sasrec_{label}"]
            )
    for name in ("loss_earlier", "loss_fused", "loss_fused_plain_slice"):
        ratios[f"{name}_over_floor"] = ms[name] / ms["loss_floor"]
    ratios["scorer_einsum_over_tensordot"] = (
        ms["scorer_query_einsum"] / ms["scorer_query"]
    )
    return ratios


CHANGES = (
    (
        "fused full-softmax loss (one softmax op, one-hot by arithmetic)",
        "loss_earlier",
        "loss_fused_plain_slice",
    ),
    (
        "padding row dropped with a concatenating gradient",
        "loss_fused_plain_slice",
        "loss_fused",
    ),
    (
        "FacetGatedScorer.query as a tensordot (was an einsum)",
        "scorer_query_einsum",
        "scorer_query",
    ),
    ("SASRec step, all changes", "sasrec_before", "sasrec_after"),
    ("FAME step, all changes", "fame_before", "fame_after"),
)


def changes(times: dict) -> list:
    """What each change bought: the two timed variants and the difference."""
    rows = []
    for change, before, after in CHANGES:
        if before in times and after in times:
            rows.append(
                {
                    "change": change,
                    "before": before,
                    "after": after,
                    "saved_ms_median": times[before]["median_ms"]
                    - times[after]["median_ms"],
                    "saved_ms_min": times[before]["min_ms"] - times[after]["min_ms"],
                }
            )
    return rows


def run(args):
    shapes = floor_shapes(args)
    functions = {"floor": floor_function(shapes)}
    functions["loss_floor"] = floor_function(shapes[:1])
    functions.update(loss_functions(args))
    functions.update(scorer_functions(args))
    for kind in args.models.split(","):
        if kind not in ("sasrec", "fame"):
            raise ValueError(f"--models: unknown model {kind!r} (sasrec, fame)")
        for fused, label in ((False, "before"), (True, "after")):
            functions[f"{kind}_{label}"] = step_function(kind, fused, args)
        if args.parts:
            functions.update(part_functions(kind, args))
    print(SHARED_NOTE)
    times = time_interleaved(functions, args.repeats, args.steps)
    ratios = {}
    for statistic in ("median_ms", "min_ms"):
        ms = {name: t[statistic] for name, t in times.items()}
        ratios[statistic] = step_ratios(ms)
    ms = {name: t["median_ms"] for name, t in times.items()}
    for name, t in times.items():
        print(f"{name:34s} {t['median_ms']:8.2f} ms median {t['min_ms']:8.2f} ms min")
    for name, value in ratios["median_ms"].items():
        print(
            f"{name:44s} {value:6.2f} (medians) {ratios['min_ms'][name]:6.2f} (minima)"
        )
    for row in changes(times):
        print(
            f"{row['change']}: {row['saved_ms_median']:.1f} ms saved (medians), "
            f"{row['saved_ms_min']:.1f} ms (minima)"
        )
    report = {
        "benchmark": "step_time",
        "config": {k: v for k, v in vars(args).items() if k not in ("output", "argv")},
        "seed": args.seed,
        "floor_matmuls_mnk": [list(s) for s in shapes],
        "times": times,
        "median_ms": ms,
        "ratios": ratios,
        "changes": changes(times),
        "note": SHARED_NOTE,
        "machine": machine_description(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "commit": source_commit(ROOT),
        "command": "python benchmarks/bench_step.py " + " ".join(args.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {out}")
    return report


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-items", type=int, default=18357)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--positions", type=int, default=10)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--hidden-dim", type=int, default=64)
    parser.add_argument("--num-blocks", type=int, default=2)
    parser.add_argument("--num-heads", type=int, default=2)
    parser.add_argument("--num-experts", type=int, default=4)
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--models", default="sasrec,fame")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--parts",
        action="store_true",
        help="also time the parts of each step (forward, backward, Adam)",
    )
    parser.add_argument(
        "--output", default=str(ROOT / "benchmarks/results/step_time.json")
    )
    args = parser.parse_args(argv)
    if args.positions > args.max_len:
        parser.error("--positions must be at most --max-len")
    args.argv = argv
    return run(args)


if __name__ == "__main__":
    main()
