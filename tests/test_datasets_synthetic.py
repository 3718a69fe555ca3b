"""The synthetic planted-facet dataset: deterministic, consistent, learnable."""

import numpy as np
import pytest

from keras_fame.datasets import make_synthetic


@pytest.fixture(scope="module")
def default():
    return make_synthetic()


def test_deterministic_and_seeded():
    a, truth_a = make_synthetic(num_users=100, num_items=120, seed=3)
    b, truth_b = make_synthetic(num_users=100, num_items=120, seed=3)
    c, _ = make_synthetic(num_users=100, num_items=120, seed=4)
    assert np.array_equal(a.items, b.items) and np.array_equal(a.offsets, b.offsets)
    assert np.array_equal(truth_a.item_facets, truth_b.item_facets)
    assert not np.array_equal(a.items[:200], c.items[:200])


def test_default_size_and_contract(default):
    ds, truth = default
    stats = ds.describe()
    assert (stats["users"], stats["items"]) == (2000, 500)
    assert stats["min_length"] >= 10 and stats["max_length"] <= 30
    assert len(np.unique(ds.items)) == ds.num_items  # every item occurs
    assert all(len(np.unique(s)) == len(s) for s in ds.sequences)  # no repeats
    assert ds.vocabulary.is_identity


def test_ground_truth_is_consistent(default):
    ds, truth = default
    assert truth.facet_names == ("genre", "brand") and truth.facet_sizes == (10, 25)
    assert truth.item_facets.shape == (501, 2) and (truth.item_facets[0] == -1).all()
    for f, size in enumerate(truth.facet_sizes):  # balanced facet values
        counts = np.bincount(truth.item_facets[1:, f], minlength=size)
        assert counts.min() == counts.max() == 500 // size
        for v, chain in enumerate(truth.chains[f]):
            assert (
                sorted(chain.tolist())
                == np.flatnonzero(truth.item_facets[:, f] == v).tolist()
            )
    # attributes encode the facets: one attribute id per facet
    item = 17
    expected = [
        int(truth.attribute_offsets[f] + truth.item_facets[item, f]) for f in range(2)
    ]
    assert ds.item_attributes[item] == expected
    for u in range(len(truth.user_dominant_facet)):
        size = truth.facet_sizes[truth.user_dominant_facet[u]]
        assert (truth.user_preferred_values[u] < size).all()
        assert len(set(truth.user_preferred_values[u].tolist())) == 2


def test_sequences_follow_the_dominant_facet(default):
    ds, truth = default
    agreement = truth.facet_agreement(ds.sequences)
    assert agreement.mean() > 0.9
    # consecutive items share the dominant facet's value, rarely the other's
    same_dominant, same_other = [], []
    for u, seq in enumerate(ds.sequences):
        d = truth.user_dominant_facet[u]
        values = truth.item_facets[seq]
        same_dominant.append(np.mean(values[1:, d] == values[:-1, d]))
        same_other.append(np.mean(values[1:, 1 - d] == values[:-1, 1 - d]))
    assert np.mean(same_dominant) > 0.7 and np.mean(same_other) < 0.15


def hit_rate(score, histories, targets, k=10):
    hits = 0
    for history, target in zip(histories, targets, strict=True):
        s = score(history).astype(float)
        s[0] = -np.inf
        s[history] = -np.inf  # seen items are excluded, as in the protocol
        hits += target in np.argpartition(-s, k)[:k]
    return hits / len(targets)


def test_structure_is_learnable_beyond_popularity(default):
    """A first-order sequential model fitted on the training split beats
    popularity by a wide margin on validation HR@10."""
    ds, _ = default
    split = ds.splits()
    n = ds.num_items + 1
    transitions = np.zeros((n, n))
    popularity = np.zeros(n)
    for seq in split.train:
        np.add.at(transitions, (seq[:-1], seq[1:]), 1)
        np.add.at(popularity, seq[1:], 1)
    tie_break = 1e-6 * np.arange(n)
    pop_hr = hit_rate(
        lambda h: popularity + tie_break, split.valid_history, split.valid_target
    )
    seq_hr = hit_rate(
        lambda h: transitions[h[-1]] + 1e-3 * popularity + tie_break,
        split.valid_history,
        split.valid_target,
    )
    assert pop_hr < 0.06
    assert seq_hr > 0.5 and seq_hr > 8 * pop_hr


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"facet_sizes": (10,)}, r"`facet_sizes` must have num_facets=2 entries"),
        ({"min_length": 5, "max_length": 4}, r"min_length <= max_length"),
        (
            {"num_items": 20, "max_length": 30},
            r"`max_length` \(30\) cannot exceed `num_items` \(20\)",
        ),
        ({"preferences_per_user": 11}, r"`preferences_per_user` must lie in \[1, 10\]"),
        ({"noise": 1.5}, r"`noise` must lie in \[0, 1\]"),
    ],
)
def test_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_synthetic(num_users=10, **kwargs)
