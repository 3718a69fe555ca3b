"""keras-fame in about a minute: SASRec -> FAME on the built-in synthetic data.

No download. Trains the paper's two-stage recipe on the planted-facet
synthetic dataset, prints full-ranking test metrics against a popularity
baseline, then shows what FAME learned: the head gate and expert routing of a
few users, how each head's own top-10 list lines up with the planted facets,
and a plot (`quickstart_facets.png`).

    python examples/quickstart.py [--epochs 8] [--workdir runs/quickstart]
"""

import argparse
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10, help="epochs per stage")
    parser.add_argument("--workdir", default=str(ROOT / "runs" / "quickstart"))
    parser.add_argument("--plot", default="quickstart_facets.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--keep", action="store_true", help="resume instead of starting over"
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    from keras_fame.datasets import make_synthetic
    from keras_fame.evaluation import metrics_from_ranks, rank_targets
    from keras_fame.inspection import expert_usage, head_facet_alignment
    from keras_fame.training import METRICS, TrainConfig, two_stage

    data, truth = make_synthetic(seed=args.seed)
    print(f"{data!r}: {data.describe()}")
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)
    config = TrainConfig(
        hidden_dim=32,
        num_heads=2,
        num_experts=4,
        max_len=30,
        dropout=0.2,
        batch_size=64,
        learning_rate=2e-3,
        # One rate and one dropout for both stages, as this demo was tuned;
        # the Amazon recipe fine-tunes FAME at the defaults, Adam 1e-4 and
        # dropout 0.3.
        finetune_learning_rate=None,
        finetune_dropout=None,
        expert_init="pretrained",
        pretrain_epochs=args.epochs,
        finetune_epochs=args.epochs,
        patience=3,
        seed=args.seed,
        # One row per user: the synthetic histories are long (one row per
        # target would multiply the steps), and this demo should take about a
        # minute. The Amazon recipe keeps the default, prefix rows.
        prefixes=False,
    )
    runs = two_stage(data, config, args.workdir, verbose=2)
    fame = runs["fame"][0]

    # Popularity baseline, same protocol (history excluded, pessimistic ties).
    _, train_targets = data.train_arrays(max_len=config.max_len)
    counts = np.bincount(train_targets.ravel(), minlength=data.num_items + 1)
    features, test_targets = data.eval_arrays("test", max_len=config.max_len)
    scores = np.tile(counts.astype("float32"), (len(test_targets), 1))
    ranks = rank_targets(scores, test_targets, features["seen_ids"])
    popularity = metrics_from_ranks(np.asarray(ranks))

    print("\nTest metrics (full ranking)")
    print(f"{'':12s}" + "".join(f"{m:>9s}" for m in METRICS))
    print(f"{'popularity':12s}" + "".join(f"{popularity[m]:9.4f}" for m in METRICS))
    for name in ("sasrec", "fame"):
        test = runs[name][1]["test"]
        print(f"{name:12s}" + "".join(f"{test[m]:9.4f}" for m in METRICS))

    histories = features["item_ids"][:4]
    report = fame.explain(histories, k=5)
    print("\nWhat FAME does for 4 users (last position):")
    for user in range(len(histories)):
        dominant = truth.facet_names[truth.user_dominant_facet[user]]
        print(f"user {user + 1} (planted dominant facet: {dominant})")
        print(f"  head gate         {np.round(report['gate'][user], 3)}")
        for head in range(fame.num_heads):
            routing = np.round(report["routing"][user, head], 3)
            print(
                f"  head {head}: top-5 {report['head_top_ids'][user, head].tolist()}"
                f"  experts {routing}"
            )
        print(f"  final top-5       {report['top_ids'][user].tolist()}")

    alignment = head_facet_alignment(
        fame,
        data,
        attributes=truth.item_facets[:, :],
        facet_names=truth.facet_names,
        k=10,
    )
    print("\nHow each head's top-10 list shares the last item's facet value")
    print("(chance level in brackets):")
    for head, row in enumerate(alignment["agreement"]):
        cells = "  ".join(
            f"{name}: {value:.2f} ({base:.2f})"
            for name, value, base in zip(
                truth.facet_names, row, alignment["chance"], strict=True
            )
        )
        print(f"  head {head}: {cells}")

    usage = expert_usage(fame, data)
    print("\nHow each head uses its experts (entropy 1: weighed evenly; similarity 1:")
    print("the experts compute the same thing):")
    for head in range(fame.num_heads):
        print(
            f"  head {head}: routing entropy {usage['routing_entropy'][head]:.3f}, "
            f"expert similarity {usage['expert_similarity'][head]:.3f}"
        )

    facets = fame.facet_weights(features["item_ids"])
    try:
        import matplotlib  # noqa: F401
    except ImportError:  # an optional dependency: the `plots` extra
        print(
            "\nno plot: it needs matplotlib, `pip install 'keras-fame[plots]'` "
            "(or `pip install -e '.[plots]'` in a checkout)"
        )
    else:
        _plot(facets, truth, args.plot)
        print(f"\nplot: {args.plot}")
    return runs


def _plot(facets, truth, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gate, routing = facets["gate"], facets["routing"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for f, name in enumerate(truth.facet_names):
        users = truth.user_dominant_facet[: len(gate)] == f
        axes[0].hist(
            gate[users, 0], bins=30, alpha=0.6, label=f"dominant facet: {name}"
        )
    axes[0].set_xlabel("gate weight of head 0")
    axes[0].set_ylabel("users")
    axes[0].set_title("Head gate (Eq. 10)")
    axes[0].legend()
    heads, experts = routing.shape[1:]
    columns = [routing[:, h, n] for h in range(heads) for n in range(experts)]
    axes[1].boxplot(columns, showfliers=False)
    axes[1].set_xticks(
        range(1, heads * experts + 1),
        [f"h{h}e{n}" for h in range(heads) for n in range(experts)],
        rotation=90,
    )
    axes[1].axhline(1 / experts, color="gray", linestyle=":", label="uniform")
    axes[1].set_ylabel("routing weight")
    axes[1].set_title("Expert routing per user (Eq. 16)")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
