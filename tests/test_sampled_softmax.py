"""Sampled softmax (log-Q, accidental hits) and the global-batch loss count."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_fame.models import FAME, SASRec
from tests.reference import next_item_batch

NUM_ITEMS = 30
MAX_LEN = 8


def _batch(seed=0, batch=5):
    return next_item_batch(NUM_ITEMS, MAX_LEN, seed, batch)


def _sasrec(**kwargs):
    model = SASRec(
        NUM_ITEMS, max_len=MAX_LEN, hidden_dim=16, num_heads=2, dropout=0.0, **kwargs
    )
    return model


def _reference(model, x, y, uniform=None, in_batch=False, log_prior=None, correct=True):
    """NumPy sampled-softmax loss: mean over real positions."""
    vectors = ops.convert_to_numpy(model(x)).reshape(-1, 16).astype("float64")
    table = ops.convert_to_numpy(model.item_table()).astype("float64")
    targets = y.reshape(-1)
    real = targets > 0
    vectors, targets = vectors[real], targets[real]
    candidates = []
    if uniform is not None:
        candidates.append(uniform)
    if in_batch:
        candidates.append(targets)
    candidates = np.concatenate(candidates)

    def log_q(ids):
        if not correct:
            return np.zeros(len(ids))
        count = np.zeros(len(ids))
        if uniform is not None:
            count += len(uniform) / NUM_ITEMS
        if in_batch:
            count += len(targets) * np.exp(log_prior[ids])
        return np.log(count)

    losses = []
    for v, t in zip(vectors, targets, strict=True):
        positive = v @ table[t]
        negatives = table[candidates] @ v - log_q(candidates)
        negatives = negatives[candidates != t]
        logits = np.concatenate([[positive], negatives])
        top = logits.max()
        losses.append(top + np.log(np.exp(logits - top).sum()) - positive)
    return float(np.mean(losses))


def _counts(seed=1):
    counts = np.random.default_rng(seed).integers(1, 50, size=NUM_ITEMS + 1)
    counts[0] = 0
    return counts


def _log_prior(counts):
    prior = np.zeros(len(counts))
    prior[1:] = np.log(counts[1:] / counts[1:].sum())
    return prior


def test_in_batch_loss_matches_numpy_reference():
    x, y = _batch()
    model = _sasrec(softmax="sampled", negatives="in_batch")
    counts = _counts()
    model.set_item_frequencies(counts)
    loss = float(model.compute_loss(x, y, model(x)))
    expected = _reference(model, x, y, in_batch=True, log_prior=_log_prior(counts))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


@pytest.mark.parametrize("correct", [True, False])
@pytest.mark.parametrize("negatives", ["uniform", "mixed"])
def test_uniform_and_mixed_loss_match_numpy_reference(negatives, correct):
    x, y = _batch(seed=3)
    model = _sasrec(
        softmax="sampled",
        negatives=negatives,
        num_negatives=64,
        sampler_seed=7,
        log_q_correction=correct,
    )
    counts = _counts(seed=2)
    if negatives == "mixed":
        model.set_item_frequencies(counts)
    loss = float(model.compute_loss(x, y, model(x)))
    # The model's first draw: a fresh generator with the same seed repeats it.
    draws = ops.convert_to_numpy(
        keras.random.randint(
            (64,), 1, NUM_ITEMS + 1, seed=keras.random.SeedGenerator(7), dtype="int32"
        )
    )
    expected = _reference(
        model,
        x,
        y,
        uniform=draws,
        in_batch=negatives == "mixed",
        log_prior=_log_prior(counts),
        correct=correct,
    )
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    other = _reference(
        model,
        x,
        y,
        uniform=draws,
        in_batch=negatives == "mixed",
        log_prior=_log_prior(counts),
        correct=not correct,
    )
    assert abs(loss - other) > 1e-2 * abs(other)


def test_many_uniform_negatives_estimate_the_full_softmax():
    # With S >> num_items draws every item appears about S / num_items times;
    # the log-Q correction turns their sum back into the full partition sum.
    x, y = _batch(seed=4)
    full = _sasrec()
    sampled = _sasrec(softmax="sampled", num_negatives=200_000, sampler_seed=0)
    sampled.set_weights(full.get_weights())
    full_loss = float(full.compute_loss(x, y, full(x)))
    sampled_loss = float(sampled.compute_loss(x, y, sampled(x)))
    np.testing.assert_allclose(sampled_loss, full_loss, rtol=0.01)


def test_accidental_hits_are_removed():
    # Every position has the same target: all in-batch negatives are the
    # target itself, so only the positive remains and the loss is 0.
    x, _ = _batch()
    y = np.where(x > 0, 5, 0).astype("int32")
    model = _sasrec(softmax="sampled", negatives="in_batch")
    assert float(model.compute_loss(x, y, model(x))) == pytest.approx(0.0, abs=1e-6)


def test_sampled_training_reduces_the_full_softmax_loss():
    x, y = _batch(seed=5, batch=32)
    model = _sasrec(
        softmax="sampled", negatives="mixed", num_negatives=8, sampler_seed=1
    )
    model.set_item_frequencies(np.bincount(y[y > 0], minlength=NUM_ITEMS + 1))
    full = _sasrec()

    def full_loss():
        for target, source in zip(
            full.trainable_weights, model.trainable_weights, strict=True
        ):
            target.assign(source)
        return float(full.compute_loss(x, y, full(x)))

    before = full_loss()
    model.compile(keras.optimizers.Adam(1e-2))
    model.fit(x, y, batch_size=8, epochs=15, verbose=0)
    after = full_loss()
    assert after < before - 0.5


def test_global_target_count_scales_the_loss():
    x, y = _batch()
    model = _sasrec()
    local = float(model.compute_loss(x, y, model(x)))
    count = np.full((len(x),), 2 * np.count_nonzero(y), "int32")
    features = {"item_ids": x, "num_targets": count}
    shared = float(model.compute_loss(features, y, model(features)))
    np.testing.assert_allclose(shared, local / 2, rtol=1e-6)


def test_config_round_trip_and_warm_start_keep_the_sampler(tmp_path):
    model = _sasrec(
        softmax="sampled",
        negatives="mixed",
        num_negatives=16,
        sampler_seed=3,
        log_q_correction=False,
    )
    counts = _counts()
    model.set_item_frequencies(counts)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert (
        loaded.softmax,
        loaded.negatives,
        loaded.num_negatives,
        loaded.sampler_seed,
        loaded.log_q_correction,
    ) == ("sampled", "mixed", 16, 3, False)
    np.testing.assert_allclose(
        ops.convert_to_numpy(loaded.item_log_prior)[1:],
        _log_prior(counts)[1:],
        rtol=1e-5,
    )
    fame = FAME.from_sasrec(model, num_experts=2)
    assert (
        fame.softmax,
        fame.negatives,
        fame.num_negatives,
        fame.log_q_correction,
    ) == ("sampled", "mixed", 16, False)
    np.testing.assert_allclose(
        ops.convert_to_numpy(fame.item_log_prior),
        ops.convert_to_numpy(model.item_log_prior),
    )


def test_bad_sampler_arguments():
    with pytest.raises(ValueError, match="`softmax`"):
        SASRec(NUM_ITEMS, softmax="nce")
    with pytest.raises(ValueError, match="`negatives`"):
        SASRec(NUM_ITEMS, softmax="sampled", negatives="hard")
    with pytest.raises(ValueError, match="`num_negatives`"):
        SASRec(NUM_ITEMS, softmax="sampled", num_negatives=0)
    with pytest.raises(ValueError, match="set_item_frequencies"):
        _sasrec(softmax="sampled").set_item_frequencies(_counts())
    model = _sasrec(softmax="sampled", negatives="in_batch")
    with pytest.raises(ValueError, match=r"shape \(31,\)"):
        model.set_item_frequencies(np.ones(NUM_ITEMS))
    with pytest.raises(ValueError, match="non-negative"):
        model.set_item_frequencies(-np.ones(NUM_ITEMS + 1))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("softmax", ["full", "sampled"])
def test_mixed_precision_loss_tracks_float32(policy, softmax):
    """Same weights: the mixed-precision loss (float32 logits and softmax)
    stays within low-precision rounding of the float32 loss, and a training
    step under the policy keeps every weight finite."""
    x, y = _batch(seed=6, batch=16)
    kwargs = dict(softmax=softmax, negatives="in_batch")
    reference = _sasrec(**kwargs)
    keras.config.set_dtype_policy(policy)
    model = _sasrec(**kwargs)
    for target, source in zip(model.weights, reference.weights, strict=True):
        target.assign(source)
    expected = float(reference.compute_loss(x, y, reference(x)))
    loss = model.compute_loss(x, y, model(x))
    assert loss.dtype == "float32"
    np.testing.assert_allclose(float(loss), expected, rtol=2e-2)
    model.compile(keras.optimizers.Adam(1e-3))
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert all(np.isfinite(ops.convert_to_numpy(w)).all() for w in model.weights)
