"""How alike FAME's experts are, and how evenly routed, before fine-tuning.

Builds FAME from the finished SASRec of a recipe work folder
(`<workdir>/sasrec/model.keras`, as `examples/train_sports.py` leaves it)
with each warm start given by `--start` and measures it with
`keras_fame.inspection.expert_usage` (1000 test users), untrained. Compare
with the `expert_usage` of the fine-tuned records: it tells whether
fine-tuning makes the experts differ or only keeps what the start gave them.

A start is `INIT:NOISE[:ROUTER]`: `expert_init` (`pretrained` or `random`),
`expert_noise`, and optionally the stddev the router kernel is redrawn at
(as `research/scripts/bench_router_init.py` does, with the same seed).

Usage:
    python research/scripts/expert_usage_at_start.py --dataset toys \
        --data-dir ../shared/datasets/amazon --workdir runs/toys \
        --start pretrained:0.02 random:0.02 pretrained:0.1 pretrained:0.3 \
        pretrained:0.1:0.5 --out research/results/experiments/toys-expert-usage-at-start.json
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


def parse_start(text: str) -> dict:
    """`INIT:NOISE[:ROUTER]` as a dict, or a `ValueError` saying what was expected."""
    parts = text.split(":")
    try:
        if len(parts) not in (2, 3) or parts[0] not in ("pretrained", "random"):
            raise ValueError
        start = {"expert_init": parts[0], "expert_noise": float(parts[1])}
        start["router_stddev"] = float(parts[2]) if len(parts) == 3 else None
    except ValueError:
        raise ValueError(
            "a start is INIT:NOISE[:ROUTER] with INIT pretrained or random, "
            f"e.g. pretrained:0.1:0.5. Received: {text!r}"
        ) from None
    return start


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = _recipe_folder.parser(__doc__.split("\n\n")[0])
    parser.add_argument("--start", nargs="+", required=True, help="INIT:NOISE[:ROUTER]")
    args = parser.parse_args(argv)
    try:
        starts = [parse_start(text) for text in args.start]
    except ValueError as error:
        raise SystemExit(f"--start: {error}") from None
    config_path, sasrec_path = _recipe_folder.files(args.workdir)

    import keras

    from benchmarks.provenance import source_commit
    from keras_fame import datasets
    from keras_fame.inspection import expert_usage
    from keras_fame.training import config_from_record, set_seed, warm_start_fame

    config = config_from_record(json.loads(config_path.read_text()))
    data = datasets.load(args.dataset, data_dir=args.data_dir)
    sasrec = keras.saving.load_model(sasrec_path)
    rows = []
    for start in starts:
        set_seed(config.seed)  # the fresh weights (router, gate, FFN') as seeded
        stage = dataclasses.replace(
            config, expert_init=start["expert_init"], expert_noise=start["expert_noise"]
        ).finetune_config()
        fame = warm_start_fame(sasrec, stage)  # as the recipe's FAME stage starts
        if start["router_stddev"] is not None:
            _recipe_folder.redraw_router(fame, start["router_stddev"], config.seed)
        usage = expert_usage(fame, data, max_users=1000)
        row = {**start, **_recipe_folder.usage_record(usage)}
        print(json.dumps(row))
        rows.append(row)
    record = {
        "dataset": args.dataset,
        "source": str(sasrec_path),
        "num_experts": config.num_experts,
        "users": 1000,
        "starts": rows,
        "seed": config.seed,
    }
    return _recipe_folder.save(
        args.out, record, "expert_usage_at_start.py", argv, source_commit(ROOT)
    )


if __name__ == "__main__":
    main()
