"""RecBole's SASRec and ours side by side on Amazon Sports: time per epoch
and time to RecBole's best validation NDCG@20.

RecBole and torch (CPU) are installed into a virtualenv of their own
(`--venv`; created on first use: `torch==2.13.0`, then `recbole==1.2.1`
with NumPy < 2, pandas < 2.3, SciPy < 1.14),
never into the package's environment. The Sports file (one line per user:
`user item item ...`, in time order) is converted to RecBole's atomic format
(`<workdir>/sports/sports.inter`: `user_id:token item_id:token
timestamp:float`, the timestamp being the item's position in the history).

Both models are SASRec trained with the full-softmax cross-entropy and the
same settings: d=64, 2 blocks, 2 heads, FFN 256, GELU, dropout 0.5 (hidden
and attention), LayerNorm epsilon 1e-12, Adam 1e-3, batch 256, max_len 50,
one training row per target (RecBole's prefix augmentation; ours
`prefixes=True`), positions counted from each sequence's start (RecBole's;
ours `position_anchor="start"`). Both are evaluated on the leave-one-out
validation split by full ranking with the history NOT excluded (RecBole
does not exclude it for sequential models): NDCG@20 after every epoch.

Reported per library: the seconds of every training epoch and of every
validation pass, the validation NDCG@20 after each epoch, and for ours the
time (training plus validation, cumulated) until its validation NDCG@20
first reaches RecBole's best within the budget (`null` if it does not). Each
library runs at most `--max-epochs` epochs; RecBole took 254-293 s per
Sports epoch on a 2-core machine, so a short budget measures the epoch time
and the early curve only, not RecBole's converged quality.

Usage:
    python benchmarks/bench_recbole.py --data-dir ../shared/datasets/amazon \
        --max-epochs 1                          # a smoke run (~5 min RecBole)
    python benchmarks/bench_recbole.py --max-epochs 50 --output \
        benchmarks/results/recbole_sports.json  # hours: to RecBole's best
"""

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
DATA_FILES = {
    "sports": "Sports_and_Outdoors.txt",
    "beauty": "Beauty.txt",
    "toys": "Toys_and_Games.txt",
}
# RecBole 1.2.1 uses `np.float_` (gone in NumPy 2): NumPy, and the pandas
# and SciPy built for it, are held at their 1.x-era releases.
PACKAGES = (
    ("torch==2.13.0",),
    ("recbole==1.2.1", "numpy<2", "pandas<2.3", "scipy<1.14"),
)
SETTINGS = dict(
    hidden_dim=64,
    num_blocks=2,
    num_heads=2,
    intermediate_dim=256,
    dropout=0.5,
    layer_norm_epsilon=1e-12,
    learning_rate=1e-3,
    batch_size=256,
    max_len=50,
)

RECBOLE_RUNNER = textwrap.dedent(
    """
    import json, sys, time
    settings = json.loads(sys.argv[1])
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed
    s = settings
    config_dict = {
        "data_path": s["data_path"], "checkpoint_dir": s["checkpoint_dir"],
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": s["max_len"],
        "hidden_size": s["hidden_dim"], "inner_size": s["intermediate_dim"],
        "n_layers": s["num_blocks"], "n_heads": s["num_heads"],
        "hidden_dropout_prob": s["dropout"], "attn_dropout_prob": s["dropout"],
        "hidden_act": "gelu", "layer_norm_eps": s["layer_norm_epsilon"],
        "initializer_range": 0.02, "loss_type": "CE",
        "train_neg_sample_args": None,
        "learning_rate": s["learning_rate"],
        "train_batch_size": s["batch_size"], "eval_batch_size": 1024,
        "epochs": s["max_epochs"], "stopping_step": 10 ** 6,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO",
                      "mode": "full", "group_by": "user"},
        "metrics": ["NDCG", "Hit"], "topk": [20], "valid_metric": "NDCG@20",
        "device": "cpu", "use_gpu": False, "seed": s["seed"],
        "reproducibility": True, "show_progress": False, "worker": 0,
    }
    config = Config(model="SASRec", dataset=s["dataset"], config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, _ = data_preparation(config, dataset)
    model = SASRec(config, train_data.dataset).to(config["device"])
    trainer = Trainer(config, model)
    print(json.dumps({"event": "ready", "num_items": dataset.item_num - 1,
                      "train_rows": len(train_data.dataset)}), flush=True)
    for epoch in range(s["max_epochs"]):
        start = time.perf_counter()
        loss = trainer._train_epoch(train_data, epoch, show_progress=False)
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        score, result = trainer._valid_epoch(valid_data, show_progress=False)
        valid_seconds = time.perf_counter() - start
        print(json.dumps({"event": "epoch", "epoch": epoch,
                          "train_seconds": train_seconds,
                          "valid_seconds": valid_seconds,
                          "loss": float(loss),
                          "ndcg@20": float(result["ndcg@20"]),
                          "hit@20": float(result["hit@20"])}), flush=True)
    """
)


def ensure_venv(venv: Path) -> Path:
    """The virtualenv's python, creating it and installing RecBole if needed."""
    python = venv / "bin" / "python"
    marker = venv / ".keras-fame-recbole-ready"
    if marker.exists():
        return python
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    for packages in PACKAGES:
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *packages], check=True
        )
    marker.write_text(json.dumps(PACKAGES) + "\n")
    return python


def convert(data_file: Path, workdir: Path, name: str) -> Path:
    """Writes RecBole's atomic `.inter` file of a one-line-per-user file."""
    folder = workdir / name
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{name}.inter"
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    with open(data_file) as handle:
        for number, line in enumerate(handle, 1):
            fields = line.split()
            if len(fields) < 2:
                raise ValueError(
                    f"{data_file}, line {number}: expected a user id and at least "
                    f"one item id, got {line.strip()!r}"
                )
            user = fields[0]
            lines.extend(
                f"{user}\t{item}\t{position}"
                for position, item in enumerate(fields[1:])
            )
    out.write_text("\n".join(lines) + "\n")
    return out


def run_recbole(python: Path, workdir: Path, args) -> dict:
    """Trains RecBole's SASRec in the virtualenv; returns its per-epoch log."""
    settings = dict(
        SETTINGS,
        data_path=str(workdir),
        checkpoint_dir=str(workdir / "saved"),
        dataset=args.dataset,
        max_epochs=args.max_epochs,
        seed=args.seed,
    )
    start = time.perf_counter()
    process = subprocess.Popen(
        [str(python), "-c", RECBOLE_RUNNER, json.dumps(settings)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=workdir,
    )
    events = []
    for line in process.stdout:
        if line.startswith("{"):
            event = json.loads(line)
            event["elapsed_seconds"] = time.perf_counter() - start
            print("recbole", event, flush=True)
            events.append(event)
    if process.wait() != 0:
        raise RuntimeError(f"RecBole exited with status {process.returncode}")
    epochs = [e for e in events if e["event"] == "epoch"]
    ready = next(e for e in events if e["event"] == "ready")
    return {
        "version": "recbole==1.2.1, torch==2.13.0 (CPU)",
        "num_items": ready["num_items"],
        "train_rows": ready["train_rows"],
        "setup_seconds": ready["elapsed_seconds"],
        "epochs": epochs,
    }


def run_ours(args) -> dict:
    """Trains our SASRec with the same settings; validation after each epoch."""
    import keras
    import tensorflow as tf

    from keras_fame import datasets
    from keras_fame.evaluation import evaluate_ranking
    from keras_fame.models import SASRec

    keras.utils.set_random_seed(args.seed)
    data = datasets.load(args.dataset, data_dir=args.data_dir)
    s = SETTINGS
    model = SASRec(
        data.num_items,
        max_len=s["max_len"],
        hidden_dim=s["hidden_dim"],
        num_blocks=s["num_blocks"],
        num_heads=s["num_heads"],
        intermediate_dim=s["intermediate_dim"],
        dropout=s["dropout"],
        layer_norm_epsilon=s["layer_norm_epsilon"],
        position_anchor="start",
    )
    model.compile(optimizer=keras.optimizers.Adam(s["learning_rate"]))
    train = data.train_dataset(
        batch_size=s["batch_size"],
        max_len=s["max_len"],
        seed=args.seed,
        bucket=True,
        prefixes=True,
    )
    features, targets = data.eval_arrays("valid", s["max_len"])
    valid = tf.data.Dataset.from_tensor_slices((features, targets)).batch(1024)
    epochs = []
    for epoch in range(args.max_epochs):
        start = time.perf_counter()
        history = model.fit(train, epochs=1, verbose=0)
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        metrics = evaluate_ranking(model, valid, ks=(20,), exclude_history=False)
        valid_seconds = time.perf_counter() - start
        epochs.append(
            {
                "epoch": epoch,
                "train_seconds": train_seconds,
                "valid_seconds": valid_seconds,
                "loss": float(history.history["loss"][-1]),
                "ndcg@20": float(metrics["NDCG@20"]),
                "hit@20": float(metrics["HR@20"]),
            }
        )
        print("ours", epochs[-1], flush=True)
    return {
        "num_items": data.num_items,
        "train_rows": int(len(data.train_arrays(s["max_len"], prefixes=True)[0])),
        "epochs": epochs,
        "note": "the first epoch includes tracing the training step",
    }


def time_to(epochs: list, target: float):
    """Cumulated training+validation seconds until NDCG@20 >= target."""
    total = 0.0
    for epoch in epochs:
        total += epoch["train_seconds"] + epoch["valid_seconds"]
        if epoch["ndcg@20"] >= target:
            return {"seconds": total, "epoch": epoch["epoch"]}
    return None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="sports", choices=sorted(DATA_FILES))
    parser.add_argument(
        "--data-dir", default=str(ROOT.parent / "shared/datasets/amazon")
    )
    parser.add_argument(
        "--venv", default=str(Path.home() / ".cache/keras-fame/recbole-venv")
    )
    parser.add_argument("--workdir", default="/tmp/keras-fame-recbole")
    parser.add_argument("--max-epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--skip-recbole", action="store_true")
    parser.add_argument("--skip-ours", action="store_true")
    parser.add_argument(
        "--output", default=str(ROOT / "benchmarks/results/recbole_sports.json")
    )
    args = parser.parse_args(argv)
    if args.max_epochs < 1:
        parser.error("--max-epochs must be at least 1")
    data_file = Path(args.data_dir) / DATA_FILES[args.dataset]
    if not data_file.exists():
        parser.error(f"--data-dir: {data_file} does not exist")
    workdir = Path(args.workdir)
    report = {
        "benchmark": "recbole_side_by_side",
        "dataset": args.dataset,
        "settings": SETTINGS,
        "max_epochs": args.max_epochs,
        "seed": args.seed,
        "protocol": "leave-one-out validation, full ranking, history not excluded",
    }
    if not args.skip_recbole:
        python = ensure_venv(Path(args.venv))
        convert(data_file, workdir, args.dataset)
        report["recbole"] = run_recbole(python, workdir, args)
    if not args.skip_ours:
        report["ours"] = run_ours(args)
    if "recbole" in report and "ours" in report:
        best = max(e["ndcg@20"] for e in report["recbole"]["epochs"])
        report["recbole_best_valid_ndcg@20"] = best
        report["recbole_time_to_best"] = time_to(report["recbole"]["epochs"], best)
        report["ours_time_to_recbole_best"] = time_to(report["ours"]["epochs"], best)
    sys.path.insert(0, str(ROOT))
    from benchmarks.provenance import machine_description, source_commit

    report.update(
        machine=machine_description(),
        commit=source_commit(ROOT),
        command="python benchmarks/bench_recbole.py " + " ".join(argv),
        date=time.strftime("%Y-%m-%d %H:%M:%S"),
        note=(
            "Measured on a machine shared with other jobs (2 CPU cores): "
            "absolute times are noisy."
        ),
    )
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
