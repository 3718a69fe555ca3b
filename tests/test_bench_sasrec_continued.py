"""`benchmarks/bench_sasrec_continued.py`: the control for FAME's fine-tuning."""

import importlib.util
import json
from pathlib import Path

import pytest

import keras_fame.datasets
from keras_fame.training import TrainConfig, config_record, train_sasrec

SCRIPT = (
    Path(__file__).resolve().parents[1] / "benchmarks" / "bench_sasrec_continued.py"
)


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_sasrec_continued", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data():
    return keras_fame.datasets.load(
        "synthetic", num_users=150, num_items=60, min_length=8, max_length=16, seed=0
    )


@pytest.fixture()
def workdir(data, tmp_path, monkeypatch):
    """A recipe work folder with a finished SASRec stage (as the recipe leaves it)."""
    config = TrainConfig(
        hidden_dim=16,
        num_heads=2,
        max_len=16,
        dropout=0.1,
        batch_size=32,
        pretrain_epochs=2,
        finetune_epochs=2,
        patience=5,
        eval_batch_size=128,
        seed=3,
        prefixes=False,
    )
    (tmp_path / "config.json").write_text(json.dumps(config_record(config)))
    _, results = train_sasrec(data, config, tmp_path, verbose=0)
    monkeypatch.setattr(keras_fame.datasets, "load", lambda *args, **kwargs: data)
    return tmp_path, results


def test_continues_from_the_pretrained_sasrec(bench, workdir, tmp_path):
    folder, sasrec = workdir
    out = tmp_path / "record.json"
    # At a vanishing rate the continued model is the pretrained one: same
    # validation and test metrics as the SASRec stage recorded.
    record = bench.main(
        ["--dataset", "synthetic", "--workdir", str(folder), "--out", str(out),
         "--learning-rate", "1e-12", "--epochs", "1"]
    )  # fmt: skip
    assert json.loads(out.read_text()) == record
    for split in ("valid", "test"):
        for metric, value in record[split].items():
            assert value == pytest.approx(sasrec[split][metric], abs=1e-6), metric
    assert record["learning_rate"] == 1e-12 and record["epochs_run"] == 1
    assert record["config"]["learning_rate"] == 1e-3  # the recipe's, kept
    # Rerun: the finished stage is reused; asking another rate is refused.
    assert bench.main(
        ["--dataset", "synthetic", "--workdir", str(folder), "--out", str(out),
         "--learning-rate", "1e-12", "--epochs", "1"]
    )["test"] == record["test"]  # fmt: skip
    other_rate = ["--dataset", "synthetic", "--workdir", str(folder), "--out",
                  str(out), "--epochs", "1"]  # fmt: skip
    with pytest.raises(SystemExit, match=r"differs in \['learning_rate'\]"):
        bench.main(other_rate)
    # An interrupted stage (no model or results yet) is refused alike.
    stage = folder / "sasrec-continued"
    (stage / "model.keras").unlink()
    (stage / "results.json").unlink()
    with pytest.raises(SystemExit, match=r"differs in \['learning_rate'\]"):
        bench.main(other_rate)
    with pytest.raises(SystemExit, match=r"differs in \['epochs'\]"):
        bench.main(other_rate[:-1] + ["2", "--learning-rate", "1e-12"])


def test_default_rate_is_the_recipes_finetuning_rate(bench, workdir, tmp_path):
    folder, sasrec = workdir
    record = bench.main(
        ["--dataset", "synthetic", "--workdir", str(folder),
         "--out", str(tmp_path / "r.json"), "--epochs", "1"]
    )  # fmt: skip
    assert record["learning_rate"] == TrainConfig().finetune_learning_rate


def test_bad_arguments(bench, tmp_path):
    with pytest.raises(SystemExit, match="config.json does not exist"):
        bench.main(
            ["--dataset", "toys", "--workdir", str(tmp_path), "--out", "x.json"]
        )  # fmt: skip
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(SystemExit, match="model.keras does not exist"):
        bench.main(
            ["--dataset", "toys", "--workdir", str(tmp_path), "--out", "x.json"]
        )  # fmt: skip
