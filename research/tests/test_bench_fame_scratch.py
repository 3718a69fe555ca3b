"""`research/scripts/bench_fame_scratch.py`: FAME without SASRec pretraining."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_fame.datasets
from keras_fame.training import TrainConfig, config_record
from tests.reference import dropout_rates, load_script, small_recipe_data

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_fame_scratch.py"


@pytest.fixture(scope="module")
def bench():
    return load_script(SCRIPT)


@pytest.fixture(scope="module")
def data():
    return small_recipe_data()


def _folder(data, folder, monkeypatch, **fields):
    """A work folder holding only a recipe's config.json (no SASRec stage)."""
    config = TrainConfig(
        **{
            "hidden_dim": 16,
            "num_heads": 2,
            "num_experts": 2,
            "max_len": 16,
            "batch_size": 32,
            "eval_batch_size": 128,
            "prefixes": False,
            "dropout": 0.1,
            "pretrain_epochs": 2,
            "finetune_epochs": 1,
            "patience": 5,
            "seed": 3,
            **fields,
        }
    )
    (folder / "config.json").write_text(json.dumps(config_record(config)))
    monkeypatch.setattr(keras_fame.datasets, "load", lambda *args, **kwargs: data)
    return ["--dataset", "synthetic", "--workdir", str(folder)]


def test_second_stage_starts_where_the_first_ended(bench, data, tmp_path, monkeypatch):
    # At a vanishing fine-tuning rate the final FAME is the first stage's:
    # the same metrics, though it trains with another dropout (0.25).
    args = _folder(
        data,
        tmp_path,
        monkeypatch,
        finetune_learning_rate=1e-12,
        finetune_dropout=0.25,
    )
    out = tmp_path / "record.json"
    record = bench.main([*args, "--out", str(out)])
    assert json.loads(out.read_text()) == record
    assert not (tmp_path / "sasrec").exists()
    first = record["first_stage"]
    for split in ("valid", "test"):
        for metric, value in record[split].items():
            assert value == pytest.approx(first[split][metric], abs=1e-6), metric
    assert first["epochs_run"] == 2 and record["epochs_run"] == 1
    assert record["model"] == "fame-scratch" and record["seed"] == 3
    assert record["config"]["finetune_dropout"] == 0.25
    # Each stage trained with its own rate and dropout.
    stages = {
        name: json.loads((tmp_path / name / "stage.json").read_text())
        for name in ("fame-scratch", "fame-scratch-finetuned")
    }
    assert stages["fame-scratch"]["learning_rate"] == 1e-3
    assert stages["fame-scratch"]["dropout"] == 0.1
    assert stages["fame-scratch"]["epochs"] == 2
    assert stages["fame-scratch-finetuned"]["learning_rate"] == 1e-12
    assert stages["fame-scratch-finetuned"]["dropout"] == 0.25
    first_model = keras.saving.load_model(tmp_path / "fame-scratch" / "model.keras")
    final = keras.saving.load_model(tmp_path / "fame-scratch-finetuned" / "model.keras")
    assert dropout_rates(first_model) == {0.1}
    assert dropout_rates(final) == {0.25}
    assert final.num_experts == 2
    for a, b in zip(first_model.get_weights(), final.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    usage = record["expert_usage"]
    assert len(usage["expert_similarity"]) == len(usage["routing_entropy"]) == 2
    # A rerun reuses both finished stages.
    again = bench.main([*args, "--out", str(tmp_path / "again.json")])
    assert again["test"] == record["test"]
    assert again["first_stage"]["test"] == first["test"]


def test_first_stage_starts_from_a_seeded_random_fame(
    bench, data, tmp_path, monkeypatch
):
    # At a vanishing rate in both stages the first stage's FAME is its
    # untrained start: a FAME drawn from the seed, no SASRec involved.
    from keras_fame.models import FAME
    from keras_fame.training import set_seed

    args = _folder(
        data, tmp_path, monkeypatch, learning_rate=1e-12, finetune_learning_rate=1e-12
    )
    bench.main([*args, "--out", str(tmp_path / "r.json")])
    first = keras.saving.load_model(tmp_path / "fame-scratch" / "model.keras")
    set_seed(3)
    start = FAME(
        data.num_items,
        num_experts=2,
        max_len=16,
        hidden_dim=16,
        num_heads=2,
        dropout=0.1,
        sampler_seed=3,
    )
    start(keras.ops.ones((1, 16), "int32"))
    for a, b in zip(start.get_weights(), first.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # Another seed draws another start.
    set_seed(4)
    other = FAME.from_config(start.get_config())
    other(keras.ops.ones((1, 16), "int32"))
    assert any(
        not np.allclose(a, b)
        for a, b in zip(other.get_weights(), first.get_weights(), strict=True)
    )


def test_bad_arguments(bench, data, tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match="config.json does not exist"):
        bench.main(
            ["--dataset", "toys", "--workdir", str(tmp_path), "--out", "x.json"]
        )  # fmt: skip
    # A finished stage made with another configuration is refused by name.
    args = _folder(data, tmp_path, monkeypatch, finetune_learning_rate=1e-12)
    bench.main([*args, "--out", str(tmp_path / "r.json")])
    _folder(data, tmp_path, monkeypatch, finetune_learning_rate=1e-12, dropout=0.2)
    with pytest.raises(SystemExit, match=r"fame-scratch.*differs in \['dropout'\]"):
        bench.main([*args, "--out", str(tmp_path / "r.json")])
