"""FAME without SASRec pretraining: FAME from scratch, then FAME's second stage.

The paper's recipe (Sec. 4.4) pretrains SASRec and builds FAME from it. This
asks what the SASRec stage buys: it trains FAME itself from a random start
with SASRec's stage (the recipe's `learning_rate`, dropout, `pretrain_epochs`
and early stopping) in `<workdir>/fame-scratch`, then trains that FAME on
with FAME's fine-tuning stage (`finetune_learning_rate`, `finetune_dropout`,
`finetune_epochs`, a fresh Adam, as the recipe's FAME stage) in
`<workdir>/fame-scratch-finetuned`. The configuration is the recipe's, read
from `<workdir>/config.json` (as `examples/train_sports.py --workdir W`
writes it; the recipe's SASRec stage is not needed). Both stages resume like
the recipe's. The record, shaped like
`benchmarks/results/<dataset>-fame.json` (model `fame-scratch`), holds the
final model's metrics at the top and the first stage's under `first_stage`,
and the final FAME's `expert_usage` (`keras_fame.inspection.expert_usage`).

Usage:
    python examples/train_sports.py --dataset toys --data-dir ../shared/datasets/amazon \
        --pretrain-epochs 80 --finetune-epochs 60 --patience 8 --prefixes
    python research/scripts/bench_fame_scratch.py --dataset toys \
        --data-dir ../shared/datasets/amazon --workdir runs/toys \
        --out research/results/experiments/toys-fame-scratch.json
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

# `TrainConfig` fields the from-scratch stage does not read (it draws every
# FAME weight at random and trains with the backbone's dropout).
_SCRATCH_IGNORES = ("expert_init", "expert_noise", "facet_init", "finetune_dropout")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = _recipe_folder.parser(
        __doc__.split("\n\n")[0], "a folder holding the recipe's config.json"
    )
    args = parser.parse_args(argv)
    from benchmarks.provenance import source_commit

    commit = source_commit(ROOT)  # the code this run uses (read before training)

    workdir = Path(args.workdir)
    config_path = workdir / "config.json"
    if not config_path.exists():
        raise SystemExit(
            f"--workdir {workdir}: {config_path} does not exist; run "
            "examples/train_sports.py with this --workdir first (or copy a "
            "recipe's config.json there)."
        )

    from keras_fame import datasets
    from keras_fame.inspection import expert_usage
    from keras_fame.training import config_from_record, run_stage, scratch_fame

    recipe = config_from_record(json.loads(config_path.read_text()))
    data = datasets.load(args.dataset, data_dir=args.data_dir)

    try:
        first, first_results = run_stage(
            "fame-scratch",
            lambda: scratch_fame(data.num_items, recipe),
            data,
            recipe,
            workdir,
            recipe.pretrain_epochs,
            verbose=2,
            ignore=_SCRATCH_IGNORES,
        )
        finetune = recipe.finetune_config()

        def carried():
            # The first stage's weights in a FAME with the fine-tuning
            # stage's dropout rates (`finetune_config` sets both).
            return _recipe_folder.with_dropout(
                first, finetune.dropout, finetune.attention_dropout
            )

        model, results = run_stage(
            "fame-scratch-finetuned",
            carried,
            data,
            finetune,
            workdir,
            recipe.finetune_epochs,
            verbose=2,
        )
    except ValueError as error:
        raise SystemExit(f"--workdir {workdir}: {error}") from None

    usage = expert_usage(model, data, max_users=1000)
    record = {
        "dataset": args.dataset,
        "model": "fame-scratch",
        **_recipe_folder.stage_results(results),
        "first_stage": _recipe_folder.stage_results(first_results),
        "expert_usage": _recipe_folder.usage_record(usage),
        "config": dataclasses.asdict(recipe),
        "seed": recipe.seed,
    }
    summary = {k: record[k] for k in ("test", "valid", "best_epoch")}
    summary["first_stage_valid_NDCG@20"] = record["first_stage"]["valid"]["NDCG@20"]
    print(json.dumps(summary, indent=2))
    return _recipe_folder.save(args.out, record, "bench_fame_scratch.py", argv, commit)


if __name__ == "__main__":
    main()
