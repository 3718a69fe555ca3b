"""What the benchmarks that start from a recipe work folder share.

A recipe work folder is what `examples/train_sports.py --workdir W` leaves:
`W/config.json` (the run's `TrainConfig`) and `W/sasrec/model.keras` (the
finished SASRec stage), among the stages' other files.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def parser(
    description: str, workdir_help: str = "a recipe work folder with a finished SASRec"
) -> argparse.ArgumentParser:
    """A command line with `--dataset`, `--data-dir`, `--workdir` and `--out`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--workdir", required=True, help=workdir_help)
    parser.add_argument("--out", required=True, help="where to write the record")
    return parser


def files(workdir) -> tuple[Path, Path]:
    """`(config.json, sasrec/model.keras)` of `workdir`; `SystemExit` naming
    the first one missing."""
    workdir = Path(workdir)
    paths = (workdir / "config.json", workdir / "sasrec" / "model.keras")
    for path in paths:
        if not path.exists():
            raise SystemExit(
                f"--workdir {workdir}: {path} does not exist; run "
                "examples/train_sports.py with this --workdir first."
            )
    return paths


def stage_results(results: dict) -> dict:
    """A stage's `results.json` (from `keras_fame.training.run_stage`) as a
    record's fields: test and validation metrics, best epoch, epochs, times."""
    from keras_fame.training import METRICS

    return {
        "test": {m: float(results["test"][m]) for m in (*METRICS, "MRR")},
        "valid": {m: float(results["valid"][m]) for m in (*METRICS, "MRR")},
        **{
            key: results[key]
            for key in ("best_epoch", "epochs_run", "epoch_seconds", "seconds_to_best")
        },
    }


def with_dropout(model, dropout: float, attention_dropout: float | None):
    """A copy of `model` (same class, configuration and weights) with other
    dropout rates: `dropout` and `attention_dropout` (None: `dropout`) as
    the SASRec/FAME constructors take them."""
    import keras

    rates = dict(dropout=dropout, attention_dropout=attention_dropout)
    clone = type(model).from_config({**model.get_config(), **rates})
    clone(keras.ops.ones((1, model.max_len), "int32"))
    clone.set_weights(model.get_weights())
    return clone


def redraw_router(fame, stddev: float, seed: int) -> None:
    """Draws `fame`'s router kernel (every head's `W_exp`) from a normal of
    `stddev`, seeded by `seed + 1`."""
    import numpy as np

    router = fame.fame_block.attention.router_kernel
    rng = np.random.default_rng(seed + 1)
    router.assign(rng.normal(0.0, stddev, router.shape).astype("float32"))


def usage_record(usage: dict, keys=("expert_similarity", "routing_entropy")) -> dict:
    """The per-head arrays `keys` of `keras_fame.inspection.expert_usage`'s
    result as JSON-ready lists, rounded to 6 decimals."""
    import numpy as np

    return {key: np.round(usage[key], 6).tolist() for key in keys}


def save(out, record: dict, script: str, argv, commit: str) -> dict:
    """`record` with its provenance (`commit`, `machine`, the `command` that
    made it, `date`), written as JSON to `out` and returned."""
    import json
    import time

    from benchmarks.provenance import machine_description

    record = {
        **record,
        "commit": commit,
        "machine": machine_description(),
        "command": f"python research/scripts/{script} " + " ".join(argv),
        "date": time.strftime("%Y-%m-%d"),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"saved {out}")
    return record
