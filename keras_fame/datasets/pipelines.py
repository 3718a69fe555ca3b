"""NumPy split arrays -> `tf.data` pipelines (the only TensorFlow code here).

Pipelines are built from precomputed arrays: a dataset of row indices is
shuffled (seeded) and batched, and each batch gathers its rows with one
vectorised `tf.gather`, so the input pipeline costs a few microseconds per
sequence.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_fame.datasets.splits import check_id_range
from keras_fame.layers._utils import check_positive_int


def make_train_dataset(
    inputs: np.ndarray,
    targets: np.ndarray,
    num_items: int,
    batch_size: int = 256,
    shuffle: bool = True,
    seed: int | None = 0,
    drop_remainder: bool = False,
    bucket: bool = False,
    bucket_window: int = 32,
    count_targets: bool = False,
) -> tf.data.Dataset:
    """Builds the training pipeline `(item_ids, next_item_ids)`.

    Args:
        inputs: int array `(rows, max_len)` of left-padded item ids.
        targets: int array of the same shape: the next item of each input
            position, 0 at padding; or `(rows,)`: one target per row, the
            item after its last position (every row must then be empty, an
            empty prefix, or end in an item). The models then compute only
            the last position of their last block (see
            `SequentialRecommender`).
        num_items: the largest valid item id; ids outside `[0, num_items]`
            raise a `ValueError` here, before any training step.
        batch_size: rows per batch.
        shuffle: shuffle all rows, again at every epoch (iteration).
        seed: shuffle seed; the same seed gives the same sequence of epochs.
        drop_remainder: drop the last, smaller batch.
        bucket: length bucketing. The shuffled rows are taken `bucket_window`
            batches at a time, sorted by length inside that window and cut
            into batches, the batches are shuffled again, and every batch is
            trimmed to its longest row (dropping leading columns that are
            padding in every row). No item is dropped; the models' outputs
            at real positions do not depend on the amount of left padding,
            so the loss of each row is unchanged, and an epoch costs far
            less on short-history data (Amazon: about 8 items per user,
            `max_len` 50).
        bucket_window: batches per sorting window (bucketing only).
        count_targets: yield `({"item_ids": item_ids, "num_targets": n},
            next_item_ids)` where `n` int32 `(batch,)` repeats the number of
            real targets of the whole batch. Under `tf.distribute` each
            replica sees a slice of the rows but still this global count, so
            the models normalise the loss by the global batch (see
            `SequentialRecommender`) and N replicas train exactly like one.

    Returns:
        A `tf.data.Dataset` of `(item_ids, next_item_ids)`, int32:
        `item_ids` `(batch, max_len)` (with `bucket=True`: `(batch, length)`,
        `length <= max_len` varying per batch) and `next_item_ids` of the same
        shape, or `(batch,)` for one target per row; prefetched.

    Example:
    >>> import numpy as np
    >>> x = np.array([[0, 1, 2]], dtype="int32"); y = np.array([[0, 2, 3]], dtype="int32")
    >>> ds = make_train_dataset(x, y, num_items=3, batch_size=8)
    >>> [a.shape for a in next(iter(ds))]
    [TensorShape([1, 3]), TensorShape([1, 3])]
    """
    batch_size = check_positive_int("batch_size", batch_size)
    inputs = np.asarray(inputs)
    targets = np.asarray(targets)
    one_per_row = targets.ndim == 1
    if inputs.ndim != 2 or (
        targets.shape != (inputs.shape if not one_per_row else inputs.shape[:1])
    ):
        raise ValueError(
            "`inputs` must be a 2-D array (rows, max_len) and `targets` either "
            "the same shape (the next item at every position) or (rows,) (the "
            f"item after each row); got {inputs.shape} and {targets.shape}"
        )
    if len(inputs) == 0:
        raise ValueError(
            "no training rows: a user needs at least 4 items to have one (inputs "
            "s_1..s_{n-3}; s_{n-1} and s_n are held out for validation and test), "
            "or 3 with an empty prefix"
        )
    check_id_range(inputs, num_items, "inputs")
    check_id_range(targets, num_items, "targets")
    if one_per_row:
        # An all-padding row is an empty prefix (its target is a first item).
        right_padded = (inputs[:, -1] == 0) & inputs.any(axis=1)
        bad = np.flatnonzero((targets < 1) | right_padded)
        if len(bad):
            row = int(bad[0])
            raise ValueError(
                f"row {row}: with one target per row every target must be an "
                "item (>= 1) and every row must be empty or end in an item "
                "(left padding); "
                f"got target {int(targets[row])} after inputs {inputs[row].tolist()}"
            )
    elif ((inputs == 0) & (targets != 0)).any():
        where = tuple(int(i) for i in np.argwhere((inputs == 0) & (targets != 0))[0])
        raise ValueError(
            f"`targets` holds item {int(targets[where])} at padding position {where}; "
            "padding positions must have target 0"
        )
    x = tf.constant(inputs.astype(np.int32))
    y = tf.constant(targets.astype(np.int32))

    def finish(dataset):
        if count_targets:
            dataset = dataset.map(_with_target_count)
        return dataset.prefetch(tf.data.AUTOTUNE)

    rows = tf.data.Dataset.range(len(inputs))
    if shuffle:
        rows = rows.shuffle(len(inputs), seed=seed, reshuffle_each_iteration=True)
    if not bucket:
        rows = rows.batch(batch_size, drop_remainder=drop_remainder)
        dataset = rows.map(
            lambda index: (tf.gather(x, index), tf.gather(y, index)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        return finish(dataset)

    bucket_window = check_positive_int("bucket_window", bucket_window)
    lengths = tf.constant(np.count_nonzero(inputs, axis=1).astype(np.int64))
    max_len = inputs.shape[1]

    def sort_window(index):
        return tf.gather(index, tf.argsort(tf.gather(lengths, index), stable=True))

    def gather_and_trim(index):
        width = tf.reduce_max(tf.gather(lengths, index))
        width = tf.cast(tf.maximum(width, 1), tf.int32)
        batch_y = tf.gather(y, index)
        if not one_per_row:
            batch_y = batch_y[:, max_len - width :]
        return tf.gather(x, index)[:, max_len - width :], batch_y

    rows = rows.batch(batch_size * bucket_window).map(sort_window, deterministic=True)
    rows = rows.unbatch().batch(batch_size, drop_remainder=drop_remainder)
    if shuffle:
        batch_seed = None if seed is None else seed + 1
        rows = rows.shuffle(
            bucket_window, seed=batch_seed, reshuffle_each_iteration=True
        )
    dataset = rows.map(
        gather_and_trim, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    # unbatch() loses the cardinality; state it so Keras knows the epoch length.
    batches = (
        len(inputs) // batch_size if drop_remainder else -(-len(inputs) // batch_size)
    )
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))
    return finish(dataset)


def _with_target_count(item_ids, next_item_ids):
    count = tf.math.count_nonzero(next_item_ids, dtype=tf.int32)
    num_targets = tf.fill(tf.shape(item_ids)[:1], count)
    return {"item_ids": item_ids, "num_targets": num_targets}, next_item_ids


def make_eval_dataset(
    item_ids: np.ndarray,
    seen_values: np.ndarray,
    seen_lengths: np.ndarray,
    targets: np.ndarray,
    num_items: int,
    batch_size: int = 256,
) -> tf.data.Dataset:
    """Builds an evaluation pipeline `({"item_ids", "seen_ids"}, target)`.

    Args:
        item_ids: int array `(users, max_len)`, left-padded recent histories.
        seen_values: flat int array of every user's full history, one after
            the other.
        seen_lengths: int array `(users,)`: the length of each full history.
        targets: int array `(users,)` of held-out items.
        num_items: the largest valid item id (ids are checked).
        batch_size: users per batch; the last batch may be smaller.

    Returns:
        A `tf.data.Dataset` in user order (not shuffled) of `(features,
        target)`: `features["item_ids"]` int32 `(batch, max_len)`,
        `features["seen_ids"]` int32 `(batch, S)` (each user's full history,
        padded with 0 on the right to the longest history of the batch) and
        `target` int32 `(batch,)`.
    """
    batch_size = check_positive_int("batch_size", batch_size)
    item_ids = np.asarray(item_ids)
    targets = np.asarray(targets)
    seen_lengths = np.asarray(seen_lengths, dtype=np.int64)
    if not len(item_ids) == len(targets) == len(seen_lengths):
        raise ValueError(
            "`item_ids`, `targets` and `seen_lengths` must have one row per user; "
            f"got {len(item_ids)}, {len(targets)} and {len(seen_lengths)}"
        )
    check_id_range(item_ids, num_items, "item_ids")
    check_id_range(seen_values, num_items, "seen_ids")
    check_id_range(targets, num_items, "targets")
    if len(targets) and targets.min() < 1:
        raise ValueError(
            f"`targets` holds the padding id 0 at index {int(np.argmin(targets))}; "
            "every evaluation target must be a real item"
        )
    x = tf.constant(item_ids.astype(np.int32))
    seen = tf.RaggedTensor.from_row_lengths(
        tf.constant(np.asarray(seen_values, dtype=np.int32)), seen_lengths
    )
    y = tf.constant(targets.astype(np.int32))

    def gather(index):
        features = {
            "item_ids": tf.gather(x, index),
            "seen_ids": tf.gather(seen, index).to_tensor(default_value=0),
        }
        return features, tf.gather(y, index)

    rows = tf.data.Dataset.range(len(targets)).batch(batch_size)
    dataset = rows.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)
