"""Control for FAME's fine-tuning: the pretrained SASRec trained further alike.

The recipe fine-tunes FAME in a second stage at a smaller Adam rate
(`TrainConfig.finetune_learning_rate`) and its own dropout
(`TrainConfig.finetune_dropout`). To tell FAME's gain from what any such
second stage gives, this trains the finished SASRec of a recipe work folder
(`<workdir>/config.json` and `<workdir>/sasrec/model.keras`, as
`examples/train_sports.py` leaves them) further with FAME's rate, dropout,
epoch budget and early stopping, in `<workdir>/sasrec-continued` (resumable
like the recipe's stages), and writes a record shaped like
`benchmarks/results/<dataset>-<model>.json` (model `sasrec-continued`).

The stage starts from SASRec's best weights with a fresh Adam, as FAME's does.
`--carry-optimizer` instead carries on the Adam moments and step count saved
with the SASRec (those of its last epoch; only the rate changes), in
`<workdir>/sasrec-continued-carried`: the two tell apart what the restart with
a fresh optimizer does from what the smaller rate does.

Usage:
    python examples/train_sports.py --dataset toys --data-dir ../shared/datasets/amazon \
        --pretrain-epochs 80 --finetune-epochs 60 --patience 8
    python research/scripts/bench_sasrec_continued.py --dataset toys \
        --data-dir ../shared/datasets/amazon --workdir runs/toys \
        --out research/results/experiments/toys-sasrec-continued.json
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


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = _recipe_folder.parser(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help="default: the folder's finetune_learning_rate (else its learning_rate)",
    )
    parser.add_argument(
        "--dropout",
        default=None,
        help="dropout rate (attention too) of the continued SASRec, or none for "
        "its own rates; default: the folder's finetune_dropout (None: its own)",
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="default: its finetune_epochs"
    )
    parser.add_argument(
        "--carry-optimizer",
        action="store_true",
        help="keep SASRec's saved Adam state (moments, step count) instead of a "
        "fresh Adam",
    )
    args = parser.parse_args(argv)
    from benchmarks.provenance import source_commit

    commit = source_commit(ROOT)  # the code this run uses (read before training)

    workdir = Path(args.workdir)
    config_path, sasrec_path = _recipe_folder.files(workdir)

    import keras

    from keras_fame import datasets
    from keras_fame.training import (
        FAME_FIELDS,
        config_from_record,
        parse_rate_or_none,
        run_stage,
    )

    recipe = config_from_record(json.loads(config_path.read_text()))
    rate = args.learning_rate
    if rate is None:
        rate = recipe.finetune_config().learning_rate
    if not rate > 0:
        raise SystemExit(f"--learning-rate must be positive. Received: {rate}")
    dropout = recipe.finetune_dropout  # --dropout's default
    if args.dropout is not None:
        try:
            dropout = parse_rate_or_none(args.dropout)
        except ValueError as error:
            raise SystemExit(f"--dropout {error}") from None
    epochs = recipe.finetune_epochs if args.epochs is None else args.epochs
    if epochs < 1:
        raise SystemExit(f"--epochs must be at least 1. Received: {epochs}")
    config = dataclasses.replace(recipe, learning_rate=rate)
    if args.carry_optimizer and config.ema_momentum is not None:
        # The carried averages would be SASRec's last step's, not its best's.
        raise SystemExit(
            "--carry-optimizer does not carry weight averages: the folder's "
            f"recipe has ema_momentum={config.ema_momentum}."
        )
    if dropout is not None:  # as `TrainConfig.finetune_config` does for FAME
        config = dataclasses.replace(config, dropout=dropout, attention_dropout=None)
    data = datasets.load(args.dataset, data_dir=args.data_dir)

    saved = {}

    def build():
        model = keras.saving.load_model(sasrec_path)
        saved["optimizer"] = model.optimizer  # fit_stage compiles a fresh Adam
        if dropout is None:
            return model
        # The same weights in a model with the stage's dropout rates.
        return _recipe_folder.with_dropout(model, dropout, dropout)

    callbacks = [_carry_optimizer(saved)] if args.carry_optimizer else []
    stage = "sasrec-continued-carried" if args.carry_optimizer else "sasrec-continued"
    # The stage's folder holds its rate, dropout and budget (stage.json): a
    # rerun with another --learning-rate, --dropout or --epochs is refused,
    # finished or not.
    try:
        _, results = run_stage(
            stage,
            build,
            data,
            config,
            workdir,
            epochs,
            verbose=2,
            callbacks=callbacks,
            ignore=FAME_FIELDS,
        )
    except ValueError as error:
        raise SystemExit(
            f"--learning-rate {rate}, --dropout {dropout}, --epochs {epochs}: {error}"
        ) from None

    record = {
        "dataset": args.dataset,
        "model": "sasrec-continued",
        "source": str(sasrec_path),
        **_recipe_folder.stage_results(results),
        "learning_rate": rate,
        "dropout": dropout,
        "carry_optimizer": args.carry_optimizer,
        "config": dataclasses.asdict(recipe),
        "seed": config.seed,
    }
    print(json.dumps({k: record[k] for k in ("test", "valid", "best_epoch")}, indent=2))
    return _recipe_folder.save(
        args.out, record, "bench_sasrec_continued.py", argv, commit
    )


def _carry_optimizer(saved):
    """A callback copying the saved optimizer's state into the new one.

    It acts at the start of a fresh stage only: a resumed stage
    (`BackupAndRestore` runs first and restores a non-zero step count) keeps
    its own state.
    """
    import keras

    class CarryOptimizer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            optimizer = self.model.optimizer
            if int(keras.ops.convert_to_numpy(optimizer.iterations)) > 0:
                return
            source = saved["optimizer"]
            if type(source) is not type(optimizer) or len(source.variables) != len(
                optimizer.variables
            ):
                raise ValueError(
                    f"--carry-optimizer: the saved optimizer ({source!r}, "
                    f"{len(source.variables)} variables) does not match the "
                    f"stage's ({optimizer!r}, {len(optimizer.variables)})"
                )
            for new, old in zip(optimizer.variables, source.variables, strict=True):
                if new.name != "learning_rate":  # the stage's own rate
                    new.assign(old)

    return CarryOptimizer()


if __name__ == "__main__":
    main()
