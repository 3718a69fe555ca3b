"""`research/scripts/bench_test_by_epoch.py`: FAME's test metrics at every epoch."""

import json
import shutil
from pathlib import Path

import pytest

import keras_fame.datasets
from keras_fame.training import METRICS, config_from_record, train_fame
from tests.reference import load_script, recipe_folder, small_recipe_data

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_test_by_epoch.py"


@pytest.fixture(scope="module")
def bench():
    return load_script(SCRIPT)


@pytest.fixture(scope="module")
def data():
    return small_recipe_data()


@pytest.fixture()
def workdir(data, tmp_path, monkeypatch):
    """A recipe work folder with a finished SASRec stage (as the recipe leaves it)."""
    folder = tmp_path / "work"
    folder.mkdir()
    recipe_folder(
        data,
        folder,
        dropout=0.1,
        pretrain_epochs=2,
        finetune_epochs=3,
        patience=5,
        seed=3,
    )
    monkeypatch.setattr(keras_fame.datasets, "load", lambda *args, **kwargs: data)
    return folder


def test_reruns_the_recipes_fame_stage_and_ranks_test_each_epoch(
    bench, data, workdir, tmp_path
):
    import keras

    # The recipe's own FAME stage, in a copy of the folder.
    control = tmp_path / "control"
    shutil.copytree(workdir, control)
    config = config_from_record(json.loads((control / "config.json").read_text()))
    sasrec = keras.saving.load_model(control / "sasrec" / "model.keras")
    _, fame = train_fame(data, config, control, sasrec, verbose=0)

    out = tmp_path / "record.json"
    args = ["--dataset", "synthetic", "--workdir", str(workdir), "--out", str(out)]
    record = bench.main(args)
    assert json.loads(out.read_text()) == record
    # The extra test ranking changes nothing: same selected epoch and metrics.
    assert record["best_epoch"] == fame["best_epoch"]
    assert record["epochs_run"] == fame["epochs_run"] == 3
    for split in ("valid", "test"):
        for metric in METRICS:
            assert record[split][metric] == pytest.approx(
                fame[split][metric], abs=1e-6
            ), (split, metric)
    # One row per epoch; the selected epoch's row holds the final metrics.
    assert [row["epoch"] for row in record["epochs"]] == [1, 2, 3]
    selected = record["epochs"][record["best_epoch"] - 1]
    for split in ("valid", "test"):
        for metric in METRICS:
            assert selected[split][metric] == pytest.approx(
                record[split][metric], abs=1e-6
            ), (split, metric)
    best_ndcg = max(row["valid"]["NDCG@20"] for row in record["epochs"])
    assert selected["valid"]["NDCG@20"] == best_ndcg
    # The best test epoch of each metric is the maximum over the rows.
    for metric in METRICS:
        values = [row["test"][metric] for row in record["epochs"]]
        best = record["best_test"][metric]
        assert best["value"] == max(values)
        assert best["epoch"] == values.index(max(values)) + 1
        assert "percent_of_paper" not in best  # no paper row for synthetic
    assert record["paper_test"] is None and record["patience"] == 5
    # A rerun reuses the finished stage; another patience is refused.
    assert bench.main(args)["epochs"] == record["epochs"]
    with pytest.raises(SystemExit, match=r"^--patience 2: .*differs in \['patience'\]"):
        bench.main([*args, "--patience", "2"])
    with pytest.raises(SystemExit, match="--patience must be a non-negative"):
        bench.main([*args, "--patience", "-1"])


def test_by_epoch_by_hand(bench):
    history = [
        {"epoch": 0, "HR@5": 0.1, "NDCG@20": 0.2, "users": 9, "seconds": 1.0},
        {"epoch": 1, "HR@5": 0.3, "NDCG@20": 0.1, "users": 9, "seconds": 1.0},
    ]
    tests = [
        {"epoch": 0, "HR@5": 0.25, "NDCG@20": 0.05, "users": 9},
        {"epoch": 1, "HR@5": 0.25, "NDCG@20": 0.04, "users": 9},
    ]
    paper = {"HR@5": 0.5, "NDCG@20": 0.1}
    out = bench.by_epoch(history, tests, paper, ("HR@5", "NDCG@20"))
    assert out["epochs"] == [
        {"epoch": 1, "valid": {"HR@5": 0.1, "NDCG@20": 0.2},
         "test": {"HR@5": 0.25, "NDCG@20": 0.05}},
        {"epoch": 2, "valid": {"HR@5": 0.3, "NDCG@20": 0.1},
         "test": {"HR@5": 0.25, "NDCG@20": 0.04}},
    ]  # fmt: skip
    # A tie goes to the earlier epoch.
    assert out["best_test"] == {
        "HR@5": {"epoch": 1, "value": 0.25, "percent_of_paper": 50.0},
        "NDCG@20": {"epoch": 1, "value": 0.05, "percent_of_paper": 50.0},
    }
    with pytest.raises(ValueError, match=r"validation epochs \[0, 1\] and test"):
        bench.by_epoch(history, tests[:1], paper, ("HR@5",))


def test_paper_row(bench):
    row = bench._paper_row("toys")
    assert row == {
        "HR@5": 0.0820, "HR@10": 0.1065, "HR@20": 0.1409,
        "NDCG@5": 0.0603, "NDCG@10": 0.0681, "NDCG@20": 0.0759,
    }  # fmt: skip
    assert bench._paper_row("synthetic") is None


def test_resumed_epochs_replace_their_rows(bench, tmp_path):
    import numpy as np
    from keras import ops

    class Popularity:  # ranks item 1 first, then 2, ...
        num_items = 4

        def score(self, item_ids):
            pop = ops.convert_to_tensor([-1e9, 4.0, 3.0, 2.0, 1.0])
            return ops.zeros_like(item_ids[:, :1], "float32") + pop

    data = [({"item_ids": np.array([[0, 3], [0, 4]])}, np.array([1, 2]))]
    path = tmp_path / "test_by_epoch.json"
    # An interrupted run had logged epochs 0-2; the resumed one reruns epoch 1.
    old = [{"epoch": e, "HR@5": -1.0} for e in range(3)]
    path.write_text(json.dumps(old))
    callback = bench.test_each_epoch(data, path)
    callback.set_model(Popularity())
    callback.on_epoch_end(1)
    rows = json.loads(path.read_text())
    assert [row["epoch"] for row in rows] == [0, 1]
    assert rows[0] == old[0]
    # The targets rank 1st and 2nd (the histories, items 3 and 4, score lower).
    assert rows[1]["HR@5"] == 1.0 and rows[1]["HR@10"] == 1.0
    assert rows[1]["MRR"] == pytest.approx((1 + 1 / 2) / 2)


def test_refuses_weight_averaging(bench, tmp_path):
    from keras_fame.training import TrainConfig, config_record

    record = config_record(TrainConfig(ema_momentum=0.99))
    (tmp_path / "config.json").write_text(json.dumps(record))
    (tmp_path / "sasrec").mkdir()
    (tmp_path / "sasrec" / "model.keras").write_text("")
    with pytest.raises(SystemExit, match="ema_momentum=0.99; this benchmark"):
        bench.main(
            ["--dataset", "toys", "--workdir", str(tmp_path), "--out", "x.json"]
        )  # fmt: skip


def test_missing_folder(bench, tmp_path):
    with pytest.raises(SystemExit, match="config.json does not exist"):
        bench.main(
            ["--dataset", "toys", "--workdir", str(tmp_path), "--out", "x.json"]
        )  # fmt: skip
