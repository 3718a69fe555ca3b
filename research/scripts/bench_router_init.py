"""FAME fine-tuned with its expert router drawn at a larger scale.

The router of each head (Eq. 16, `W_exp^(h)`) starts like every kernel, from
a normal of stddev 0.02. Its inputs, the experts' outputs, are small (about
0.2 per feature on Toys), so it starts out weighing the experts evenly, and
with experts that start alike it gets next to no gradient: trained FAMEs
route with an entropy of .999 of the maximum
(`keras_fame.inspection.expert_usage`). This fine-tunes FAME from the
finished SASRec of a recipe work folder (`<workdir>/config.json` and
`<workdir>/sasrec/model.keras`, as `examples/train_sports.py` leaves them)
exactly as the recipe would, except that the router kernel is drawn from a
normal of stddev `--router-stddev` (seeded by the folder's seed), in
`<workdir>/fame-router<stddev>` (resumable like the recipe's stages), and
writes a record shaped like `benchmarks/results/<dataset>-fame.json` with the
trained model's `expert_usage`.

Usage:
    python examples/train_sports.py --dataset toys --data-dir ../shared/datasets/amazon \
        --pretrain-epochs 80 --finetune-epochs 60 --patience 8 --prefixes
    python research/scripts/bench_router_init.py --dataset toys \
        --data-dir ../shared/datasets/amazon --workdir runs/toys \
        --router-stddev 0.5 --expert-noise 0.1 \
        --out research/results/experiments/toys-fame-router0.5-noise0.1.json
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
        "--router-stddev", type=float, required=True, help="the router's init stddev"
    )
    parser.add_argument(
        "--expert-noise",
        type=float,
        default=None,
        help="default: the folder's expert_noise",
    )
    args = parser.parse_args(argv)
    if not args.router_stddev > 0:
        raise SystemExit(
            f"--router-stddev must be positive. Received: {args.router_stddev}"
        )
    from benchmarks.provenance import source_commit

    commit = source_commit(ROOT)  # the code this run uses (read before training)
    workdir = Path(args.workdir)
    config_path, sasrec_path = _recipe_folder.files(workdir)

    import keras

    from keras_fame import datasets
    from keras_fame.inspection import expert_usage
    from keras_fame.training import (
        config_from_record,
        run_stage,
        warm_start_fame,
    )

    recipe = config_from_record(json.loads(config_path.read_text()))
    if args.expert_noise is not None:
        try:
            recipe = dataclasses.replace(recipe, expert_noise=args.expert_noise)
        except ValueError as error:
            raise SystemExit(f"--expert-noise: {error}") from None
    if recipe.expert_init != "pretrained":
        raise SystemExit("the folder's recipe must use expert_init='pretrained'.")
    config = recipe.finetune_config()
    data = datasets.load(args.dataset, data_dir=args.data_dir)

    def build():  # train_fame's warm start, then the router redrawn
        fame = warm_start_fame(keras.saving.load_model(sasrec_path), config)
        _recipe_folder.redraw_router(fame, args.router_stddev, config.seed)
        return fame

    # stage.json holds the config (expert_noise included); the stddev is in the
    # stage's name, so another --router-stddev trains in another folder.
    stage = f"fame-router{args.router_stddev:g}"
    try:
        model, results = run_stage(
            stage, build, data, config, workdir, config.finetune_epochs, verbose=2
        )
    except ValueError as error:
        raise SystemExit(f"--expert-noise {config.expert_noise}: {error}") from None
    usage = expert_usage(model, data, max_users=1000)
    record = {
        "dataset": args.dataset,
        "model": "fame",
        "source": str(sasrec_path),
        "router_stddev": args.router_stddev,
        **_recipe_folder.stage_results(results),
        "expert_usage": _recipe_folder.usage_record(
            usage, ("mean_routing", "routing_entropy", "expert_similarity")
        ),
        "config": dataclasses.asdict(recipe),
        "seed": config.seed,
    }
    record["expert_usage"]["users"] = int(usage["users"])
    print(json.dumps({k: record[k] for k in ("test", "valid", "best_epoch")}, indent=2))
    print(json.dumps(record["expert_usage"]))
    return _recipe_folder.save(args.out, record, "bench_router_init.py", argv, commit)


if __name__ == "__main__":
    main()
