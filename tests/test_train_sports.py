"""examples/train_sports.py: its command line and the facet summary stored in
the FAME record."""

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from keras_fame.datasets import SequenceDataset
from keras_fame.models import FAME
from keras_fame.training import TrainConfig, config_help
from tests.reference import fame_forward, load_script, randomize

NUM_ITEMS = 40
GROUP = 4  # items 1-4 share attribute 0, 5-8 attribute 1, ...: 10% of the catalogue


@pytest.fixture(scope="module")
def train_sports():
    return load_script(
        Path(__file__).resolve().parents[1] / "examples" / "train_sports.py"
    )


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    sequences = [rng.permutation(NUM_ITEMS)[:7] + 1 for _ in range(30)]
    attributes = {str(item): [(item - 1) // GROUP] for item in range(1, NUM_ITEMS + 1)}
    data = SequenceDataset(sequences, num_items=NUM_ITEMS, item_attributes=attributes)
    model = FAME(NUM_ITEMS, num_experts=2, max_len=8, hidden_dim=8, num_heads=2)
    # Weights far from initialisation: heads and experts differ.
    randomize(model, rng)
    return data, model


def _reference(model, data, users):
    """The test histories of the first `users` (built from the sequences)
    and the NumPy reference forward pass on them."""
    histories = np.zeros((users, 8), "int32")
    for row, sequence in enumerate(data.sequences[:users]):
        history = np.asarray(sequence)[:-1][-8:]
        histories[row, 8 - len(history) :] = history
    return histories, fame_forward(model, histories)


def _top_unseen(scores, history, k):
    candidates = [v for v in range(1, len(scores)) if v not in set(history)]
    return sorted(candidates, key=lambda v: -scores[v])[:k]


def test_facet_summary_against_a_hand_count(train_sports, setup):
    data, model = setup
    summary = train_sports.facet_summary(model, data, k=5, max_users=20)
    json.dumps(summary)  # goes into the JSON record as it is
    histories, ref = _reference(model, data, 20)
    group = lambda ids: (np.asarray(ids) - 1) // GROUP  # noqa: E731
    agreement, final = np.zeros(2), 0.0
    for row, history in enumerate(histories):
        last = group(history[-1])
        for head in range(2):
            top = _top_unseen(ref["head_scores"][row, -1, head], history, 5)
            agreement[head] += np.mean(group(top) == last) / 20
        final += np.mean(group(_top_unseen(ref["scores"][row, -1], history, 5)) == last)
    np.testing.assert_allclose(summary["head_agreement"], agreement, rtol=1e-6)
    assert summary["final"] == pytest.approx(final / 20)
    # Chance: an item drawn from the whole catalogue shares the group 4 times in 40.
    assert summary["chance"] == pytest.approx(GROUP / NUM_ITEMS)
    assert summary["users"] == 20 and summary["k"] == 5
    np.testing.assert_allclose(
        summary["mean_gate"], ref["gate"][:, -1].mean(0), atol=1e-6
    )


def test_facet_summary_without_attributes(train_sports, setup):
    data, model = setup
    bare = SequenceDataset(data.sequences, num_items=NUM_ITEMS)
    assert train_sports.facet_summary(model, bare) is None


def test_expert_summary_is_the_routing_in_json(train_sports, setup, capsys):
    data, model = setup
    summary = train_sports.expert_summary(model, data, max_users=20)
    assert json.loads(json.dumps(summary)) == summary
    _, ref = _reference(model, data, 20)
    routing = ref["routing"][:, -1]  # (users, heads, experts)
    np.testing.assert_allclose(summary["mean_routing"], routing.mean(0), atol=1e-5)
    entropy = -(routing * np.log(routing)).sum(-1).mean(0) / np.log(2)
    np.testing.assert_allclose(summary["routing_entropy"], entropy, atol=1e-5)
    assert len(summary["expert_similarity"]) == 2
    assert summary["users"] == 20
    assert "head 1: mean weights" in capsys.readouterr().out


def test_command_line_defaults_are_the_config_defaults(train_sports):
    assert train_sports.parse_args([]).config == TrainConfig()


def test_command_line_sets_every_kind_of_field(train_sports):
    args = train_sports.parse_args(
        [
            "--dataset",
            "toys",
            "--finetune-learning-rate",
            "none",  # the paper's single rate
            "--patience",
            "None",
            "--finetune-dropout",
            "0.2",
            "--eval-item-chunk-size",
            "500",
            "--no-prefixes",
            "--windows",
            "--expert-init",
            "random",
            "--num-heads",
            "4",
        ]
    )
    expected = dataclasses.replace(
        TrainConfig(),
        finetune_learning_rate=None,
        patience=None,
        finetune_dropout=0.2,
        eval_item_chunk_size=500,
        prefixes=False,
        windows=True,
        expert_init="random",
        num_heads=4,
    )
    assert args.config == expected
    assert args.config.finetune_config().learning_rate == 1e-3
    assert args.dataset == "toys"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--expert-init", "pretraned"], "argument --expert-init: invalid choice"),
        (["--pretrain-epochs", "ten"], "argument --pretrain-epochs: invalid int"),
        (["--finetune-dropout", "high"], "argument --finetune-dropout: invalid"),
        (["--windows"], "`prefixes` and `windows` exclude each other"),
        (["--finetune-dropout", "1.5"], r"`finetune_dropout` must be a float"),
        (["--num-heads", "3"], "`hidden_dim` must be divisible by `num_heads`"),
    ],
)
def test_command_line_refuses_bad_values_before_loading(
    train_sports, capsys, argv, message
):
    with pytest.raises(SystemExit) as info:
        train_sports.parse_args(argv)
    assert info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_command_line_help_documents_every_field(train_sports, capsys):
    with pytest.raises(SystemExit):
        train_sports.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        assert flag in text
        assert " ".join(config_help()[field.name].split()[:4]) in text
