"""The fused full-softmax cross-entropy against a NumPy reference.

`full_softmax_cross_entropy` (and the model loss built on it) must give the
reference loss and the reference gradients of the scoring vectors and of the
item table: with padded rows (weight 0), with history exclusions (repeats,
padding ids, a target that was read before), with label smoothing, in mixed
precision, on TensorFlow and (in a subprocess) on JAX.
"""

import importlib.util

import keras
import numpy as np
import pytest
from keras import ops

from keras_fame.models import FAME, SASRec
from keras_fame.models.base import _without_padding_row, full_softmax_cross_entropy
from tests.reference import run_on_jax


def reference_loss_and_gradients(vectors, items, labels, weights, seen=None, eps=0.0):
    """NumPy float64: `sum_r w_r loss_r` and its gradients `(d_vectors, d_items)`.

    Row `r`'s candidates are all items but those of `seen[r]` (ids, 0 = none)
    other than its target; its target distribution is `1 - eps` on the
    target plus `eps` spread evenly over the candidates.
    """
    vectors = np.asarray(vectors, "float64")
    items = np.asarray(items, "float64")
    num_items = len(items)
    total = 0.0
    d_logits = np.zeros((len(vectors), num_items))
    for r, (vector, label, weight) in enumerate(
        zip(vectors, labels, weights, strict=True)
    ):
        candidates = np.ones(num_items, bool)
        if seen is not None:
            for item in seen[r]:
                if item and item - 1 != label:
                    candidates[item - 1] = False
        logits = items @ vector
        top = logits[candidates].max()
        log_z = top + np.log(np.exp(logits[candidates] - top).sum())
        target = np.zeros(num_items)
        target[candidates] = eps / candidates.sum()
        target[label] += 1.0 - eps
        log_p = np.where(candidates, logits - log_z, 0.0)
        total += weight * -(target * log_p).sum()
        softmax = np.where(candidates, np.exp(logits - log_z), 0.0)
        d_logits[r] = weight * (softmax - target)
    return total, d_logits @ items, d_logits.T @ vectors


def _loss_and_gradients(fn, vectors, items):
    """`fn(vectors, items)` (a scalar) and its gradients, on this backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        vectors, items = tf.constant(vectors), tf.constant(items)
        with tf.GradientTape() as tape:
            tape.watch([vectors, items])
            loss = fn(vectors, items)
        grads = tape.gradient(loss, [vectors, items], unconnected_gradients="zero")
    elif backend == "jax":
        import jax

        loss, grads = jax.value_and_grad(fn, argnums=(0, 1))(
            jax.numpy.asarray(vectors), jax.numpy.asarray(items)
        )
    else:
        pytest.skip(f"no gradient helper for backend {backend}")
    return ops.convert_to_numpy(loss), [ops.convert_to_numpy(g) for g in grads]


def _random_case(seed, rows=7, num_items=40, dim=8, length=6):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(0, 1.0, size=(rows, dim)).astype("float32")
    items = rng.normal(0, 1.0, size=(num_items, dim)).astype("float32")
    labels = rng.integers(0, num_items, size=rows).astype("int32")
    # A history per row: padding, repeats, and (row 0) the target itself.
    seen = rng.integers(1, 8, size=(rows, length)).astype("int32")
    seen[:, :2] = 0
    seen[0, -1] = labels[0] + 1
    seen[1, 3] = seen[1, 4]
    weights = rng.uniform(0.5, 2.0, size=rows).astype("float32")
    weights[-2:] = 0.0  # padded rows of a static-shape batch
    return vectors, items, labels, seen, weights


CASES = [
    pytest.param(None, 0.0, id="plain"),
    pytest.param(None, 0.3, id="smoothed"),
    pytest.param("seen", 0.0, id="excluded"),
    pytest.param("seen", 0.3, id="excluded-smoothed"),
]


def check_function(exclude, eps, seed=0):
    vectors, items, labels, seen, weights = _random_case(seed)
    seen = seen if exclude else None

    def fn(v, t):
        losses = full_softmax_cross_entropy(
            v, t, labels, seen=seen, label_smoothing=eps
        )
        return ops.sum(losses * weights)

    loss, (d_vectors, d_items) = _loss_and_gradients(fn, vectors, items)
    ref, ref_vectors, ref_items = reference_loss_and_gradients(
        vectors, items, labels, weights, seen, eps
    )
    np.testing.assert_allclose(loss, ref, rtol=1e-5)
    np.testing.assert_allclose(d_vectors, ref_vectors, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(d_items, ref_items, rtol=1e-4, atol=1e-5)


def check_finite_difference(seed=1):
    """The gradient of the loss itself, by central differences in float64
    of the NumPy loss (independent of the analytic reference gradient)."""
    vectors, items, labels, seen, weights = _random_case(seed, rows=4, num_items=12)

    def fn(v, t):
        return ops.sum(
            full_softmax_cross_entropy(v, t, labels, seen=seen, label_smoothing=0.2)
            * weights
        )

    _, (d_vectors, d_items) = _loss_and_gradients(fn, vectors, items)
    step = 1e-5
    for array, grad in ((vectors, d_vectors), (items, d_items)):
        numeric = np.zeros(array.shape)
        for index in np.ndindex(array.shape):
            shifted = [array.astype("float64").copy() for _ in range(2)]
            shifted[0][index] += step
            shifted[1][index] -= step
            values = []
            for copy in shifted:
                args = (copy, items) if array is vectors else (vectors, copy)
                values.append(
                    reference_loss_and_gradients(*args, labels, weights, seen, 0.2)[0]
                )
            numeric[index] = (values[0] - values[1]) / (2 * step)
        np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=1e-5)


def check_model_loss(model_class, exclude, eps):
    """`compute_loss` of a model (both target forms) and its gradients of the
    scoring vectors, against the reference over the real positions."""
    num_items, max_len, dim = 25, 7, 16
    kwargs = dict(max_len=max_len, hidden_dim=dim, num_heads=2, dropout=0.0)
    if model_class is FAME:
        kwargs["num_experts"] = 2
    model = model_class(
        num_items, loss_excludes_history=exclude, label_smoothing=eps, **kwargs
    )
    rng = np.random.default_rng(3)
    ids = rng.integers(1, num_items + 1, size=(5, max_len)).astype("int32")
    for row, length in enumerate([7, 5, 3, 2, 6]):
        ids[row, : max_len - length] = 0
    ids[1, -1] = ids[1, -2]  # a repeat in the history
    per_position = np.zeros_like(ids)
    per_position[:, :-1] = ids[:, 1:]
    per_position[ids == 0] = 0
    per_position[:, -1] = rng.integers(1, num_items + 1, size=5)
    per_row = per_position[:, -1].copy()
    per_row[2] = ids[2, -1]  # a target the row has just read
    table = ops.convert_to_numpy(model.item_table())[1:]
    for targets, last_only in ((per_position, False), (per_row, True)):
        vectors = model(ids, last_position_only=last_only)

        def fn(v, t, targets=targets):
            return model.compute_loss(ids, targets, v)

        loss, (d_vectors, _) = _loss_and_gradients(
            fn, ops.convert_to_numpy(vectors), table
        )
        v = ops.convert_to_numpy(vectors)
        if targets.ndim == 1:
            where = [(b, max_len - 1) for b in range(len(ids))]
            rows = v[:, -1]
            histories = ids
        else:
            where = list(zip(*np.nonzero(targets), strict=True))
            rows = np.stack([v[b, t] for b, t in where])
            histories = np.stack(
                [np.where(np.arange(max_len) <= t, ids[b], 0) for b, t in where]
            )
        labels = np.array(
            [(targets[b] if targets.ndim == 1 else targets[b, t]) - 1 for b, t in where]
        )
        weights = np.full(len(rows), 1.0 / len(rows))
        ref, ref_rows, _ = reference_loss_and_gradients(
            rows, table, labels, weights, histories if exclude else None, eps
        )
        np.testing.assert_allclose(loss, ref, rtol=1e-5)
        expected = np.zeros(v.shape)
        for (b, t), grad in zip(where, ref_rows, strict=True):
            expected[b, t if targets.ndim == 2 else -1] = grad
        np.testing.assert_allclose(d_vectors, expected, rtol=1e-4, atol=1e-6)


def check_mixed_precision():
    """bfloat16 vectors and table: the softmax runs in float32, so the loss
    is the float32 reference of the rounded inputs."""
    vectors, items, labels, seen, weights = _random_case(4)
    v16 = ops.cast(vectors, "bfloat16")
    t16 = ops.cast(items, "bfloat16")
    losses = full_softmax_cross_entropy(v16, t16, labels, seen=seen)
    assert ops.convert_to_numpy(losses).dtype == np.float32
    rounded = [ops.convert_to_numpy(ops.cast(a, "float32")) for a in (v16, t16)]
    ref = reference_loss_and_gradients(*rounded, labels, np.eye(len(labels))[0], seen)
    np.testing.assert_allclose(ops.convert_to_numpy(losses)[0], ref[0], rtol=1e-2)


def check_padding_row_slice():
    """`_without_padding_row(t)` is `t[1:]`; its gradient a zero row, then the
    incoming gradient."""
    rng = np.random.default_rng(5)
    weights = rng.normal(size=(6, 3)).astype("float32")
    table = rng.normal(size=(7, 3)).astype("float32")

    def fn(w, t):
        return ops.sum(w * _without_padding_row(t))

    _, (d_weights, d_table) = _loss_and_gradients(fn, weights, table)
    np.testing.assert_array_equal(d_weights, table[1:])
    np.testing.assert_array_equal(d_table, np.concatenate([np.zeros((1, 3)), weights]))


def check_all():
    """Every check, on the current backend (the JAX test runs this)."""
    for exclude in (None, "seen"):
        for eps in (0.0, 0.3):
            check_function(exclude, eps)
            for model_class in (SASRec, FAME):
                check_model_loss(model_class, bool(exclude), eps)
    check_finite_difference()
    check_mixed_precision()
    check_padding_row_slice()


@pytest.mark.parametrize("exclude, eps", CASES)
def test_function_matches_reference(exclude, eps):
    check_function(exclude, eps)


def test_gradient_matches_finite_differences():
    check_finite_difference()


@pytest.mark.parametrize("model_class", [SASRec, FAME])
@pytest.mark.parametrize("exclude, eps", CASES)
def test_model_loss_matches_reference(model_class, exclude, eps):
    check_model_loss(model_class, bool(exclude), eps)


def test_padding_row_slice_gradient():
    check_padding_row_slice()


def test_mixed_precision_softmax_in_float32():
    check_mixed_precision()


def test_unfused_loss_is_the_same_loss():
    """The earlier implementation (kept for benchmarks) gives the same loss."""
    ids = np.array([[0, 3, 5, 3, 9], [1, 2, 4, 8, 6]], "int32")
    targets = np.array([7, 2], "int32")
    model = SASRec(
        12,
        max_len=5,
        hidden_dim=8,
        num_heads=2,
        dropout=0.0,
        loss_excludes_history=True,
        label_smoothing=0.1,
    )
    vectors = model(ids, last_position_only=True)
    fused = ops.convert_to_numpy(model.compute_loss(ids, targets, vectors))
    model._fused_full_softmax = False
    unfused = ops.convert_to_numpy(model.compute_loss(ids, targets, vectors))
    np.testing.assert_allclose(fused, unfused, rtol=1e-6)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="no jax")
def test_all_checks_on_jax():
    script = (
        "import keras; assert keras.backend.backend() == 'jax'\n"
        "from tests.test_fused_loss import check_all; check_all(); print('JAX OK')"
    )
    result = run_on_jax(script, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "JAX OK" in result.stdout
