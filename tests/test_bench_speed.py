"""The step and RecBole benchmarks' bookkeeping (no timings are asserted)."""

import argparse
from pathlib import Path

import pytest

from tests.reference import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def recbole_bench():
    return load_script(ROOT / "benchmarks/bench_recbole.py")


@pytest.fixture(scope="module")
def step_bench():
    return load_script(ROOT / "benchmarks/bench_step.py")


def test_atomic_file_keeps_every_action_in_order(tmp_path, recbole_bench):
    data = tmp_path / "data.txt"
    data.write_text("1 5 3 5\n2 7\n")
    out = recbole_bench.convert(data, tmp_path / "work", "sports")
    assert out == tmp_path / "work/sports/sports.inter"
    assert out.read_text().splitlines() == [
        "user_id:token\titem_id:token\ttimestamp:float",
        "1\t5\t0",
        "1\t3\t1",
        "1\t5\t2",
        "2\t7\t0",
    ]


def test_atomic_file_names_a_bad_line(tmp_path, recbole_bench):
    data = tmp_path / "data.txt"
    data.write_text("1 5 3\n2\n")
    with pytest.raises(ValueError, match=r"data.txt, line 2: expected a user id"):
        recbole_bench.convert(data, tmp_path / "work", "sports")


def test_time_to_target_cumulates_training_and_validation(recbole_bench):
    epochs = [
        {"epoch": 0, "train_seconds": 10.0, "valid_seconds": 1.0, "ndcg@20": 0.01},
        {"epoch": 1, "train_seconds": 10.0, "valid_seconds": 1.0, "ndcg@20": 0.03},
        {"epoch": 2, "train_seconds": 10.0, "valid_seconds": 1.0, "ndcg@20": 0.02},
    ]
    assert recbole_bench.time_to(epochs, 0.025) == {"seconds": 22.0, "epoch": 1}
    assert recbole_bench.time_to(epochs, 0.04) is None


def test_floor_counts_each_blocks_projections_and_ffn(step_bench):
    args = argparse.Namespace(
        hidden_dim=64, batch_size=256, positions=10, num_items=100, num_blocks=2
    )
    shapes = step_bench.floor_shapes(args)
    tokens = 2560
    assert shapes[0] == (256, 64, 100)
    # Block 0 at every position; block 1 (the last) K, V at every position,
    # Q, output projection and FFN at the last position only.
    assert shapes[1:7] == [(tokens, 64, 64)] * 4 + [
        (tokens, 64, 256),
        (tokens, 256, 64),
    ]
    assert shapes[7:] == [(tokens, 64, 64)] * 2 + [(256, 64, 64)] * 2 + [
        (256, 64, 256),
        (256, 256, 64),
    ]
