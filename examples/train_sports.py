"""Reproduce the paper's Table 2 row: SASRec -> FAME on an Amazon dataset.

Runs the two-stage recipe (pretrain SASRec with early stopping on validation
NDCG@20, warm-start FAME with `FAME.from_sasrec`, fine-tune) with the paper's
settings (Adam 1e-3, batch 256, d=64, max_len 50) and the package's defaults
(one training row per target, FAME warm-started where SASRec ended and
fine-tuned at Adam 1e-4 with dropout 0.3), and prints the test metrics next
to the paper's Table 2. Results go to `<workdir>/results/<dataset>-<model>.json`
(`--results-dir benchmarks/results` replaces the committed records, as
`benchmarks/reproduce_table2.sh` does). The paper's exact recipe: `--no-prefixes --expert-init
random --facet-init random --finetune-learning-rate 0.001 --finetune-dropout
none --results-dir benchmarks/results/paper-recipe --workdir
runs/paper-recipe/<dataset>`; those records keep the attention residual in
FAME's block, and `--no-attention-residual` builds Eq. 7 as written.

    python examples/train_sports.py                       # Sports, download
    python examples/train_sports.py --data-dir ../shared/datasets/amazon
    python examples/train_sports.py --dataset beauty --num-heads 4
    python examples/train_sports.py --smoke               # a 1-minute check

Interrupt it at any time and rerun the same command: it resumes from its
work directory (`--workdir`, default `runs/<dataset>`). TensorBoard logs are
in `<workdir>/<model>/logs`.
"""

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `benchmarks.provenance`

PAPER_TABLE_2 = {  # test, full ranking (FAME paper, Table 2)
    "beauty": {
        "sasrec": [0.0508, 0.0761, 0.1057, 0.0318, 0.0400, 0.0474],
        "fame": [0.0710, 0.0978, 0.1345, 0.0508, 0.0593, 0.0687],
    },
    "sports": {
        "sasrec": [0.0266, 0.0412, 0.0618, 0.0158, 0.0205, 0.0256],
        "fame": [0.0400, 0.0580, 0.0820, 0.0277, 0.0337, 0.0402],
    },
    "toys": {
        "sasrec": [0.0489, 0.0676, 0.0908, 0.0329, 0.0389, 0.0448],
        "fame": [0.0820, 0.1065, 0.1409, 0.0603, 0.0681, 0.0759],
    },
}


def parse_args(argv):
    from keras_fame.config import (
        EXPERIMENTAL_FIELDS,
        TrainConfig,
        config_choices,
        config_help,
    )

    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--dataset",
        default="sports",
        choices=sorted(PAPER_TABLE_2),
        help="the Amazon dataset (the paper's Table 2 row to compare with)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="local folder with the published files (else $KERAS_FAME_DATA_DIR, "
        "else download into the Keras cache)",
    )
    parser.add_argument(
        "--workdir",
        default=None,
        help="work folder: checkpoints, TensorBoard logs, what a rerun resumes "
        "from; None: runs/<dataset>",
    )
    parser.add_argument(
        "--results-dir",
        default=None,
        help="where <dataset>-sasrec.json and <dataset>-fame.json are written; "
        "None: <workdir>/results (benchmarks/results holds the committed "
        "records: pass it to replace them, as reproduce_table2.sh does)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny, fast run (no results written)"
    )
    # One flag per TrainConfig field, documented by its docstring.
    docs, choices = config_help(), config_choices()
    docs = {name: text.replace("%", "%%") for name, text in docs.items()}  # argparse
    main_group = parser.add_argument_group("training (keras_fame.config.TrainConfig)")
    experimental = parser.add_argument_group(
        "experimental training options (may be removed in a later version)"
    )
    for field in dataclasses.fields(TrainConfig):
        group = experimental if field.name in EXPERIMENTAL_FIELDS else main_group
        value = getattr(defaults, field.name)
        flag = "--" + field.name.replace("_", "-")
        if field.type == "bool":
            group.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=value,
                help=docs[field.name],
            )
            continue
        kind = {"int": int, "float": float, "str": str}[field.type.split(" | ")[0]]
        if field.type.endswith(" | None"):  # `--finetune-learning-rate none`
            kind = _or_none(kind)
        group.add_argument(
            flag,
            type=kind,
            default=value,
            choices=choices.get(field.name),
            help=docs[field.name],
        )
    args = parser.parse_args(argv)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    try:  # checks every field, so a typo fails now, not after pretraining
        args.config = TrainConfig(
            **{k: v for k, v in vars(args).items() if k in fields}
        )
    except ValueError as error:
        parser.error(str(error))
    return args


def _or_none(kind):
    def parse(text):
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = f"{kind.__name__} or none"  # argparse's error names it
    return parse


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    from benchmarks.provenance import machine_description, source_commit
    from keras_fame import datasets
    from keras_fame.training import METRICS, two_stage

    # The code this run uses (read now, not after training).
    commit = source_commit(ROOT)

    config = args.config
    data = datasets.load(args.dataset, data_dir=args.data_dir)
    workdir = args.workdir or str(ROOT / "runs" / args.dataset)
    if args.smoke:
        data = datasets.SequenceDataset(
            data.sequences[:2000],
            num_items=data.num_items,
            item_attributes=data.item_attributes,
            name=f"{args.dataset}-smoke",
        )
        config = dataclasses.replace(
            config, pretrain_epochs=2, finetune_epochs=2, patience=1, backup_every=50
        )
        workdir = args.workdir or str(ROOT / "runs" / f"{args.dataset}-smoke")
    print(f"{data!r}\n{json.dumps(data.describe())}")
    print(f"config: {json.dumps(dataclasses.asdict(config))}")

    start = time.time()
    runs = two_stage(data, config, workdir)

    paper = PAPER_TABLE_2[args.dataset]
    header = f"{'':16s}" + "".join(f"{m:>9s}" for m in METRICS)
    print(f"\nTest metrics on {args.dataset} (full ranking, history excluded)")
    print(header)
    for model in ("sasrec", "fame"):
        test = runs[model][1]["test"]
        print(f"{model + ' (ours)':16s}" + "".join(f"{test[m]:9.4f}" for m in METRICS))
        print(f"{model + ' (paper)':16s}" + "".join(f"{v:9.4f}" for v in paper[model]))
    print(
        f"total time: {(time.time() - start) / 60:.1f} min (resumed runs count only this call)"
    )

    facets = facet_summary(runs["fame"][0], data)
    experts = expert_summary(runs["fame"][0], data)
    if args.smoke:
        return runs
    results_dir = Path(args.results_dir or Path(workdir) / "results")
    results_dir.mkdir(parents=True, exist_ok=True)
    for model in ("sasrec", "fame"):
        results = runs[model][1]
        record = {
            "dataset": args.dataset,
            "model": model,
            "test": {m: results["test"][m] for m in (*METRICS, "MRR")},
            "valid": {m: results["valid"][m] for m in (*METRICS, "MRR")},
            "paper_test": dict(zip(METRICS, paper[model], strict=True)),
            "best_epoch": results["best_epoch"],
            "epochs_run": results["epochs_run"],
            "epoch_seconds": results["epoch_seconds"],
            "seconds_to_best": results["seconds_to_best"],
            "config": dataclasses.asdict(config),
            "seed": config.seed,
            "commit": commit,
            "machine": machine_description(),
            "command": "python examples/train_sports.py " + " ".join(argv),
            "date": time.strftime("%Y-%m-%d"),
        }
        if model == "fame" and facets is not None:
            record["facet_alignment"] = facets
        if model == "fame":
            record["expert_usage"] = experts
        path = results_dir / f"{args.dataset}-{model}.json"
        path.write_text(json.dumps(record, indent=2) + "\n")
        print(f"saved {path}")
    return runs


def facet_summary(fame, data, k=10, max_users=1000):
    """Prints and returns how each head's own top-k shares attributes with the last item.

    Returns None when the dataset ships no item attributes, else a JSON-ready
    dict (stored in the FAME record as `facet_alignment`): `head_agreement`
    and `mean_gate` per head, `final` (the gated list), `chance`, `users`, `k`.
    """
    if not data.item_attributes:
        return None
    from keras_fame.inspection import head_facet_alignment

    out = head_facet_alignment(
        fame,
        data,
        data.item_attributes,
        facet_names=["attributes"],
        k=k,
        max_users=max_users,
    )
    print(f"\nShare of each head's top-{k} that shares an attribute with the last item")
    print(f"(chance {out['chance'][0]:.3f}; gated final list {out['final'][0]:.3f}):")
    for head, (value, gate) in enumerate(
        zip(out["agreement"][:, 0], out["mean_gate"], strict=True)
    ):
        print(f"  head {head}: {value:.3f}  (mean gate {gate:.3f})")
    return {
        "head_agreement": [float(v) for v in out["agreement"][:, 0]],
        "mean_gate": [float(v) for v in out["mean_gate"]],
        "final": float(out["final"][0]),
        "chance": float(out["chance"][0]),
        "users": int(out["users"]),
        "k": k,
    }


def expert_summary(fame, data, max_users=1000):
    """Prints and returns how FAME's router uses its experts (last position).

    Returns a JSON-ready dict (stored in the FAME record as `expert_usage`):
    per head `mean_routing` (per expert), `routing_entropy` (1: every expert
    weighed evenly) and `expert_similarity` (mean cosine between the
    experts' outputs; 1: they compute the same thing), and `users`.
    """
    from keras_fame.inspection import expert_usage

    out = expert_usage(fame, data, max_users=max_users)
    print(
        "\nExpert routing at the last position (entropy 1: even; similarity 1: alike):"
    )
    for head in range(fame.num_heads):
        weights = " ".join(f"{w:.3f}" for w in out["mean_routing"][head])
        print(
            f"  head {head}: mean weights {weights}; entropy "
            f"{out['routing_entropy'][head]:.3f}; output similarity "
            f"{out['expert_similarity'][head]:.4f}"
        )
    return {
        "mean_routing": out["mean_routing"].round(6).tolist(),
        "routing_entropy": out["routing_entropy"].round(6).tolist(),
        "expert_similarity": out["expert_similarity"].round(6).tolist(),
        "users": int(out["users"]),
    }


if __name__ == "__main__":
    main()
