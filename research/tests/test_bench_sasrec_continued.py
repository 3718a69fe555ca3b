"""`research/scripts/bench_sasrec_continued.py`: the control for FAME's fine-tuning."""

import json
import shutil
from pathlib import Path

import pytest

import keras_fame.datasets
from keras_fame.training import TrainConfig
from tests.reference import dropout_rates, load_script, recipe_folder, small_recipe_data

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_sasrec_continued.py"


@pytest.fixture(scope="module")
def bench():
    return load_script(SCRIPT)


@pytest.fixture(scope="module")
def data():
    return small_recipe_data()


@pytest.fixture()
def workdir(data, tmp_path, monkeypatch):
    """A recipe work folder with a finished SASRec stage (as the recipe leaves it)."""
    results = recipe_folder(
        data,
        tmp_path,
        dropout=0.1,
        pretrain_epochs=2,
        finetune_epochs=2,
        patience=5,
        seed=3,
    )
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


def test_dropout_is_the_recipes_finetuning_dropout(bench, workdir, tmp_path):
    import keras

    folder, sasrec = workdir
    args = ["--dataset", "synthetic", "--workdir", str(folder), "--epochs", "1",
            "--learning-rate", "1e-12", "--out", str(tmp_path / "r.json")]  # fmt: skip
    # The folder's recipe has TrainConfig's finetune_dropout (0.3) and SASRec
    # dropout 0.1: the continued model trains with 0.3, attention included,
    # from the same weights (a vanishing rate keeps SASRec's metrics).
    record = bench.main(args)
    assert record["dropout"] == TrainConfig().finetune_dropout == 0.3
    stage = folder / "sasrec-continued"
    continued = keras.saving.load_model(stage / "model.keras")
    assert dropout_rates(continued) == {0.3}
    assert continued.attention_dropout == 0.3
    for metric, value in record["test"].items():
        assert value == pytest.approx(sasrec["test"][metric], abs=1e-6), metric
    # Another dropout is refused for the finished stage; none keeps SASRec's.
    with pytest.raises(SystemExit, match=r"differs in \['dropout'\]"):
        bench.main([*args, "--dropout", "0.2"])
    shutil.rmtree(stage)
    record = bench.main([*args, "--dropout", "none"])
    assert record["dropout"] is None
    assert dropout_rates(keras.saving.load_model(stage / "model.keras")) == {0.1}
    for bad in ("high", "1.0", "-0.1"):
        with pytest.raises(SystemExit, match="--dropout must be a rate"):
            bench.main([*args, "--dropout", bad])


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


def test_carry_optimizer_continues_the_saved_adam_state(bench, workdir, tmp_path):
    import keras

    folder, _ = workdir
    saved = keras.saving.load_model(folder / "sasrec" / "model.keras").optimizer
    start = int(saved.iterations.numpy())
    assert start > 0
    args = ["--dataset", "synthetic", "--workdir", str(folder), "--epochs", "1",
            "--learning-rate", "1e-12"]  # fmt: skip
    carried = bench.main(
        [*args, "--out", str(tmp_path / "c.json"), "--carry-optimizer"]
    )
    fresh = bench.main([*args, "--out", str(tmp_path / "f.json")])
    assert carried["carry_optimizer"] and not fresh["carry_optimizer"]

    def state(stage):
        return keras.saving.load_model(folder / stage / "model.keras").optimizer

    carried_state, fresh_state = (
        state("sasrec-continued-carried"),
        state("sasrec-continued"),
    )
    # Both ran the same steps; only the carried one counts on from the saved
    # step count, and its moments are the saved ones moved by those steps at a
    # vanishing rate (the moments do not depend on the rate).
    steps = int(fresh_state.iterations.numpy())
    assert steps > 0
    assert int(carried_state.iterations.numpy()) == start + steps
    assert float(carried_state.learning_rate.numpy()) == pytest.approx(1e-12)
    for old, new in zip(saved.variables, carried_state.variables, strict=True):
        if "velocity" not in old.path:
            continue
        # The second moment decays by beta_2 per step and gains the squared
        # gradient: it is at least beta_2**steps times the saved one, which a
        # fresh Adam (started from zero) is not for the rows SASRec trained.
        floor = 0.999**steps * old.numpy()
        assert (new.numpy() >= floor * (1 - 1e-5)).all(), old.path
    assert any(
        (restarted.numpy() < 0.999**steps * old.numpy() * 0.5).any()
        for old, restarted in zip(saved.variables, fresh_state.variables, strict=True)
        if "velocity" in old.path
    )
