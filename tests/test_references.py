"""NumPy references of SASRec's block, SASRec's and FAME's whole forward pass.

Every reference reads the layers' weights by name and recomputes the
maths in float64 NumPy from the spec (no call of the code under test): the
post-LayerNorm SASRec block (`y = LN(x + MHA(x) W_O + b_O)`,
`out = LN(y + FFN(y))`, GELU FFN), the embeddings (item + position, the
embedding LayerNorm), the blocks, and the scores `F . E[v]`; for FAME the
lower blocks, FAME's block (Eqs. 12-17 and Eq. 7, `tests/reference.py`'s
attention) and the facet-gated scorer (Eqs. 8-11).
"""

import numpy as np
import pytest

from keras_fame.layers import TransformerBlock
from keras_fame.models import FAME, SASRec
from tests.reference import as_float64 as _np
from tests.reference import (
    block_weights,
    fame_forward,
    sasrec_forward,
    scores,
    transformer_block,
)
from tests.reference import randomize as _randomize

RTOL = ATOL = 1e-5


def _ids(num_items, length, seed=0):
    """Left-padded histories: rows of 1, 3 and `length` items and one with
    a repeated item."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, num_items + 1, size=(4, length)).astype("int32")
    ids[0, :-1] = 0
    ids[1, :-3] = 0
    ids[3, -2] = ids[3, -1]
    return ids


@pytest.mark.parametrize("hidden_dim, num_heads", [(8, 2), (12, 3)])
def test_transformer_block_matches_numpy_reference(hidden_dim, num_heads):
    # Dropout rates are set so that an inference call that applied them
    # would fail; training=False must be the deterministic block.
    block = TransformerBlock(num_heads, intermediate_dim=10, dropout=0.3)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 6, hidden_dim)).astype("float32")
    padding = np.array([[0, 0, 0, 1, 1, 1], [1] * 6, [0] * 5 + [1]], bool)
    block.build(x.shape)
    _randomize(block, rng)
    expected = transformer_block(
        x.astype("float64"), block_weights(block), padding, block.layer_norm_epsilon
    )
    out = _np(block(x, padding_mask=padding, training=False))
    # Padding rows too: they attend to nothing (zero attention output).
    np.testing.assert_allclose(out, expected, rtol=RTOL, atol=ATOL)
    last = _np(block(x, padding_mask=padding, last_position_only=True))
    np.testing.assert_allclose(last, expected[:, -1:], rtol=RTOL, atol=ATOL)
    # A Keras mask is the padding mask when none is given.
    masked = _np(block(x, mask=padding))
    np.testing.assert_allclose(masked, expected, rtol=RTOL, atol=ATOL)


def test_transformer_block_without_padding_is_causal_attention():
    block = TransformerBlock(2, intermediate_dim=6)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 5, 4)).astype("float32")
    block.build(x.shape)
    _randomize(block, rng)
    expected = transformer_block(
        x.astype("float64"), block_weights(block), np.ones((2, 5), bool), 1e-12
    )
    np.testing.assert_allclose(_np(block(x)), expected, rtol=RTOL, atol=ATOL)


def _sasrec(anchor="end", **kwargs):
    model = SASRec(
        num_items=30,
        max_len=7,
        hidden_dim=8,
        num_blocks=2,
        num_heads=2,
        intermediate_dim=12,
        dropout=0.3,
        position_anchor=anchor,
        **kwargs,
    )
    _randomize(model, np.random.default_rng(3))
    return model


@pytest.mark.parametrize("anchor", ["end", "start"])
@pytest.mark.parametrize("length", [7, 5])
def test_sasrec_forward_matches_numpy_reference(anchor, length):
    model = _sasrec(anchor)
    ids = _ids(model.num_items, length)
    expected = sasrec_forward(model, ids)
    out = _np(model(ids, training=False))
    np.testing.assert_allclose(out, expected, rtol=RTOL, atol=ATOL)
    last = _np(model(ids, training=False, last_position_only=True))
    np.testing.assert_allclose(last, expected[:, -1:], rtol=RTOL, atol=ATOL)
    table = _np(model.item_embedding.embeddings)
    expected_scores = scores(expected[:, -1], table)
    np.testing.assert_allclose(
        _np(model.score(ids)), expected_scores, rtol=RTOL, atol=1e-4
    )
    np.testing.assert_allclose(
        _np(model.logits(model(ids, training=False))),
        scores(expected, table),
        rtol=RTOL,
        atol=1e-4,
    )
    # recommend: the best unseen items of the reference scores.
    ranked = expected_scores.copy()
    for row, history in enumerate(ids):
        ranked[row, history] = -np.inf
    top, top_scores = model.recommend(ids, k=3)
    np.testing.assert_array_equal(top, np.argsort(-ranked, axis=1)[:, :3])
    np.testing.assert_allclose(
        top_scores, np.sort(ranked, axis=1)[:, ::-1][:, :3], rtol=RTOL, atol=1e-4
    )


def test_sasrec_with_one_block_and_one_head_matches_numpy_reference():
    model = SASRec(
        num_items=12, max_len=4, hidden_dim=4, num_blocks=1, num_heads=1, dropout=0.0
    )
    _randomize(model, np.random.default_rng(4))
    ids = _ids(model.num_items, 4, seed=1)
    np.testing.assert_allclose(
        _np(model(ids, training=False)),
        sasrec_forward(model, ids),
        rtol=RTOL,
        atol=ATOL,
    )


def _fame(attention_residual=True, num_blocks=2, num_experts=3):
    model = FAME(
        num_items=30,
        num_experts=num_experts,
        max_len=7,
        hidden_dim=8,
        num_blocks=num_blocks,
        num_heads=2,
        intermediate_dim=12,
        dropout=0.3,
        attention_residual=attention_residual,
    )
    _randomize(model, np.random.default_rng(5))
    return model


@pytest.mark.parametrize(
    "attention_residual, num_blocks, num_experts",
    [(True, 2, 3), (False, 2, 3), (True, 1, 2), (True, 2, 1)],
)
def test_fame_forward_matches_numpy_reference(
    attention_residual, num_blocks, num_experts
):
    model = _fame(attention_residual, num_blocks, num_experts)
    ids = _ids(model.num_items, 6)
    ref = fame_forward(model, ids)
    out = _np(model(ids, training=False))
    np.testing.assert_allclose(out, ref["vectors"], rtol=RTOL, atol=ATOL)
    last = _np(model(ids, training=False, last_position_only=True))
    np.testing.assert_allclose(last, ref["vectors"][:, -1:], rtol=RTOL, atol=ATOL)
    expected_scores = ref["scores"][:, -1].copy()
    expected_scores[:, 0] = -1e9
    np.testing.assert_allclose(
        _np(model.score(ids)), expected_scores, rtol=RTOL, atol=1e-4
    )
    facets = model.facet_weights(ids, all_positions=True)
    real = ids != 0
    np.testing.assert_allclose(facets["gate"][real], ref["gate"][real], atol=ATOL)
    np.testing.assert_allclose(facets["routing"][real], ref["routing"][real], atol=ATOL)
    # explain: every head's list is the best unseen items of that head's
    # reference scores, and the final list those of the gated scores.
    explained = model.explain(ids, k=4)
    np.testing.assert_allclose(explained["gate"], ref["gate"][:, -1], atol=ATOL)
    head_scores = ref["head_scores"][:, -1].copy()  # (B, H, C)
    head_scores[..., 0] = -np.inf
    final = expected_scores.copy()
    for row, history in enumerate(ids):
        head_scores[row, :, history] = -np.inf
        final[row, history] = -np.inf
    np.testing.assert_array_equal(
        explained["head_top_ids"], np.argsort(-head_scores, axis=-1)[..., :4]
    )
    np.testing.assert_allclose(
        explained["head_top_scores"],
        -np.sort(-head_scores, axis=-1)[..., :4],
        rtol=RTOL,
        atol=1e-4,
    )
    np.testing.assert_array_equal(
        explained["top_ids"], np.argsort(-final, axis=-1)[:, :4]
    )
