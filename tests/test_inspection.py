import numpy as np
import pytest

from keras_fame.datasets import SequenceDataset
from keras_fame.inspection import head_facet_alignment
from keras_fame.models import FAME, SASRec

NUM_ITEMS = 12


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    sequences = [rng.permutation(NUM_ITEMS)[:6] + 1 for _ in range(20)]
    data = SequenceDataset(sequences, num_items=NUM_ITEMS)
    model = FAME(NUM_ITEMS, num_experts=2, max_len=8, hidden_dim=8, num_heads=2)
    return data, model


def test_alignment_against_a_hand_count(setup):
    data, model = setup
    parity = np.array([-1] + [i % 2 for i in range(1, NUM_ITEMS + 1)])[:, None]
    out = head_facet_alignment(model, data, parity, facet_names=["parity"], k=3)
    features, _ = data.eval_arrays("test", max_len=8)
    report = model.explain(features["item_ids"], k=3)
    last = features["item_ids"][:, -1]
    expected = (
        parity[report["head_top_ids"], 0] == parity[last, 0][:, None, None]
    ).mean((0, 2))
    np.testing.assert_allclose(out["agreement"][:, 0], expected)
    final = (parity[report["top_ids"], 0] == parity[last, 0][:, None]).mean()
    np.testing.assert_allclose(out["final"][0], final)
    assert out["chance"][0] == pytest.approx(0.5)
    assert out["users"] == data.num_users
    np.testing.assert_allclose(out["mean_gate"].sum(), 1.0, atol=1e-6)


def test_constant_and_unique_attributes(setup):
    data, model = setup
    same = np.zeros((NUM_ITEMS + 1, 1), int)
    unique = np.arange(NUM_ITEMS + 1)[:, None]
    both = head_facet_alignment(model, data, np.hstack([same, unique]), k=4)
    np.testing.assert_allclose(both["agreement"][:, 0], 1.0)
    np.testing.assert_allclose(
        both["agreement"][:, 1], 0.0
    )  # the last item is excluded
    np.testing.assert_allclose(both["chance"], [1.0, 1 / NUM_ITEMS])
    as_dict = head_facet_alignment(
        model, data, {i: [i] for i in range(1, NUM_ITEMS + 1)}, k=4
    )
    np.testing.assert_allclose(as_dict["agreement"], 0.0)


def test_errors(setup):
    data, model = setup
    with pytest.raises(ValueError, match="num_items \\+ 1"):
        head_facet_alignment(model, data, np.zeros((5, 1), int))
    with pytest.raises(ValueError, match="facet_names"):
        head_facet_alignment(
            model, data, np.zeros((NUM_ITEMS + 1, 2), int), facet_names=["a"]
        )
    with pytest.raises(TypeError, match="FAME"):
        head_facet_alignment(SASRec(NUM_ITEMS, max_len=8, hidden_dim=8), data, {})
