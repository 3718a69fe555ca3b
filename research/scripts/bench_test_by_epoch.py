"""FAME's test metrics at every fine-tuning epoch: what choosing the epoch on test would give.

The recipe picks FAME's epoch on validation NDCG@20 and reports the test
metrics of that epoch. This reruns the fine-tuning stage of a recipe work
folder (`<workdir>/config.json` and `<workdir>/sasrec/model.keras`, as
`examples/train_sports.py` leaves them), warm-started and configured exactly
as the recipe's FAME stage, in `<workdir>/fame-test-by-epoch` (resumable like
the recipe's stages), and also ranks the test split after every epoch. The
extra evaluation does not touch training: the validation-selected metrics
are the recipe's FAME record's.

The record holds each epoch's validation and test metrics, the
validation-selected epoch's, and for each test metric its best epoch and
value (an upper bound for any epoch-selection rule with this run; reading
it off the test split is not a fair result, only a diagnostic), each next to
the paper's Table 2 FAME row.

Usage:
    python examples/train_sports.py --dataset toys --data-dir ../shared/datasets/amazon \
        --pretrain-epochs 80 --finetune-epochs 60 --patience 8 --workdir runs/toys
    python research/scripts/bench_test_by_epoch.py --dataset toys \
        --data-dir ../shared/datasets/amazon --workdir runs/toys \
        --out research/results/experiments/toys-fame-test-by-epoch.json
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from research.scripts import _recipe_folder  # noqa: E402

STAGE = "fame-test-by-epoch"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = _recipe_folder.parser(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--patience",
        type=int,
        default=None,
        help="early-stopping patience (default: the folder's): a larger one "
        "shows the test metrics past the recipe's stop",
    )
    args = parser.parse_args(argv)
    from benchmarks.provenance import source_commit

    commit = source_commit(ROOT)  # the code this run uses (read before training)

    workdir = Path(args.workdir)
    config_path, sasrec_path = _recipe_folder.files(workdir)

    import keras

    from keras_fame import datasets
    from keras_fame.training import (
        METRICS,
        config_from_record,
        run_stage,
        warm_start_fame,
    )

    recipe = config_from_record(json.loads(config_path.read_text()))
    if args.patience is not None:
        if args.patience < 0:
            raise SystemExit(
                f"--patience must be a non-negative integer. Received: {args.patience}"
            )
        recipe = dataclasses.replace(recipe, patience=args.patience)
    if recipe.ema_momentum is not None:
        # RankingEvaluation would score the averaged weights and this script's
        # test ranking the raw ones: the rows would not match.
        raise SystemExit(
            f"{config_path}: ema_momentum={recipe.ema_momentum}; this benchmark "
            "ranks the raw weights each epoch and supports recipes without "
            "weight averaging only."
        )
    config = recipe.finetune_config()  # as `keras_fame.training.train_fame`
    data = datasets.load(args.dataset, data_dir=args.data_dir)
    paper = _paper_row(args.dataset)

    # Loaded before the stage seeds its run, as the recipe's SASRec is: loading
    # draws from the random state (the weights' initializers).
    sasrec = keras.saving.load_model(sasrec_path)

    def build():
        return warm_start_fame(sasrec, config)

    stage_dir = workdir / STAGE
    test_log = test_each_epoch(
        data.eval_dataset("test", config.eval_batch_size, config.max_len),
        stage_dir / "test_by_epoch.json",
        item_chunk_size=config.eval_item_chunk_size,
    )
    # stage.json holds the stage's configuration and budget: a rerun with
    # another --patience is refused, finished or not.
    try:
        _, results = run_stage(
            STAGE,
            build,
            data,
            config,
            workdir,
            config.finetune_epochs,
            verbose=2,
            callbacks=[test_log],
        )
    except ValueError as error:
        given = "" if args.patience is None else f"--patience {args.patience}: "
        raise SystemExit(f"{given}{error}") from None

    history = json.loads((stage_dir / "history.json").read_text())
    tests = test_log.entries  # as written to test_by_epoch.json (or read back)
    record = {
        "dataset": args.dataset,
        "model": "fame",
        "source": str(sasrec_path),
        **_recipe_folder.stage_results(results),
        **by_epoch(history, tests, paper, METRICS),
        "paper_test": paper,
        "patience": config.patience,
        "config": dataclasses.asdict(recipe),
        "seed": config.seed,
    }
    print(json.dumps({k: record[k] for k in ("test", "best_test")}, indent=2))
    return _recipe_folder.save(args.out, record, "bench_test_by_epoch.py", argv, commit)


def by_epoch(history: list, tests: list, paper: dict | None, metrics) -> dict:
    """The record's per-epoch part.

    Args:
        history: `RankingEvaluation.history` (validation, one dict per epoch
            with a 0-based `"epoch"`).
        tests: `TestEachEpoch`'s entries, alike for the test split.
        paper: The paper's test row `{metric: value}`, or None.
        metrics: The metric names to report.

    Returns:
        `{"epochs": [{"epoch" (1-based), "valid", "test"}],
        "best_test": {metric: {"epoch", "value", "percent_of_paper"}}}`.
    """
    valid = {h["epoch"]: h for h in history}
    test = {t["epoch"]: t for t in tests}
    if sorted(valid) != sorted(test):
        raise ValueError(
            f"validation epochs {sorted(valid)} and test epochs {sorted(test)} "
            "differ: the stage was not run with TestEachEpoch throughout"
        )
    epochs = [
        {
            "epoch": e + 1,
            "valid": {m: float(valid[e][m]) for m in metrics},
            "test": {m: float(test[e][m]) for m in metrics},
        }
        for e in sorted(valid)
    ]
    best = {}
    for m in metrics:
        top = max(epochs, key=lambda row: row["test"][m])  # first of ties
        best[m] = {"epoch": top["epoch"], "value": top["test"][m]}
        if paper is not None:
            best[m]["percent_of_paper"] = 100 * top["test"][m] / paper[m]
    return {"epochs": epochs, "best_test": best}


def _paper_row(dataset: str) -> dict | None:
    """The paper's Table 2 FAME test row for `dataset` (`{metric: value}`),
    from `examples/train_sports.py`; None for a dataset the paper lacks."""
    import importlib.util

    from keras_fame.training import METRICS

    path = ROOT / "examples" / "train_sports.py"
    spec = importlib.util.spec_from_file_location("train_sports", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    row = module.PAPER_TABLE_2.get(dataset)
    return None if row is None else dict(zip(METRICS, row["fame"], strict=True))


def test_each_epoch(test_dataset, path, item_chunk_size=None):
    """A callback ranking `test_dataset` after every epoch.

    Each epoch appends `{"epoch" (0-based), metrics..., "users"}` (as
    `keras_fame.evaluation.evaluate_ranking` returns them) to the JSON list
    at `path`, written at once, so a stage resumed by `BackupAndRestore`
    keeps the epochs before the interruption (an epoch run again replaces
    its entry). It scores the weights being trained and changes nothing.
    """
    import keras

    from keras_fame.evaluation import evaluate_ranking

    path = Path(path)

    class TestEachEpoch(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.entries = json.loads(path.read_text()) if path.exists() else []

        def on_epoch_end(self, epoch, logs=None):
            metrics = evaluate_ranking(
                self.model, test_dataset, item_chunk_size=item_chunk_size
            )
            self.entries = [e for e in self.entries if e["epoch"] < epoch]
            self.entries.append({"epoch": epoch, **metrics})
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.entries, indent=2) + "\n")

    return TestEachEpoch()


if __name__ == "__main__":
    main()
