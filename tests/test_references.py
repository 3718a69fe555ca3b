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
from keras import ops
from scipy.special import erf

from keras_fame.layers import TransformerBlock
from keras_fame.models import FAME, SASRec
from tests.reference import facet_gated_scores, moe_query_attention, softmax

RTOL = ATOL = 1e-5


def _np(x):
    return np.asarray(ops.convert_to_numpy(x), "float64")


def _weights(layer):
    """`{name: float64 array}` of `layer`'s weights, by their own names."""
    return {w.path.split("/")[-1]: _np(w) for w in layer.weights}


def _randomize(layer, rng, scale=0.4):
    """Weights far from their initial values (non-zero biases, LayerNorm
    gains away from 1), so that every term shows in the output."""
    for weight in layer.trainable_weights:
        base = 1.0 if weight.path.endswith("gamma") else 0.0
        value = base + rng.normal(0.0, scale, size=weight.shape)
        weight.assign(value.astype("float32"))


def gelu(x):
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def relu(x):
    return np.maximum(x, 0.0)


def layer_norm(x, weights, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weights["gamma"] + weights["beta"]


def multi_head_attention(x, attention, padding):
    """Causal multi-head self-attention, per head: `softmax(q k^T / sqrt(k))
    v` over the real positions up to the query's, zero at padding queries.

    x (B, L, d); `attention` the weights of the one-expert
    `MoEQueryAttention`. Returns (B, L, H, k).
    """
    wq = attention["query_kernel"][:, :, 0]  # (d, H, k)
    bq = attention["query_bias"][:, 0]  # (H, k)
    q = np.einsum("bld,dhk->bhlk", x, wq) + bq[None, :, None]
    k = np.einsum("bld,dhk->bhlk", x, attention["key_kernel"])
    k = k + attention["key_bias"][None, :, None]
    v = np.einsum("bld,dhk->bhlk", x, attention["value_kernel"])
    v = v + attention["value_bias"][None, :, None]
    length, head_dim = x.shape[1], q.shape[-1]
    logits = q @ np.swapaxes(k, -1, -2) / np.sqrt(head_dim)  # (B, H, L, L)
    causal = np.tril(np.ones((length, length), bool))
    allowed = causal[None, None] & padding[:, None, None, :]
    probs = softmax(np.where(allowed, logits, -np.inf))
    probs = np.nan_to_num(probs)  # left-padding queries see no key at all
    out = (probs @ v).transpose(0, 2, 1, 3)  # (B, L, H, k)
    return out * padding[:, :, None, None]


def transformer_block(x, weights, padding, eps):
    """SASRec's post-LayerNorm block on (B, L, d) with weights by name."""
    heads = multi_head_attention(x, weights["attention"], padding)
    attended = np.einsum("blhk,hkd->bld", heads, weights["output_kernel"])
    y = layer_norm(
        x + attended + weights["output_bias"], weights["attention_norm"], eps
    )
    inner, outer = weights["ffn_inner"], weights["ffn_outer"]
    ffn = gelu(y @ inner["kernel"] + inner["bias"]) @ outer["kernel"] + outer["bias"]
    return layer_norm(y + ffn, weights["ffn_norm"], eps)


def block_weights(block):
    weights = {
        "output_kernel": _np(block.output_kernel),
        "output_bias": _np(block.output_bias),
    }
    for name in ("attention", "attention_norm", "ffn_inner", "ffn_outer", "ffn_norm"):
        weights[name] = _weights(getattr(block, name))
    return weights


def fame_block(x, block, padding, eps):
    """FAME's block: Eqs. 12-17 (`tests/reference.py`), the attention
    residual and LayerNorm per head (when the block has them), Eq. 7's FFN'."""
    a = _weights(block.attention)
    heads, routing = moe_query_attention(
        x,
        a["query_kernel"],
        a["key_kernel"],
        a["value_kernel"],
        a.get("router_kernel"),
        a["query_bias"],
        a["key_bias"],
        a["value_bias"],
        padding=padding,
    )
    b_size, length, _, head_dim = heads.shape
    z = heads
    if block.attention_residual:
        x_heads = x.reshape(b_size, length, -1, head_dim)
        z = layer_norm(x_heads + heads, _weights(block.attention_norm), eps)
    inner, outer = _weights(block.ffn_inner), _weights(block.ffn_outer)
    ffn = relu(z @ inner["kernel"] + inner["bias"]) @ outer["kernel"] + outer["bias"]
    return layer_norm(z + ffn, _weights(block.ffn_norm), eps), routing


def embed(model, ids):
    """Item + position embedding, then the embedding LayerNorm."""
    table = _np(model.item_embedding.embeddings)
    positions = _np(model.position_embedding.embeddings)
    max_len, length = len(positions), ids.shape[1]
    if model.position_anchor == "end":
        position_ids = np.broadcast_to(np.arange(max_len - length, max_len), ids.shape)
    else:
        first = np.array([np.flatnonzero(row)[0] if row.any() else 0 for row in ids])
        position_ids = np.clip(np.arange(length)[None] - first[:, None], 0, None)
    x = table[ids] + positions[position_ids]
    return layer_norm(x, _weights(model.embedding_norm), model.layer_norm_epsilon)


def scores(vectors, table):
    """`vectors . E^T` with the padding column at -1e9."""
    out = vectors @ table.T
    out[..., 0] = -1e9
    return out


def sasrec_forward(model, ids):
    """SASRec's last-block output (B, L, d) for `ids`."""
    padding = ids != 0
    x = embed(model, ids)
    for block in model.blocks:
        x = transformer_block(
            x, block_weights(block), padding, model.layer_norm_epsilon
        )
    return x


def fame_forward(model, ids):
    """FAME's scoring vectors (B, L, d), gate (B, L, H), routing and head
    scores (B, L, H, C)."""
    padding = ids != 0
    eps = model.layer_norm_epsilon
    x = embed(model, ids)
    for block in model.blocks:
        x = transformer_block(x, block_weights(block), padding, eps)
    states, routing = fame_block(x, model.fame_block, padding, eps)
    s = _weights(model.scorer)
    b_size, length, heads, head_dim = states.shape
    table = _np(model.item_embedding.embeddings)
    final, gate, head_scores = facet_gated_scores(
        states.reshape(-1, heads, head_dim),
        table,
        s["facet_kernel"],
        s["gate_kernel"],
        s["gate_bias"],
    )
    # The scoring vector: final = vector . E^T for every item, so solve it
    # from the per-head queries (sum_h g_h W_f^(h) F^(h)).
    vectors = np.einsum(
        "nh,nhk,hdk->nd", gate, states.reshape(-1, heads, head_dim), s["facet_kernel"]
    )
    np.testing.assert_allclose(vectors @ table.T, final, rtol=1e-9, atol=1e-9)
    return {
        "vectors": vectors.reshape(b_size, length, -1),
        "gate": gate.reshape(b_size, length, heads),
        "routing": routing,
        "head_scores": head_scores.reshape(b_size, length, heads, -1),
        "scores": final.reshape(b_size, length, -1),
    }


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
