import keras
import numpy as np
import pytest
from keras import ops

from keras_fame.layers import MoEQueryAttention
from keras_fame.layers import moe_query_attention as moe_module
from keras_fame.layers.moe_query_attention import routing_loss as layer_routing_loss
from tests.reference import moe_query_attention, routing_loss


def _layer_with_random_weights(
    num_heads, num_experts, hidden_dim, use_bias=False, seed=0
):
    layer = MoEQueryAttention(num_heads, num_experts, use_bias=use_bias)
    layer.build((None, None, hidden_dim))
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        weight.assign(rng.normal(0, 0.5, size=weight.shape).astype("float32"))
    return layer


def _numpy(layer, x, padding=None, causal=True, return_experts=False):
    get = lambda w: None if w is None else ops.convert_to_numpy(w)  # noqa: E731
    return moe_query_attention(
        x,
        get(layer.query_kernel),
        get(layer.key_kernel),
        get(layer.value_kernel),
        get(layer.router_kernel),
        get(layer.query_bias),
        get(layer.key_bias),
        get(layer.value_bias),
        padding=padding,
        causal=causal,
        return_experts=return_experts,
    )


@pytest.mark.parametrize(
    "num_heads,num_experts,use_bias", [(2, 3, False), (1, 4, True), (4, 1, True)]
)
def test_matches_numpy_reference(num_heads, num_experts, use_bias):
    layer = _layer_with_random_weights(num_heads, num_experts, 8, use_bias)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 6, 8)).astype("float32")
    padding = np.ones((2, 6), bool)
    padding[1, :2] = False
    out, routing = layer(x, padding_mask=padding, return_routing=True)
    ref_out, ref_routing = _numpy(layer, x, padding)
    np.testing.assert_allclose(ops.convert_to_numpy(out), ref_out, atol=1e-5)
    # Routing at padding positions is meaningless (their output is zero).
    np.testing.assert_allclose(
        ops.convert_to_numpy(routing)[padding], ref_routing[padding], atol=1e-5
    )
    np.testing.assert_array_equal(ops.convert_to_numpy(out)[~padding], 0.0)


@pytest.mark.parametrize("last_position_only", [False, True])
def test_experts_match_numpy_reference(last_position_only):
    layer = _layer_with_random_weights(2, 3, 8, use_bias=True)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 6, 8)).astype("float32")
    padding = np.ones((2, 6), bool)
    padding[1, :2] = False
    out = layer.experts(x, padding_mask=padding, last_position_only=last_position_only)
    ref_out, ref_routing, ref_experts = _numpy(layer, x, padding, return_experts=True)
    if last_position_only:
        ref_out, ref_routing = ref_out[:, -1:], ref_routing[:, -1:]
        ref_experts, padding = ref_experts[:, -1:], padding[:, -1:]
    experts = ops.convert_to_numpy(out["expert_outputs"])
    assert experts.shape == ref_experts.shape
    np.testing.assert_allclose(experts, ref_experts, atol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(out["outputs"]), ref_out, atol=1e-5)
    np.testing.assert_allclose(
        ops.convert_to_numpy(out["routing"])[padding], ref_routing[padding], atol=1e-5
    )


def test_experts_ignore_dropout():
    layer = MoEQueryAttention(2, 2, dropout=0.9)
    x = np.random.default_rng(4).normal(size=(2, 5, 8)).astype("float32")
    out = layer.experts(x)
    np.testing.assert_allclose(
        ops.convert_to_numpy(out["outputs"]),
        ops.convert_to_numpy(layer(x, training=False)),
        atol=1e-6,
    )


def test_non_causal_matches_reference():
    layer = _layer_with_random_weights(2, 2, 8)
    x = np.random.default_rng(2).normal(size=(1, 5, 8)).astype("float32")
    out = layer(x, use_causal_mask=False)
    ref_out, _ = _numpy(layer, x, causal=False)
    np.testing.assert_allclose(ops.convert_to_numpy(out), ref_out, atol=1e-5)


def test_weight_names_and_shapes():
    layer = MoEQueryAttention(num_heads=2, num_experts=3)
    layer.build((None, 5, 8))
    assert tuple(layer.query_kernel.shape) == (8, 2, 3, 4)
    assert tuple(layer.key_kernel.shape) == (8, 2, 4)
    assert tuple(layer.value_kernel.shape) == (8, 2, 4)
    assert tuple(layer.router_kernel.shape) == (2, 3 * 4, 3)
    assert len(layer.trainable_weights) == 4


def test_one_expert_is_plain_multi_head_attention():
    """N=1 equals Keras' MultiHeadAttention with an identity output projection."""
    hidden, heads = 8, 2
    layer = _layer_with_random_weights(heads, 1, hidden, use_bias=True)
    mha = keras.layers.MultiHeadAttention(heads, hidden // heads)
    x = np.random.default_rng(3).normal(size=(2, 5, hidden)).astype("float32")
    mha(x, x)
    get = ops.convert_to_numpy
    eye = np.eye(hidden, dtype="float32").reshape(heads, hidden // heads, hidden)
    mha.set_weights(
        [
            get(layer.query_kernel)[:, :, 0],
            get(layer.query_bias)[:, 0],
            get(layer.key_kernel),
            get(layer.key_bias),
            get(layer.value_kernel),
            get(layer.value_bias),
            eye,
            np.zeros(hidden, "float32"),
        ]
    )
    expected = ops.convert_to_numpy(mha(x, x, use_causal_mask=True))
    out, routing = layer(x, return_routing=True)
    out = ops.convert_to_numpy(out).reshape(2, 5, hidden)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    np.testing.assert_array_equal(ops.convert_to_numpy(routing), 1.0)


def test_causality():
    layer = _layer_with_random_weights(2, 4, 8)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1, 7, 8)).astype("float32")
    changed = x.copy()
    changed[:, 4:] = rng.normal(size=(1, 3, 8))
    a = ops.convert_to_numpy(layer(x))
    b = ops.convert_to_numpy(layer(changed))
    np.testing.assert_allclose(a[:, :4], b[:, :4], atol=1e-6)
    assert not np.allclose(a[:, 4:], b[:, 4:])


def test_left_padding_does_not_change_real_positions():
    layer = _layer_with_random_weights(2, 3, 8)
    rng = np.random.default_rng(5)
    real = rng.normal(size=(1, 4, 8)).astype("float32")
    padded = np.concatenate(
        [rng.normal(size=(1, 3, 8)).astype("float32"), real], axis=1
    )
    mask = np.array([[False] * 3 + [True] * 4])
    a, ra = layer(real, return_routing=True)
    b, rb = layer(padded, padding_mask=mask, return_routing=True)
    np.testing.assert_allclose(
        ops.convert_to_numpy(b)[:, 3:], ops.convert_to_numpy(a), atol=1e-5
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(rb)[:, 3:], ops.convert_to_numpy(ra), atol=1e-5
    )
    np.testing.assert_array_equal(ops.convert_to_numpy(b)[:, :3], 0.0)


def test_keras_mask_is_honoured():
    layer = _layer_with_random_weights(2, 2, 8)
    ids = np.array([[0, 0, 3, 5, 2]])
    embedding = keras.layers.Embedding(10, 8, mask_zero=True)
    x = embedding(ids)
    implicit = layer(x)  # the Keras mask travels with x
    explicit = layer(x, padding_mask=ids != 0)
    np.testing.assert_allclose(
        ops.convert_to_numpy(implicit), ops.convert_to_numpy(explicit)
    )


@pytest.mark.parametrize("causal", [True, False])
def test_routing_of_many_experts_matches_numpy_reference(causal):
    layer = _layer_with_random_weights(2, 5, 8)
    x = np.random.default_rng(6).normal(size=(3, 6, 8)).astype("float32")
    out, routing = layer(x, use_causal_mask=causal, return_routing=True)
    routing = ops.convert_to_numpy(routing)
    assert routing.shape == (3, 6, 2, 5)
    ref_out, ref_routing = _numpy(layer, x, causal=causal)
    np.testing.assert_allclose(routing, ref_routing, atol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(out), ref_out, atol=1e-5)


def test_config_round_trip():
    layer = MoEQueryAttention(
        num_heads=2, num_experts=3, dropout=0.1, use_bias=True, name="moe"
    )
    clone = MoEQueryAttention.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(restored, MoEQueryAttention)
    assert restored.num_experts == 3 and restored.use_bias


def test_symbolic_shape_matches_eager():
    layer = MoEQueryAttention(num_heads=2, num_experts=3)
    x = keras.Input((5, 8))
    symbolic, routing = layer(x, return_routing=True)
    assert symbolic.shape == (None, 5, 2, 4)
    assert routing.shape == (None, 5, 2, 3)
    eager = layer(np.zeros((3, 5, 8), "float32"))
    assert eager.shape == (3, 5, 2, 4)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"num_heads": 2, "num_experts": 0}, "num_experts"),
        ({"num_heads": 0, "num_experts": 2}, "num_heads"),
        ({"num_heads": 2, "num_experts": 2, "dropout": 1.5}, "dropout"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MoEQueryAttention(**kwargs)


def test_non_divisible_hidden_dim():
    with pytest.raises(
        ValueError, match="divisible by `num_heads`.*hidden_dim=10, num_heads=4"
    ):
        MoEQueryAttention(num_heads=4, num_experts=2)(np.zeros((1, 3, 10), "float32"))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_softmaxes_stay_finite(policy):
    layer = MoEQueryAttention(num_heads=2, num_experts=3, dtype=policy)
    x = (np.random.default_rng(7).normal(size=(2, 6, 8)) * 300).astype("float32")
    padding = np.ones((2, 6), bool)
    padding[0, :5] = False
    out, routing = layer(x, padding_mask=padding, return_routing=True)
    assert out.dtype == policy.split("_")[1]
    assert np.isfinite(ops.convert_to_numpy(ops.cast(out, "float32"))).all()
    routing = ops.convert_to_numpy(ops.cast(routing, "float32"))
    assert np.isfinite(routing).all()
    np.testing.assert_allclose(routing.sum(-1), 1.0, atol=1e-2)


def test_dropout_only_in_training():
    layer = _layer_with_random_weights(2, 2, 8)
    layer_drop = MoEQueryAttention(2, 2, dropout=0.5)
    layer_drop.build((None, None, 8))
    layer_drop.set_weights(layer.get_weights())
    x = np.random.default_rng(8).normal(size=(2, 6, 8)).astype("float32")
    np.testing.assert_allclose(
        ops.convert_to_numpy(layer_drop(x, training=False)),
        ops.convert_to_numpy(layer(x)),
        atol=1e-6,
    )
    assert not np.allclose(
        ops.convert_to_numpy(layer_drop(x, training=True)),
        ops.convert_to_numpy(layer(x)),
    )


@pytest.mark.parametrize("num_heads,num_experts", [(2, 3), (4, 1)])
def test_last_position_only_is_the_references_last_position(num_heads, num_experts):
    layer = _layer_with_random_weights(num_heads, num_experts, 8, use_bias=True)
    x = np.random.default_rng(3).normal(size=(3, 7, 8)).astype("float32")
    padding = np.ones((3, 7), bool)
    padding[1, :4] = False
    padding[2, :6] = False  # one real item: it attends to itself only
    out, routing = layer(
        x, padding_mask=padding, return_routing=True, last_position_only=True
    )
    assert tuple(out.shape) == (3, 1, num_heads, 8 // num_heads)
    assert tuple(routing.shape) == (3, 1, num_heads, num_experts)
    ref_out, ref_routing = _numpy(layer, x, padding)
    np.testing.assert_allclose(ops.convert_to_numpy(out), ref_out[:, -1:], atol=1e-5)
    np.testing.assert_allclose(
        ops.convert_to_numpy(routing), ref_routing[:, -1:], atol=1e-5
    )
    symbolic = layer(keras.Input((7, 8)), last_position_only=True)
    assert symbolic.shape == (None, 1, num_heads, 8 // num_heads)


def test_routing_loss_matches_numpy_reference():
    layer = _layer_with_random_weights(2, 3, 8)
    layer.routing_loss_weight = 0.7
    x = np.random.default_rng(11).normal(size=(3, 6, 8)).astype("float32")
    padding = np.ones((3, 6), bool)
    padding[0, :4] = False
    padding[2, :1] = False
    _, routing = layer(x, padding_mask=padding, training=True, return_routing=True)
    (loss,) = layer.losses
    expected = 0.7 * routing_loss(ops.convert_to_numpy(routing), padding)
    assert expected < 0  # the random router routes positions differently
    np.testing.assert_allclose(ops.convert_to_numpy(loss), expected, rtol=1e-4)
    # With the last position only, the loss counts those positions.
    layer(x, padding_mask=padding, training=True, last_position_only=True)
    (loss,) = layer.losses
    _, routing = layer(x, padding_mask=padding, return_routing=True)
    expected = 0.7 * routing_loss(
        ops.convert_to_numpy(routing)[:, -1:], padding[:, -1:]
    )
    np.testing.assert_allclose(ops.convert_to_numpy(loss), expected, rtol=1e-4)


def test_routing_loss_extremes():
    # Every position routes alike: no information, loss 0.
    even = np.full((2, 3, 1, 4), 0.25, "float32")
    np.testing.assert_allclose(
        ops.convert_to_numpy(layer_routing_loss(even)), 0.0, atol=1e-6
    )
    # Each position picks one expert, each expert picked as often: -1.
    one_hot = np.eye(4, dtype="float32")[[0, 1, 2, 3, 0, 1, 2, 3]]
    one_hot = one_hot.reshape(2, 4, 1, 4)
    np.testing.assert_allclose(
        ops.convert_to_numpy(layer_routing_loss(one_hot)), -1.0, atol=1e-6
    )
    # Masked positions do not count: two real positions on experts 0 and 1
    # use half the experts, -log 2 / log 4.
    padding = np.zeros((2, 4), bool)
    padding[0, :2] = True
    np.testing.assert_allclose(
        ops.convert_to_numpy(layer_routing_loss(one_hot, padding)), -0.5, atol=1e-6
    )


def test_routing_loss_only_when_asked():
    x = np.random.default_rng(12).normal(size=(2, 5, 8)).astype("float32")
    for layer, training in [
        (MoEQueryAttention(2, 3, routing_loss_weight=0.5), False),
        (MoEQueryAttention(2, 3), True),
        (MoEQueryAttention(2, 1, routing_loss_weight=0.5), True),
    ]:
        layer(x, training=training)
        assert layer.losses == []
    with pytest.raises(ValueError, match="routing_loss_weight"):
        MoEQueryAttention(2, 3, routing_loss_weight=-0.1)
    layer = MoEQueryAttention(2, 3, routing_loss_weight=0.25)
    config = layer.get_config()
    assert MoEQueryAttention.from_config(config).routing_loss_weight == 0.25
    # Configs saved before the option existed load without it.
    del config["routing_loss_weight"]
    assert MoEQueryAttention.from_config(config).routing_loss_weight == 0.0
    with pytest.raises(ValueError, match="at least 2 experts"):
        layer_routing_loss(np.ones((2, 3, 2, 1), "float32"))


def test_routing_loss_is_float32_under_mixed_precision(monkeypatch):
    x = np.random.default_rng(13).normal(size=(2, 5, 8)).astype("float32")
    layers = [
        MoEQueryAttention(2, 3, routing_loss_weight=1.0, dtype=policy)
        for policy in ("float32", "mixed_bfloat16")
    ]
    for layer in layers:
        layer.build(x.shape)
    layers[0].router_kernel.assign(
        np.random.default_rng(14).normal(0, 2.0, size=layers[0].router_kernel.shape)
    )
    layers[1].set_weights(layers[0].get_weights())
    losses = []
    for layer in layers:
        layer(x, training=True)
        (loss,) = layer.losses
        assert loss.dtype == "float32"
        losses.append(ops.convert_to_numpy(loss))
    # bfloat16 activations (8 bits of mantissa) move the router's logits, so
    # the two losses differ; the mixed layer's loss must be that of its own
    # float32 router softmax, not of the bfloat16 routing it returns.
    np.testing.assert_allclose(losses[1], losses[0], rtol=0.05)
    seen = []

    def recording_loss(routing, padding_mask=None):
        seen.append(routing)
        return layer_routing_loss(routing, padding_mask)

    monkeypatch.setattr(moe_module, "routing_loss", recording_loss)
    layers[1](x, training=True)
    routing = ops.convert_to_numpy(seen[0]).astype("float64")
    rounded = ops.cast(ops.cast(seen[0], "bfloat16"), "float32")
    rounded = ops.convert_to_numpy(rounded).astype("float64")
    assert not np.array_equal(routing, rounded)  # not bfloat16 values
    padding = np.ones(x.shape[:2], bool)
    expected = routing_loss(routing, padding)
    np.testing.assert_allclose(losses[1], expected, rtol=1e-5)
    # The loss of the bfloat16-rounded routing lies beyond that tolerance.
    assert abs(routing_loss(rounded, padding) - expected) > 1e-5 * abs(expected)
