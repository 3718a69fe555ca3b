"""A tiny model must learn planted sequential structure and beat popularity."""

import keras
import numpy as np
import pytest

from keras_fame.models import FAME, SASRec

NUM_ITEMS = 60


def _planted_sequences(num_users=400, length=12, noise=0.1, seed=0):
    """Each item has one likely successor; a few random jumps."""
    rng = np.random.default_rng(seed)
    successor = rng.permutation(NUM_ITEMS) + 1
    sequences = np.zeros((num_users, length), "int32")
    for u in range(num_users):
        item = rng.integers(1, NUM_ITEMS + 1)
        for t in range(length):
            sequences[u, t] = item
            jump = rng.random() < noise
            item = rng.integers(1, NUM_ITEMS + 1) if jump else successor[item - 1]
    return sequences


def _hit_rate(scores, targets, k=10):
    top = np.argsort(-scores, axis=1)[:, :k]
    return float(np.mean([t in row for t, row in zip(targets, top, strict=True)]))


@pytest.mark.parametrize("cls", [SASRec, FAME])
def test_tiny_model_learns_and_beats_popularity(cls):
    keras.utils.set_random_seed(0)
    sequences = _planted_sequences()
    train_x, train_y = sequences[:, :-2], sequences[:, 1:-1]
    test_x, test_y = sequences[:, :-1], sequences[:, -1]
    kwargs = dict(
        num_items=NUM_ITEMS,
        max_len=11,
        hidden_dim=32,
        num_heads=2,
        num_blocks=1,
        dropout=0.1,
    )
    if cls is FAME:
        kwargs["num_experts"] = 2
    model = cls(**kwargs)
    model.compile(optimizer=keras.optimizers.Adam(5e-3))
    history = model.fit(train_x, train_y, batch_size=64, epochs=8, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.6 * losses[0]

    counts = np.bincount(train_y.ravel(), minlength=NUM_ITEMS + 1).astype(float)
    counts[0] = -np.inf
    popularity = _hit_rate(np.tile(counts, (len(test_y), 1)), test_y)
    model_hr = _hit_rate(keras.ops.convert_to_numpy(model.score(test_x)), test_y)
    assert model_hr > popularity + 0.4, (model_hr, popularity)
