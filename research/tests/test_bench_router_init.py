"""`research/scripts/bench_router_init.py`: FAME with its router drawn at a larger scale."""

import json
from pathlib import Path

import pytest

import keras_fame.datasets
from tests.reference import load_script, recipe_folder

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_router_init.py"


@pytest.fixture(scope="module")
def bench():
    return load_script(SCRIPT)


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    """A recipe work folder with a finished SASRec stage (as the recipe leaves it)."""
    data = keras_fame.datasets.load(
        "synthetic", num_users=120, num_items=50, min_length=8, max_length=14, seed=1
    )
    recipe_folder(data, tmp_path, pretrain_epochs=1, finetune_epochs=1, seed=2)
    monkeypatch.setattr(keras_fame.datasets, "load", lambda *args, **kwargs: data)
    return tmp_path


def test_router_and_experts_start_as_asked(bench, workdir, tmp_path):
    import keras

    out = tmp_path / "record.json"
    args = ["--dataset", "synthetic", "--workdir", str(workdir), "--out", str(out)]
    record = bench.main([*args, "--router-stddev", "0.5", "--expert-noise", "0.3"])
    assert json.loads(out.read_text()) == record
    assert record["router_stddev"] == 0.5 and record["config"]["expert_noise"] == 0.3
    assert record["epochs_run"] == 1
    usage = record["expert_usage"]
    assert len(usage["routing_entropy"]) == 2 and usage["users"] == 120
    # One epoch at the fine-tuning rate (1e-4) hardly moves the weights: the
    # router's spread is still the drawn one, and each expert query sits
    # about expert_noise away from SASRec's.
    fame = keras.saving.load_model(workdir / "fame-router0.5" / "model.keras")
    attention = fame.fame_block.attention
    router = keras.ops.convert_to_numpy(attention.router_kernel)
    assert router.std() == pytest.approx(0.5, rel=0.1)
    sasrec = keras.saving.load_model(workdir / "sasrec" / "model.keras")
    query = keras.ops.convert_to_numpy(sasrec.blocks[-1].attention.query_kernel)
    offsets = keras.ops.convert_to_numpy(attention.query_kernel) - query
    assert offsets.std() == pytest.approx(0.3, rel=0.1)
    assert all(0 < e <= 1 for e in usage["routing_entropy"])
    with pytest.raises(SystemExit, match="--router-stddev must be positive"):
        bench.main([*args, "--router-stddev", "0"])
    with pytest.raises(SystemExit, match="expert_noise"):
        bench.main([*args, "--router-stddev", "0.5", "--expert-noise", "-1"])


def test_needs_a_finished_sasrec(bench, tmp_path):
    args = ["--dataset", "toys", "--workdir", str(tmp_path), "--out", "x.json",
            "--router-stddev", "0.5"]  # fmt: skip
    with pytest.raises(SystemExit, match="config.json does not exist"):
        bench.main(args)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(SystemExit, match="model.keras does not exist"):
        bench.main(args)


@pytest.fixture(scope="module")
def at_start():
    return load_script(SCRIPT.parent / "expert_usage_at_start.py")


def test_expert_usage_at_start(at_start, workdir, tmp_path):
    out = tmp_path / "start.json"
    record = at_start.main(
        ["--dataset", "synthetic", "--workdir", str(workdir), "--out", str(out),
         "--start", "pretrained:0", "pretrained:0.5:0", "random:0.02:3"]
    )  # fmt: skip
    assert json.loads(out.read_text()) == record
    same, even, random = record["starts"]
    # Noiseless copies of one query compute the same thing.
    assert same["expert_similarity"] == pytest.approx([1.0, 1.0], abs=1e-5)
    assert same["router_stddev"] is None
    # A zero router weighs the experts evenly; a large one does not.
    assert even["routing_entropy"] == pytest.approx([1.0, 1.0], abs=1e-6)
    assert max(random["routing_entropy"]) < 0.99
    assert max(even["expert_similarity"]) < 1.0
    for bad in ("pretrained", "copy:0.1", "random:x", "random:0.1:0.2:3"):
        with pytest.raises(SystemExit, match="a start is INIT:NOISE"):
            at_start.main(
                ["--dataset", "synthetic", "--workdir", str(workdir),
                 "--out", str(out), "--start", bad]
            )  # fmt: skip
