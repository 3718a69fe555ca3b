"""Leave-one-out splits and tf.data pipelines: the invariants of the contract."""

from collections import Counter

import numpy as np
import pytest

from keras_fame.datasets import SequenceDataset

NUM_ITEMS = 200


def random_dataset(seed=0, num_users=60, max_length=130):
    """Users with distinct items, lengths 1..max_length (some too short)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_length, size=num_users)
    lengths[:4] = [1, 2, 3, 4]
    seqs = [rng.permutation(NUM_ITEMS)[:n] + 1 for n in lengths]
    with pytest.warns(UserWarning, match="fewer than 3 items"):
        return SequenceDataset(seqs, NUM_ITEMS, name="random")


@pytest.fixture(scope="module")
def ds():
    return random_dataset()


def test_hand_example():
    ds = SequenceDataset([[1, 2, 3, 4, 5, 6, 7], [3, 4, 5]], num_items=9)
    inputs, targets = ds.train_arrays(max_len=3)
    # user 1: inputs s1..s4 -> most recent 3; user 2: n - 3 = 0 -> no row
    assert inputs.tolist() == [[2, 3, 4]]
    assert targets.tolist() == [[3, 4, 5]]
    features, target = ds.eval_arrays("valid", max_len=3)
    assert features["item_ids"].tolist() == [[3, 4, 5], [0, 0, 3]]
    assert features["seen_ids"].tolist() == [[1, 2, 3, 4, 5], [3, 0, 0, 0, 0]]
    assert target.tolist() == [6, 4]
    features, target = ds.eval_arrays("test", max_len=3)
    assert features["item_ids"].tolist() == [[4, 5, 6], [0, 3, 4]]
    assert target.tolist() == [7, 5]
    assert inputs.dtype == targets.dtype == target.dtype == np.int32


def test_windows_and_stride_hand_example():
    ds = SequenceDataset([list(range(1, 11))], num_items=10)  # 7 inputs: 1..7
    inputs, targets = ds.train_arrays(max_len=3, windows=True)
    assert inputs.tolist() == [[5, 6, 7], [2, 3, 4], [0, 0, 1]]
    assert targets.tolist() == [[6, 7, 8], [3, 4, 5], [0, 0, 2]]
    inputs, targets = ds.train_arrays(max_len=3, windows=True, stride=2)
    assert inputs.tolist() == [[5, 6, 7], [3, 4, 5], [1, 2, 3]]
    # overlapping positions keep their target only in the oldest window
    assert targets.tolist() == [[0, 7, 8], [0, 5, 6], [2, 3, 4]]


def test_prefixes_hand_example():
    ds = SequenceDataset([list(range(1, 8)), [3, 4, 5]], num_items=9)  # 4 inputs
    inputs, targets = ds.train_arrays(max_len=3, prefixes=True)
    assert inputs.tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4]]
    assert targets.tolist() == [[0, 0, 2], [0, 0, 3], [0, 0, 4], [0, 0, 5]]
    with pytest.raises(ValueError, match="`prefixes` and `windows`"):
        ds.train_arrays(max_len=3, windows=True, prefixes=True)
    # The empty prefix adds a first-item row per user, even for a user of
    # three items (s_1 is a training item; s_2 and s_3 are held out).
    inputs, targets = ds.train_arrays(max_len=3, prefixes=True, empty_prefix=True)
    assert inputs.tolist() == [
        [0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4], [0, 0, 0]
    ]  # fmt: skip
    assert targets[:, -1].tolist() == [1, 2, 3, 4, 5, 3]
    assert not targets[:, :-1].any()
    with pytest.raises(ValueError, match="`empty_prefix`.*needs `prefixes=True`"):
        ds.train_arrays(max_len=3, empty_prefix=True)


@pytest.mark.parametrize("empty_prefix", [False, True])
def test_prefix_rows_are_the_evaluation_view_of_every_target(ds, empty_prefix):
    # Row r must equal what evaluation would read if target r were held out:
    # the most recent max_len items before it, left-padded.
    max_len = 20
    inputs, targets = ds.train_arrays(
        max_len=max_len, prefixes=True, empty_prefix=empty_prefix
    )
    expected_inputs, expected_targets = [], []
    for s in ds.sequences:
        # targets s_2..s_{n-2}, and s_1 (no input) with the empty prefix
        for t in range(0 if empty_prefix else 1, len(s) - 2):
            history = s[:t][-max_len:]
            expected_inputs.append([0] * (max_len - len(history)) + list(history))
            expected_targets.append(s[t])
    np.testing.assert_array_equal(inputs, np.array(expected_inputs))
    assert not targets[:, :-1].any()
    np.testing.assert_array_equal(targets[:, -1], expected_targets)
    pipeline = ds.train_dataset(
        batch_size=64,
        max_len=max_len,
        prefixes=True,
        empty_prefix=empty_prefix,
        bucket=True,
        seed=1,
    )

    def real(row):
        return tuple(int(v) for v in row if v)

    fed = Counter()
    for x, y in pipeline.as_numpy_iterator():
        # One target per row: the item after the row's last (real) position;
        # a row is left-padded (its last column is an item) unless empty.
        assert y.shape == (len(x),) and (y > 0).all()
        assert ((x[:, -1] > 0) | ~x.any(axis=1)).all()
        fed.update((real(row), int(t)) for row, t in zip(x, y, strict=True))
    expected = Counter(
        (real(row), t) for row, t in zip(expected_inputs, expected_targets, strict=True)
    )
    assert fed == expected


def test_split_invariants(ds):
    split = ds.splits()
    lengths = ds.lengths
    assert split.eval_users.tolist() == np.flatnonzero(lengths >= 3).tolist()
    for k, u in enumerate(split.eval_users):
        seq = ds.sequences[u]
        assert split.valid_target[k] == seq[-2] and split.test_target[k] == seq[-1]
        # test history = validation history + validation target
        assert split.test_history[k].tolist() == [
            *split.valid_history[k],
            split.valid_target[k],
        ]
        # no target in its own input
        assert split.valid_target[k] not in split.valid_history[k]
        assert split.test_target[k] not in split.test_history[k]
        # training never sees the validation or test item
        assert split.valid_target[k] not in split.train[u]
        assert split.test_target[k] not in split.train[u]


@pytest.mark.parametrize("windows, stride", [(False, None), (True, None), (True, 7)])
def test_train_rows_invariants(ds, windows, stride):
    max_len = 20
    inputs, targets = ds.train_arrays(max_len=max_len, windows=windows, stride=stride)
    assert inputs.shape == targets.shape and inputs.shape[1] == max_len
    # padding never becomes a target; left padding only
    assert not targets[inputs == 0].any()
    real = inputs > 0
    assert (np.diff(real.astype(int), axis=1) >= 0).all()
    # no target in its own input (items are distinct within a user)
    for x, y in zip(inputs, targets, strict=True):
        for t in np.flatnonzero(y):
            assert y[t] not in x[: t + 1]
    used = Counter(targets[targets > 0].tolist())
    expected = Counter(
        np.concatenate([s[1:-2] for s in ds.sequences if len(s) >= 4]).tolist()
    )
    if windows:  # every training target exactly once
        assert used == expected
        assert real.sum() >= sum(len(s) - 3 for s in ds.sequences if len(s) >= 4)
    else:  # the most recent max_len targets of each user
        assert used == Counter(
            np.concatenate(
                [s[1:-2][-max_len:] for s in ds.sequences if len(s) >= 4]
            ).tolist()
        )
        assert len(inputs) == int((ds.lengths >= 4).sum())
        assert real.all(axis=1).sum() == int((ds.lengths - 3 >= max_len).sum())


def test_stride_validation(ds):
    with pytest.raises(ValueError, match=r"`stride` must lie in \[1, max_len=5\]"):
        ds.train_arrays(max_len=5, windows=True, stride=6)
    with pytest.raises(ValueError, match=r"`max_len` must be a positive integer"):
        ds.train_arrays(max_len=0)
    with pytest.raises(ValueError, match=r"`split` must be one of \('valid', 'test'\)"):
        ds.eval_arrays("train")


def test_constructor_rejects_bad_ids():
    with pytest.raises(
        ValueError,
        match=r"user at index 1 has item id 0; expected ids in \[1, num_items=5\]",
    ):
        SequenceDataset([[1, 2], [3, 0]], num_items=5)
    with pytest.raises(
        ValueError, match=r"item id 9; expected ids in \[1, num_items=5\]"
    ):
        SequenceDataset([[1, 9]], num_items=5)
    with pytest.raises(ValueError, match=r"user at index 0 has an empty sequence"):
        SequenceDataset([[], [1]])


# ------------------------------------------------------------------ tf.data


def test_train_pipeline_contract(ds):
    import tensorflow as tf

    pipeline = ds.train_dataset(
        batch_size=16, max_len=20, seed=3, prefixes=False, bucket=False
    )
    spec = pipeline.element_spec
    assert spec[0].dtype == tf.int32 and spec[1].dtype == tf.int32
    assert spec[0].shape.as_list() == [None, 20] == spec[1].shape.as_list()
    x_all, y_all = ds.train_arrays(max_len=20)
    rows = [(x.numpy(), y.numpy()) for x, y in pipeline]
    got = np.concatenate([x for x, _ in rows])
    assert sorted(map(tuple, got)) == sorted(map(tuple, x_all))  # a permutation
    assert all(len(x) == 16 for x, _ in rows[:-1])
    for x, y in rows:
        assert not y[x == 0].any()
        assert x.max() <= ds.num_items


def test_seeded_shuffle_is_deterministic(ds):
    def epochs(seed):
        pipeline = ds.train_dataset(
            batch_size=8, max_len=10, seed=seed, prefixes=False, bucket=False
        )
        return [np.concatenate([x.numpy() for x, _ in pipeline]) for _ in range(2)]

    first, second = epochs(1), epochs(1)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not np.array_equal(first[0], first[1])  # reshuffled every epoch
    assert not np.array_equal(first[0], epochs(2)[0])
    ordered = ds.train_dataset(
        batch_size=8, max_len=10, shuffle=False, prefixes=False, bucket=False
    )
    assert np.array_equal(
        np.concatenate([x for x, _ in ordered]), ds.train_arrays(10)[0]
    )


@pytest.mark.parametrize("split", ["valid", "test"])
def test_eval_pipeline_contract(ds, split):
    import tensorflow as tf

    pipeline = ds.eval_dataset(split, batch_size=16, max_len=20)
    features_spec, target_spec = pipeline.element_spec
    assert features_spec["item_ids"].shape.as_list() == [None, 20]
    assert features_spec["seen_ids"].dtype == tf.int32 and target_spec.dtype == tf.int32
    split_arrays = ds.splits()
    history = (
        split_arrays.valid_history if split == "valid" else split_arrays.test_history
    )
    target = split_arrays.valid_target if split == "valid" else split_arrays.test_target
    batches = list(pipeline)
    assert [len(t) for _, t in batches] == [
        16,
        16,
        16,
        len(target) - 48,
    ]  # last one kept
    got_targets = np.concatenate([t.numpy() for _, t in batches])
    assert np.array_equal(got_targets, target)  # every user once, in order
    k = 0
    for features, _ in batches:
        for recent, seen in zip(
            features["item_ids"].numpy(), features["seen_ids"].numpy(), strict=True
        ):
            h = history[k]
            assert seen[: len(h)].tolist() == h.tolist() and not seen[len(h) :].any()
            tail = h[-20:]
            assert recent[20 - len(tail) :].tolist() == tail.tolist()
            assert not recent[: 20 - len(tail)].any()
            k += 1
        # S varies per batch: the longest history of the batch
        assert features["seen_ids"].shape[1] == max(
            len(history[j]) for j in range(k - len(features["item_ids"]), k)
        )


def test_pipeline_rejects_out_of_range_ids():
    from keras_fame.datasets.pipelines import make_eval_dataset, make_train_dataset

    x = np.array([[0, 1, 2]], dtype=np.int32)
    y = np.array([[0, 2, 6]], dtype=np.int32)
    with pytest.raises(
        ValueError,
        match=r"`targets` holds item id 6 at index \(0, 2\), outside \[0, num_items=5\]",
    ):
        make_train_dataset(x, y, num_items=5)
    with pytest.raises(
        ValueError, match=r"`targets` holds item 3 at padding position \(0, 0\)"
    ):
        make_train_dataset(x, np.array([[3, 2, 3]]), num_items=5)
    with pytest.raises(ValueError, match=r"`targets` either the same shape.*\(1, 2\)"):
        make_train_dataset(x, np.array([[2, 3]]), num_items=5)
    # One target per row: a real item after a row that ends in an item.
    with pytest.raises(ValueError, match=r"row 1: .*got target 0 after inputs"):
        make_train_dataset(np.array([[0, 1, 2], [1, 2, 3]]), np.array([3, 0]), 5)
    with pytest.raises(
        ValueError, match=r"row 0: .*got target 4 after inputs \[1, 2, 0\]"
    ):
        make_train_dataset(np.array([[1, 2, 0]]), np.array([4]), num_items=5)
    # ... or is empty (an empty prefix: its target is a first item).
    rows = make_train_dataset(np.array([[0, 0, 0], [0, 1, 2]]), np.array([4, 3]), 5)
    assert sorted(int(y) for _, ys in rows for y in ys) == [3, 4]
    with pytest.raises(ValueError, match=r"`targets` holds item id 6 at index \(0,\)"):
        make_train_dataset(x, np.array([6]), num_items=5)
    with pytest.raises(ValueError, match=r"`inputs` holds item id -1"):
        make_train_dataset(np.array([[-1, 1, 2]]), y, num_items=9)
    with pytest.raises(
        ValueError, match=r"no training rows: a user needs at least 4 items"
    ):
        SequenceDataset([[1, 2, 3]]).train_dataset()
    with pytest.raises(ValueError, match=r"`batch_size` must be a positive integer"):
        make_train_dataset(x, y, num_items=9, batch_size=0)
    with pytest.raises(ValueError, match=r"`batch_size` must be .*batch_size=True"):
        make_train_dataset(x, y, num_items=9, batch_size=True)
    with pytest.raises(ValueError, match=r"`bucket_window` must be a positive"):
        make_train_dataset(x, y, num_items=9, bucket=True, bucket_window=0)
    ((inputs, targets),) = make_train_dataset(x, y, num_items=9, batch_size=np.int64(4))
    np.testing.assert_array_equal(targets, y)
    with pytest.raises(ValueError, match=r"`seen_ids` holds item id 7"):
        make_eval_dataset(
            x, np.array([1, 7]), np.array([2]), np.array([3]), num_items=5
        )
    with pytest.raises(ValueError, match=r"`targets` holds the padding id 0"):
        make_eval_dataset(
            x, np.array([1, 2]), np.array([2]), np.array([0]), num_items=5
        )
