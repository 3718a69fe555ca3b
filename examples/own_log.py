"""From your own log with string item ids to served recommendations in those ids.

The example writes a small shop log itself (no download): users browse SKUs
of a few departments, one department at a time. It then

1. reads the log (`keras_fame.datasets.from_interactions`): de-duplication,
   5-core filter, SKUs mapped to model ids in a `Vocabulary`;
2. trains the two-stage recipe (SASRec, then FAME) in a work folder, which
   keeps the vocabulary (rerun to resume; a finished folder just reloads);
3. recommends in SKUs from Python (`fame.recommend(["sku-a sku-b", ...])`);
4. exports the model for TF Serving and calls its `serving_default`
   signature the way a client would: a string of SKUs in, SKUs out.

The same path on the command line:

    keras-fame train shop.csv --user-col user --item-col sku --time-col ts \\
        --workdir runs/shop
    keras-fame recommend runs/shop --history "sku-0003 sku-0007" -k 5
    keras-fame export runs/shop serving --k 5

Run:  python examples/own_log.py [--workdir DIR] [--epochs N]
"""

import argparse
import csv
import os
import tempfile
from pathlib import Path


def write_shop_log(path: Path, num_users: int = 400, seed: int = 0) -> None:
    """A log of `user,sku,ts` rows: each user browses one department at a time."""
    import numpy as np

    rng = np.random.default_rng(seed)
    departments = [[f"sku-{d * 25 + i:04d}" for i in range(25)] for d in range(6)]
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["user", "sku", "ts"])
        for user in range(num_users):
            time = 1_700_000_000 + user
            for _ in range(rng.integers(2, 4)):  # a few visits
                department = departments[rng.integers(len(departments))]
                for sku in rng.choice(
                    department, size=rng.integers(3, 7), replace=False
                ):
                    time += int(rng.integers(60, 3600))
                    writer.writerow([f"user-{user}", sku, time])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=None, help="work folder [a temporary one]")
    parser.add_argument("--epochs", type=int, default=8, help="epochs per stage [8]")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    import tensorflow as tf

    from keras_fame import datasets
    from keras_fame.export import export_for_serving
    from keras_fame.training import TrainConfig, two_stage

    root = Path(args.workdir or tempfile.mkdtemp(prefix="keras-fame-shop-"))
    root.mkdir(parents=True, exist_ok=True)
    log = root / "shop.csv"
    write_shop_log(log)

    # 1. Read the log: your ids become model ids 1..N, the map is kept.
    data = datasets.from_interactions(
        log, user_col="user", item_col="sku", time_col="ts"
    )
    print(data)
    print(data.report)

    # 2. Train (resumable: rerun with the same --workdir).
    config = TrainConfig(
        hidden_dim=32,
        num_blocks=1,
        max_len=20,
        batch_size=128,
        pretrain_epochs=args.epochs,
        finetune_epochs=args.epochs,
        patience=args.epochs,
    )
    runs = two_stage(data, config, root / "run", verbose=0)
    fame, results = runs["fame"]
    print(f"FAME test NDCG@10 {results['test']['NDCG@10']:.4f}")

    # 3. Recommend in SKUs (unknown SKUs are dropped).
    history = ["sku-0003 sku-0007 sku-0011", "sku-0130 sku-0999-unknown"]
    ids, scores = fame.recommend(history, k=5)
    for row, items in zip(history, ids, strict=True):
        print(f"{row!r:40s} -> {' '.join(items)}")

    # 4. Serve: TF Serving's layout, a string of SKUs per user in, SKUs out.
    path = export_for_serving(fame, root / "serving", k=5, overwrite=True, version=1)
    served = tf.saved_model.load(path).signatures["serving_default"]
    out = served(history=tf.constant(history))
    for row, items, unknown in zip(
        history, out["item_ids"].numpy(), out["unknown"].numpy(), strict=True
    ):
        names = " ".join(v.decode() for v in items)
        print(f"served {row!r:33s} -> {names}  ({unknown} unknown)")
    print(
        f"\nexported to {path}; serve it with\n"
        f"  docker run -p 8501:8501 -v {root / 'serving' / 'fame'}:/models/fame "
        "-e MODEL_NAME=fame tensorflow/serving\n"
        '  curl -d \'{"instances": ["sku-0003 sku-0007"]}\' '
        "localhost:8501/v1/models/fame:predict"
    )
    return fame, out


if __name__ == "__main__":
    main()
