import numpy as np
import pytest

from keras_fame.datasets import SequenceDataset
from keras_fame.inspection import expert_usage, head_facet_alignment
from keras_fame.models import FAME, SASRec
from tests.reference import (
    block_weights,
    embed,
    fame_forward,
    moe_query_attention,
    randomize,
    transformer_block,
    weights_by_name,
)

NUM_ITEMS = 12


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    sequences = [rng.permutation(NUM_ITEMS)[:6] + 1 for _ in range(20)]
    data = SequenceDataset(sequences, num_items=NUM_ITEMS)
    model = FAME(NUM_ITEMS, num_experts=2, max_len=8, hidden_dim=8, num_heads=2)
    return data, model


def _test_histories(sequences, max_len=8):
    """The test split's histories (all but the last item), left-padded."""
    rows = np.zeros((len(sequences), max_len), "int32")
    for row, sequence in enumerate(sequences):
        history = sequence[:-1][-max_len:]
        rows[row, max_len - len(history) :] = history
    return rows


def _top_unseen(scores, history, k):
    candidates = [v for v in range(1, len(scores)) if v not in set(history)]
    return sorted(candidates, key=lambda v: -scores[v])[:k]


@pytest.fixture(scope="module")
def random_setup():
    """Four users, a FAME with random weights far from initialisation (its
    heads rank differently), the histories and the NumPy reference."""
    rng = np.random.default_rng(3)
    sequences = [rng.permutation(NUM_ITEMS)[:6] + 1 for _ in range(4)]
    data = SequenceDataset(sequences, num_items=NUM_ITEMS)
    model = FAME(NUM_ITEMS, num_experts=2, max_len=8, hidden_dim=8, num_heads=2)
    randomize(model, rng)
    # Large expert queries: the experts attend to different items.
    query = model.fame_block.attention.query_kernel
    query.assign(rng.normal(0, 3, query.shape))
    histories = _test_histories(sequences)
    return data, model, histories, fame_forward(model, histories)


def test_alignment_against_a_hand_count(random_setup):
    data, model, histories, ref = random_setup
    parity = np.array([-1] + [i % 2 for i in range(1, NUM_ITEMS + 1)])[:, None]
    out = head_facet_alignment(model, data, parity, facet_names=["parity"], k=3)
    agreement = np.zeros(2)
    final = 0.0
    for row, history in enumerate(histories):
        last = parity[history[-1], 0]
        for head in range(2):
            top = _top_unseen(ref["head_scores"][row, -1, head], history, 3)
            agreement[head] += np.mean(parity[top, 0] == last) / len(histories)
        top = _top_unseen(ref["scores"][row, -1], history, 3)
        final += np.mean(parity[top, 0] == last) / len(histories)
    np.testing.assert_allclose(out["agreement"][:, 0], agreement)
    np.testing.assert_allclose(out["final"][0], final)
    assert out["facets"] == ["parity"]
    assert out["chance"][0] == pytest.approx(0.5)  # 6 odd and 6 even items
    assert out["users"] == 4
    np.testing.assert_allclose(out["mean_gate"], ref["gate"][:, -1].mean(0), atol=1e-6)


def test_alignment_ignores_attributes_carried_by_many_items(random_setup):
    # Attribute 0 is on every item; attribute 1 on items 1 and 2 only.
    data, model, histories, ref = random_setup
    attributes = {i: [0] + ([1] if i <= 2 else []) for i in range(1, NUM_ITEMS + 1)}
    counted = head_facet_alignment(
        model, data, attributes, k=3, max_attribute_share=1.0
    )
    np.testing.assert_allclose(counted["agreement"], 1.0)
    np.testing.assert_allclose(counted["final"], 1.0)
    np.testing.assert_allclose(counted["chance"], 1.0)
    # By default (share 0.1 of 12 items: more than 1.2 items) both are
    # ignored, which leaves nothing to align with: an error that says what to
    # pass; with 0.2 (more than 2.4 items) only attribute 0.
    with pytest.raises(ValueError, match=r"Pass max_attribute_share=0.167 or more"):
        head_facet_alignment(model, data, attributes, k=3)
    kept = head_facet_alignment(model, data, attributes, k=3, max_attribute_share=0.2)
    expected = np.zeros(2)
    for row, history in enumerate(histories):
        if history[-1] <= 2:
            for head in range(2):
                top = _top_unseen(ref["head_scores"][row, -1, head], history, 3)
                expected[head] += np.mean(np.array(top) <= 2) / len(histories)
    np.testing.assert_allclose(kept["agreement"][:, 0], expected)
    chance = np.mean([2 / NUM_ITEMS if h[-1] <= 2 else 0.0 for h in histories])
    np.testing.assert_allclose(kept["chance"], [chance])


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


def test_expert_usage_similarity_of_distinct_experts(random_setup):
    data, model, histories, _ = random_setup
    out = expert_usage(model, data)
    # The reference: each expert's output (Eq. 15) at the last position,
    # on the reference output of the lower blocks.
    padding = histories != 0
    x = embed(model, histories)
    for block in model.blocks:
        x = transformer_block(x, block_weights(block), padding, 1e-12)
    a = weights_by_name(model.fame_block.attention)
    _, routing, experts = moe_query_attention(
        x,
        a["query_kernel"],
        a["key_kernel"],
        a["value_kernel"],
        a["router_kernel"],
        a["query_bias"],
        a["key_bias"],
        a["value_bias"],
        padding=padding,
        return_experts=True,
    )
    f = experts[:, -1]  # (users, heads, experts, k)
    cosine = (f[:, :, 0] * f[:, :, 1]).sum(-1) / (
        np.linalg.norm(f[:, :, 0], axis=-1) * np.linalg.norm(f[:, :, 1], axis=-1)
    )
    np.testing.assert_allclose(out["expert_similarity"], cosine.mean(0), atol=1e-5)
    assert np.all(out["expert_similarity"] < 0.99)
    p = routing[:, -1]  # (users, heads, experts)
    np.testing.assert_allclose(out["mean_routing"], p.mean(0), atol=1e-6)
    entropy = -(p * np.log(p)).sum(-1).mean(0) / np.log(2)
    np.testing.assert_allclose(out["routing_entropy"], entropy, atol=1e-5)
    np.testing.assert_allclose(out["top_share"][:, 1], (p[..., 1] > p[..., 0]).mean(0))


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
