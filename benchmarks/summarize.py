"""Prints the committed results as Markdown tables (research/REPORT.md).

python benchmarks/summarize.py            # all results under benchmarks/results
python benchmarks/summarize.py DIR        # Table 2 of DIR (e.g. benchmarks/results/paper-recipe)

Runs of the package recipe with other seeds live in `results/seeds/seed<N>/`
(the same command with `--seed N --results-dir benchmarks/results/seeds/seed<N>`);
the seed table puts them next to the canonical seed-0 records. The ablation
records (`research/results/experiments/`) and the recipe's records from before
FAME's fine-tuning dropout became 0.3 (`research/results/earlier/`) belong to
the research report (`research/REPORT.md`).
"""

import itertools
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
METRICS = ("HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20")


def recipe_records(folder: Path):
    """`(dataset, model, record)` of each `<dataset>-<model>.json` in `folder`,
    in Table 2's order."""
    for dataset in ("beauty", "sports", "toys"):
        for model in ("sasrec", "fame"):
            path = folder / f"{dataset}-{model}.json"
            if path.exists():
                yield dataset, model, json.loads(path.read_text())


def table2(results_dir: Path = RESULTS) -> str:
    rows = [
        "| dataset | model | "
        + " | ".join(METRICS)
        + " | best epoch | s/epoch | min to best |",
        "|---|---|" + "---|" * len(METRICS) + "---|---|---|",
    ]
    for dataset, model, record in recipe_records(results_dir):
        ours = " | ".join(f"{record['test'][m]:.4f}" for m in METRICS)
        paper = " | ".join(f"{record['paper_test'][m]:.4f}" for m in METRICS)
        to_best = record["seconds_to_best"] / 60
        rows.append(
            f"| {dataset} | {model} (ours) | {ours} | {record['best_epoch']} | "
            f"{record['epoch_seconds']:.0f} | {to_best:.0f} |"
        )
        rows.append(f"| {dataset} | {model} (paper) | {paper} | | | |")
    return "\n".join(rows)


def seed_records(results_dir: Path = RESULTS) -> dict:
    """`{(dataset, model): [record, ...]}`: the canonical record and the same
    recipe run with other seeds (`results_dir/seeds/seed<N>/`), by seed."""
    found = {}
    paths = [results_dir, *sorted((results_dir / "seeds").glob("seed*"))]
    for folder in paths:
        for dataset, model, record in recipe_records(folder):
            found.setdefault((dataset, model), []).append(record)
    for records in found.values():
        records.sort(key=lambda r: r["seed"])
    return found


def seed_table(results_dir: Path = RESULTS) -> str:
    """Test metrics over seeds: mean, and min-max, where more than one seed ran."""
    rows = [
        "| dataset | model | seeds | " + " | ".join(METRICS) + " | val NDCG@20 |",
        "|---|---|---|" + "---|" * (len(METRICS) + 1),
    ]
    for (dataset, model), records in sorted(seed_records(results_dir).items()):
        if len(records) < 2:
            continue
        cells = []
        for split, metric in [*(("test", m) for m in METRICS), ("valid", "NDCG@20")]:
            values = [r[split][metric] for r in records]
            mean = sum(values) / len(values)
            cells.append(f"{mean:.4f} ({min(values):.4f}-{max(values):.4f})")
        seeds = ",".join(str(r["seed"]) for r in records)
        rows.append(f"| {dataset} | {model} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


# FAME's test metrics over seeds, against the paper's row: which records make
# each row, by FAME's fine-tuning dropout. "0.3 (default)" is the package
# recipe (the Table 2 and seed folders). "0.5 (paper)" keeps SASRec's rates
# (`--finetune-dropout none`), the default before 0.3: runs of the current code
# (the last block runs the last position only), each fine-tuned from its
# seed's SASRec stage of the default's row or from an earlier run of that
# stage which ended at the same epoch and within 5e-5 (research/REPORT.md).
# Paths are relative to the checkout's root.
VERSUS_PAPER = (
    (
        "beauty",
        "0.3 (default)",
        (
            "benchmarks/results/beauty-fame.json",
            "benchmarks/results/seeds/seed1/beauty-fame.json",
            "benchmarks/results/seeds/seed2/beauty-fame.json",
        ),
    ),
    (
        "beauty",
        "0.5 (paper)",
        (
            "research/results/experiments/beauty-fame-last-position.json",
            "research/results/earlier/seeds/seed1/beauty-fame.json",
            "research/results/earlier/seeds/seed2/beauty-fame.json",
        ),
    ),
    (
        "sports",
        "0.3 (default)",
        (
            "benchmarks/results/sports-fame.json",
            "benchmarks/results/seeds/seed1/sports-fame.json",
            "benchmarks/results/seeds/seed2/sports-fame.json",
        ),
    ),
    (
        "sports",
        "0.5 (paper)",
        (
            "research/results/experiments/sports-fame-finetune-dropout-none.json",
            "research/results/earlier/seeds/seed1/sports-fame.json",
            "research/results/earlier/seeds/seed2/sports-fame.json",
        ),
    ),
    (
        "toys",
        "0.3 (default)",
        (
            "benchmarks/results/toys-fame.json",
            "benchmarks/results/seeds/seed1/toys-fame.json",
            "benchmarks/results/seeds/seed2/toys-fame.json",
        ),
    ),
    (
        "toys",
        "0.5 (paper)",
        (
            "research/results/experiments/toys-fame-last-position.json",
            "research/results/experiments/toys-fame-seed1-last-position.json",
            "research/results/experiments/toys-fame-seed2-last-position.json",
        ),
    ),
)


def versus_paper(root: Path = ROOT, groups=VERSUS_PAPER) -> str:
    """FAME's mean test metrics over seeds next to the paper's row, with the
    lowest and highest ratio of the six; `groups` name records by their path
    under `root`."""
    rows = [
        "| dataset | fine-tuning dropout | seeds | "
        + " | ".join(METRICS)
        + " | % of paper |",
        "|---|---|---|" + "---|" * (len(METRICS) + 1),
    ]

    def cells(values):
        return " | ".join(f"{values[m]:.4f}".lstrip("0") for m in METRICS)

    for dataset, dataset_groups in itertools.groupby(groups, key=lambda g: g[0]):
        for _, label, names in dataset_groups:
            records = [json.loads((root / n).read_text()) for n in names]
            paper = records[0]["paper_test"]
            means = {
                m: sum(r["test"][m] for r in records) / len(records) for m in METRICS
            }
            ratios = [100 * means[m] / paper[m] for m in METRICS]
            seeds = ", ".join(str(seed) for seed in sorted(r["seed"] for r in records))
            rows.append(
                f"| {dataset} | {label} | {seeds} | {cells(means)} | "
                f"{min(ratios):.1f}-{max(ratios):.1f} |"
            )
        rows.append(f"| {dataset} | paper | | {cells(paper)} | |")
    return "\n".join(rows)


def epoch_time(results_dir: Path = RESULTS, name: str = "epoch_time.json") -> str:
    path = results_dir / name
    if not path.exists():
        return ""
    record = json.loads(path.read_text())
    rows = [
        "| model | epoch (s) | sequences/s | GFLOP/s | share of matmul peak | x matmul-bound |",
        "|---|---|---|---|---|---|",
    ]
    for model, r in record["models"].items():
        rows.append(
            f"| {model} | {r['epoch_seconds']:.1f} | {r['sequences_per_second']:.0f} | "
            f"{r['achieved_gflops']:.1f} | {r['fraction_of_peak']:.0%} | "
            f"{r['matmul_bound_ratio']:.2f} |"
        )
    rows.append("")
    rows.append(
        f"{record['rows']} rows; "
        f"FAME / SASRec epoch time: {record['fame_over_sasrec']:.2f}x; matmul peak "
        f"{record['matmul_peak_gflops']:.0f} GFLOP/s; `{record['command']}` at "
        f"{record['commit'][:12]} on {record['machine']}."
    )
    return "\n".join(rows)


def main() -> None:
    if len(sys.argv) > 1:
        print(table2(Path(sys.argv[1])))
        return
    print("Package recipe (benchmarks/results):\n")
    print(table2(RESULTS))
    print("\nPaper recipe (benchmarks/results/paper-recipe):\n")
    print(table2(RESULTS / "paper-recipe"))
    print("\nSeeds (mean, min-max; benchmarks/results and results/seeds/):\n")
    print(seed_table(RESULTS))
    print("\nFAME over seeds against the paper's row:\n")
    print(versus_paper(ROOT))
    print("\nEpoch time, one row per user (benchmarks/results/epoch_time.json):\n")
    print(epoch_time(RESULTS))
    print(
        "\nEpoch time, one row per target "
        "(benchmarks/results/epoch_time_prefixes.json):\n"
    )
    print(epoch_time(RESULTS, "epoch_time_prefixes.json"))


if __name__ == "__main__":
    main()
