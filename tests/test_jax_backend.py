"""The layers and models are keras.ops only: they must run on the JAX backend."""

import importlib.util
import textwrap

import pytest

from tests.reference import run_on_jax

SCRIPT = textwrap.dedent(
    """
    import numpy as np
    import keras
    from keras import ops
    assert keras.backend.backend() == "jax"
    from keras_fame.layers import MoEQueryAttention, FacetGatedScorer
    from keras_fame.models import FAME
    from tests.reference import (
        moe_query_attention, facet_gated_scores, routing_loss, history_excluded_loss)

    rng = np.random.default_rng(0)
    layer = MoEQueryAttention(2, 3)
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    out, routing = layer(x, return_routing=True)
    g = ops.convert_to_numpy
    ref, ref_routing = moe_query_attention(
        x, g(layer.query_kernel), g(layer.key_kernel), g(layer.value_kernel),
        g(layer.router_kernel))
    np.testing.assert_allclose(g(out), ref, atol=1e-5)
    np.testing.assert_allclose(g(routing), ref_routing, atol=1e-5)
    _, _, ref_experts = moe_query_attention(
        x, g(layer.query_kernel), g(layer.key_kernel), g(layer.value_kernel),
        g(layer.router_kernel), return_experts=True)
    np.testing.assert_allclose(g(layer.experts(x)["expert_outputs"]), ref_experts, atol=1e-5)
    # A router far from uniform, so that the loss is well above round-off.
    layer.router_kernel.assign(rng.normal(0, 2.0, size=layer.router_kernel.shape))
    layer.routing_loss_weight = 0.5
    _, routing = layer(x, training=True, return_routing=True)
    np.testing.assert_allclose(
        g(layer.losses[0]), 0.5 * routing_loss(g(routing), np.ones((2, 5), bool)),
        rtol=1e-4)

    scorer = FacetGatedScorer(2)
    states = rng.normal(size=(3, 2, 4)).astype("float32")
    items = rng.normal(size=(7, 8)).astype("float32")
    scores = scorer(states, items)
    ref_scores, _, _ = facet_gated_scores(
        states, items, g(scorer.facet_kernel), g(scorer.gate_kernel), g(scorer.gate_bias))
    np.testing.assert_allclose(g(scores), ref_scores, rtol=1e-4, atol=1e-4)

    # The in-process tests are seeded by conftest.py; this subprocess is not.
    keras.utils.set_random_seed(0)
    # hidden_dim=32, not 8: at the default dropout 0.5 the embedding dropout
    # zeroes all 8 features of a row's first item with probability 2**-8;
    # that item attends only to itself and the biases start at zero, so the
    # block's LayerNorm inputs there are exactly zero. Its gradient passes
    # four LayerNorms of a zero vector, each multiplying it by 1/sqrt(1e-12),
    # and Adam's squared gradient overflows: a NaN weight in a few runs in a
    # hundred (a probe of these steps: 5 of 210). With 32 features the chance
    # is 2**-32 a position.
    model = FAME(num_items=20, num_experts=2, max_len=6, hidden_dim=32, num_heads=2)
    ids = rng.integers(1, 21, size=(4, 6)).astype("int32")
    ids[:, :2] = 0
    targets = np.roll(ids, -1, axis=1)
    targets[ids == 0] = 0
    model.compile(optimizer="adam")
    loss = model.fit(ids, targets, epochs=2, verbose=0).history["loss"]
    assert np.isfinite(loss).all()
    assert model.recommend(ids, k=3)[0].shape == (4, 3)
    np.testing.assert_allclose(
        g(model(ids, last_position_only=True)), g(model(ids))[:, -1:], atol=1e-5)
    # One target per row (prefix rows): the item after each row.
    row_targets = rng.integers(1, 21, size=4).astype("int32")
    loss = model.fit(ids, row_targets, epochs=1, verbose=0).history["loss"]
    assert np.isfinite(loss).all()
    # The routing loss reaches the loss of a JAX training step: no dropout and
    # no update (rate 0), so the two losses differ by exactly the routing loss.
    plain = FAME(num_items=20, num_experts=2, max_len=6, hidden_dim=32, dropout=0.0)
    router = plain.fame_block.attention.router_kernel
    router.assign(rng.normal(0, 2.0, size=router.shape))
    weighted = FAME.from_config(dict(plain.get_config(), routing_loss_weight=1.0))
    weighted.set_weights(plain.get_weights())
    losses = []
    for m in (plain, weighted):
        m.compile(optimizer=keras.optimizers.SGD(0.0))
        losses.append(m.fit(ids, targets, batch_size=4, epochs=1, verbose=0).history["loss"][0])
    routing = weighted.facet_weights(ids, all_positions=True)["routing"]
    expected = routing_loss(routing, ids > 0)
    assert expected < -0.01
    np.testing.assert_allclose(losses[1] - losses[0], expected, rtol=1e-3, atol=1e-5)
    # The softmax without the history (static shapes: every position scored,
    # the padding ones weighted 0) against the NumPy reference, both forms.
    masked = FAME.from_config(dict(plain.get_config(), loss_excludes_history=True))
    masked.set_weights(plain.get_weights())
    vectors = g(masked(ids))
    table = g(masked.item_embedding.embeddings)[1:]
    where = list(zip(*np.nonzero(targets)))
    expected = history_excluded_loss(
        table, [vectors[b, t] for b, t in where], [ids[b, :t + 1] for b, t in where],
        [targets[b, t] for b, t in where])
    np.testing.assert_allclose(
        g(masked.compute_loss(ids, targets, masked(ids))), expected, rtol=1e-5)
    expected = history_excluded_loss(table, vectors[:, -1], ids, row_targets)
    np.testing.assert_allclose(
        g(masked.compute_loss(ids, row_targets, masked(ids, last_position_only=True))),
        expected, rtol=1e-5)
    smoothed = FAME.from_config(dict(masked.get_config(), label_smoothing=0.2))
    smoothed.set_weights(plain.get_weights())
    expected = history_excluded_loss(table, vectors[:, -1], ids, row_targets, 0.2)
    np.testing.assert_allclose(
        g(smoothed.compute_loss(ids, row_targets, smoothed(ids, last_position_only=True))),
        expected, rtol=1e-5)
    masked.compile(optimizer="adam")
    loss = masked.fit(ids, row_targets, epochs=1, verbose=0).history["loss"]
    assert np.isfinite(loss).all()
    print("JAX OK")
    """
)


@pytest.mark.skipif(
    importlib.util.find_spec("jax") is None, reason="jax is not installed"
)
def test_layers_and_model_run_on_jax():
    result = run_on_jax(SCRIPT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "JAX OK" in result.stdout
