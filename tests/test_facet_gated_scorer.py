import keras
import numpy as np
import pytest
from keras import ops

from keras_fame.layers import FacetGatedScorer
from tests.reference import facet_gated_scores


def _scorer(num_heads=3, head_dim=4, hidden_dim=8, seed=0):
    scorer = FacetGatedScorer(num_heads)
    scorer.build((None, num_heads, head_dim), (None, hidden_dim))
    rng = np.random.default_rng(seed)
    for weight in scorer.weights:
        weight.assign(rng.normal(0, 0.5, size=weight.shape).astype("float32"))
    return scorer


def test_matches_numpy_reference():
    scorer = _scorer()
    rng = np.random.default_rng(1)
    states = rng.normal(size=(5, 3, 4)).astype("float32")
    items = rng.normal(size=(11, 8)).astype("float32")
    scores, gate = scorer(states, items, return_gate=True)
    get = ops.convert_to_numpy
    ref_scores, ref_gate, ref_heads = facet_gated_scores(
        states,
        items,
        get(scorer.facet_kernel),
        get(scorer.gate_kernel),
        get(scorer.gate_bias),
    )
    np.testing.assert_allclose(get(scores), ref_scores, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(get(gate), ref_gate, atol=1e-6)
    np.testing.assert_allclose(
        get(scorer.head_scores(states, items)), ref_heads, rtol=1e-4, atol=1e-4
    )


def test_weight_shapes():
    scorer = _scorer(num_heads=2, head_dim=4, hidden_dim=8)
    assert tuple(scorer.facet_kernel.shape) == (2, 8, 4)
    assert tuple(scorer.gate_kernel.shape) == (8, 2)
    assert tuple(scorer.gate_bias.shape) == (2,)


def _reference(scorer, states, items):
    get = ops.convert_to_numpy
    return facet_gated_scores(
        states,
        items,
        get(scorer.facet_kernel),
        get(scorer.gate_kernel),
        get(scorer.gate_bias),
    )


def test_leading_dimensions_match_the_reference_row_by_row():
    scorer = _scorer()
    states = np.random.default_rng(2).normal(size=(2, 7, 3, 4)).astype("float32")
    items = np.random.default_rng(3).normal(size=(9, 8)).astype("float32")
    scores, gate = scorer(states, items, return_gate=True)
    assert scores.shape == (2, 7, 9)
    ref_scores, ref_gate, _ = _reference(scorer, states.reshape(14, 3, 4), items)
    np.testing.assert_allclose(
        ops.convert_to_numpy(scores), ref_scores.reshape(2, 7, 9), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(gate), ref_gate.reshape(2, 7, 3), atol=1e-6
    )


def test_query_is_the_gated_sum_of_the_facet_projections():
    """query = sum_h g_h W_f^(h) F^(h) (Eq. 11 before the item product), and
    its product with an item is that item's score."""
    scorer = _scorer()
    rng = np.random.default_rng(4)
    states = rng.normal(size=(4, 3, 4)).astype("float32")
    items = rng.normal(size=(6, 8)).astype("float32")
    ref_scores, ref_gate, _ = _reference(scorer, states, items)
    wf = ops.convert_to_numpy(scorer.facet_kernel)  # (H, d, k)
    expected = sum(
        ref_gate[:, h, None] * states[:, h] @ wf[h].T for h in range(3)
    )  # (B, d)
    query = ops.convert_to_numpy(scorer.query(states))
    np.testing.assert_allclose(query, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(query @ items.T, ref_scores, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        ops.convert_to_numpy(scorer.gate(states)), ref_gate, atol=1e-6
    )


def test_config_round_trip_and_errors():
    scorer = FacetGatedScorer(num_heads=4, name="s")
    clone = keras.layers.deserialize(keras.layers.serialize(scorer))
    assert clone.get_config() == scorer.get_config()
    with pytest.raises(ValueError, match="num_heads"):
        FacetGatedScorer(num_heads=0)
    with pytest.raises(ValueError, match="num_heads=4"):
        FacetGatedScorer(num_heads=4)(
            np.zeros((2, 3, 4), "float32"), np.zeros((5, 12), "float32")
        )


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_gate_is_finite(policy):
    scorer = FacetGatedScorer(num_heads=2, dtype=policy)
    states = (np.random.default_rng(5).normal(size=(3, 2, 4)) * 1e3).astype("float32")
    items = np.random.default_rng(6).normal(size=(7, 8)).astype("float32")
    scores, gate = scorer(states, items, return_gate=True)
    gate = ops.convert_to_numpy(ops.cast(gate, "float32"))
    assert np.isfinite(gate).all()
    np.testing.assert_allclose(gate.sum(-1), 1.0, atol=1e-2)
