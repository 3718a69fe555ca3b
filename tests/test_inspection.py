import numpy as np
import pytest

from keras_fame.datasets import SequenceDataset
from keras_fame.inspection import expert_usage, head_facet_alignment
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


def test_expert_usage_routing_against_facet_weights(setup):
    data, model = setup
    out = expert_usage(model, data, max_users=15, batch_size=4)
    features, _ = data.eval_arrays("test", max_len=8)
    routing = model.facet_weights(features["item_ids"][:15])["routing"]  # (U, H, N)
    np.testing.assert_allclose(out["mean_routing"], routing.mean(0), atol=1e-6)
    entropy = -(routing * np.log(routing)).sum(-1).mean(0) / np.log(2)
    np.testing.assert_allclose(out["routing_entropy"], entropy, atol=1e-5)
    top = routing.argmax(-1)
    np.testing.assert_allclose(out["top_share"][:, 1], (top == 1).mean(0))
    np.testing.assert_allclose(out["top_share"].sum(-1), 1.0)
    assert out["users"] == 15


def test_expert_usage_similarity_of_distinct_experts(setup):
    data, _ = setup
    model = FAME(NUM_ITEMS, num_experts=2, max_len=8, hidden_dim=8, num_heads=2)
    # Large random expert queries: the experts attend to different items.
    attention = model.fame_block.attention
    rng = np.random.default_rng(2)
    attention.query_kernel.assign(rng.normal(0, 3, attention.query_kernel.shape))
    out = expert_usage(model, data)
    assert np.all(out["expert_similarity"] < 0.99)
    assert np.all(out["expert_similarity"] > -1.0)


def test_expert_usage_of_identical_experts_and_an_even_router():
    rng = np.random.default_rng(1)
    data = SequenceDataset(
        [rng.permutation(NUM_ITEMS)[:6] + 1 for _ in range(10)], num_items=NUM_ITEMS
    )
    sasrec = SASRec(NUM_ITEMS, max_len=8, hidden_dim=8, num_heads=2)
    # Pretrained experts without noise are copies of one query: they agree.
    fame = FAME.from_sasrec(
        sasrec, num_experts=3, expert_init="pretrained", expert_noise=0.0
    )
    attention = fame.fame_block.attention
    attention.router_kernel.assign(np.zeros(attention.router_kernel.shape))
    out = expert_usage(fame, data)
    np.testing.assert_allclose(out["expert_similarity"], 1.0, atol=1e-6)
    np.testing.assert_allclose(out["routing_entropy"], 1.0, atol=1e-6)
    np.testing.assert_allclose(out["mean_routing"], 1 / 3, atol=1e-6)
    one = FAME.from_sasrec(sasrec, num_experts=1)
    single = expert_usage(one, data)
    np.testing.assert_array_equal(single["routing_entropy"], 0.0)
    np.testing.assert_array_equal(single["expert_similarity"], 1.0)
    np.testing.assert_array_equal(single["top_share"], 1.0)
    with pytest.raises(TypeError, match="FAME"):
        expert_usage(sasrec, data)
