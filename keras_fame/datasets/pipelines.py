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
from keras_fame.layers._utils import check_non_negative_int, check_positive_int


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

    The rows are reshuffled at every iteration of the returned dataset; for
    an order that depends only on the seed and the epoch number (so that a
    resumed run sees the epochs an uninterrupted one sees), use
    `TrainPipeline(...).epoch(n)`.

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
            less on short-history data.
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
    pipeline = TrainPipeline(
        inputs,
        targets,
        num_items,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        drop_remainder=drop_remainder,
        bucket=bucket,
        bucket_window=bucket_window,
        count_targets=count_targets,
    )
    return pipeline.dataset()


class TrainPipeline:
    """Training rows held once, served as `tf.data` pipelines epoch by epoch.

    `epoch(n)` is epoch `n`'s batches in an order that depends only on
    `seed` and `n`, not on how often the pipeline was iterated before, so a
    run that is stopped and resumed at epoch `n` (or at one of its batches,
    `skip_batches`) trains on exactly the batches an uninterrupted run trains
    on. `dataset()` is one dataset reshuffled at every iteration (what
    `make_train_dataset` returns).

    Args:
        inputs, targets, num_items, batch_size, shuffle, seed,
            drop_remainder, bucket, bucket_window, count_targets: as for
            `make_train_dataset`.

    Example:
    >>> import numpy as np
    >>> x = np.array([[0, 1], [1, 2], [2, 3]], dtype="int32")
    >>> pipeline = TrainPipeline(x, np.array([2, 3, 4]), num_items=4, batch_size=2)
    >>> pipeline.num_batches
    2
    >>> [int(y.shape[0]) for _, y in pipeline.epoch(0)]
    [2, 1]
    >>> [int(y.shape[0]) for _, y in pipeline.epoch(0, skip_batches=1)]
    [1]
    """

    def __init__(
        self,
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
    ):
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.bucket_window = check_positive_int("bucket_window", bucket_window)
        inputs = np.asarray(inputs)
        targets = np.asarray(targets)
        _check_train_rows(inputs, targets, num_items)
        self.one_per_row = targets.ndim == 1
        self.shuffle = bool(shuffle)
        self.seed = seed
        self.drop_remainder = bool(drop_remainder)
        self.bucket = bool(bucket)
        self.count_targets = bool(count_targets)
        self.num_rows = len(inputs)
        self.max_len = inputs.shape[1]
        self._lengths = np.count_nonzero(inputs, axis=1).astype(np.int64)
        self._x = tf.constant(inputs.astype(np.int32))
        self._y = tf.constant(targets.astype(np.int32))
        self._tf_lengths = tf.constant(self._lengths)

    @property
    def num_batches(self) -> int:
        """Batches per epoch."""
        if self.drop_remainder:
            return self.num_rows // self.batch_size
        return -(-self.num_rows // self.batch_size)

    def _gather(self, index):
        if not self.bucket:
            return tf.gather(self._x, index), tf.gather(self._y, index)
        width = tf.reduce_max(tf.gather(self._tf_lengths, index))
        width = tf.cast(tf.maximum(width, 1), tf.int32)
        batch_y = tf.gather(self._y, index)
        if not self.one_per_row:
            batch_y = batch_y[:, self.max_len - width :]
        return tf.gather(self._x, index)[:, self.max_len - width :], batch_y

    def _finish(self, rows):
        dataset = rows.map(
            self._gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
        if self.count_targets:
            dataset = dataset.map(_with_target_count)
        return dataset.prefetch(tf.data.AUTOTUNE)

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """Epoch `epoch`'s batches as arrays of row indices, in order.

        The order is a function of `seed` and `epoch` only (NumPy's
        `default_rng([seed, epoch])`); with `bucket`, rows are sorted by
        length inside windows of `bucket_window` batches and the batches of
        each window are shuffled.
        """
        epoch = _check_epoch(epoch)
        rng = np.random.default_rng(None if self.seed is None else [self.seed, epoch])
        order = (
            rng.permutation(self.num_rows) if self.shuffle else np.arange(self.num_rows)
        )
        size = self.batch_size
        if self.bucket:
            window = size * self.bucket_window
            order = np.concatenate(
                [
                    part[np.argsort(self._lengths[part], kind="stable")]
                    for part in np.split(order, range(window, self.num_rows, window))
                ]
            )
        batches = np.split(order, range(size, self.num_rows, size))
        if self.drop_remainder and len(batches[-1]) < size:
            batches = batches[:-1]
        if self.bucket and self.shuffle:
            groups = range(0, len(batches), self.bucket_window)
            batches = [
                batches[start + k]
                for start in groups
                for k in rng.permutation(min(self.bucket_window, len(batches) - start))
            ]
        return batches

    def epoch(self, epoch: int, skip_batches: int = 0) -> tf.data.Dataset:
        """Epoch `epoch`'s batches (see `epoch_batches`), from batch
        `skip_batches` on; the same `(features, targets)` elements as
        `dataset()`."""
        batches = self.epoch_batches(epoch)
        skip_batches = check_non_negative_int("skip_batches", skip_batches)
        if skip_batches > len(batches):
            raise ValueError(
                f"`skip_batches` must be at most the epoch's {len(batches)} "
                f"batches. Received: skip_batches={skip_batches}"
            )
        batches = batches[skip_batches:]
        sizes = np.asarray([len(b) for b in batches], dtype=np.int64)
        flat = np.concatenate(batches) if batches else np.zeros(0, np.int64)
        ragged = tf.RaggedTensor.from_row_lengths(
            tf.constant(flat, tf.int64), tf.constant(sizes)
        )
        rows = tf.data.Dataset.range(len(batches)).map(lambda i: ragged[i])
        return self._finish(rows)

    def dataset(self) -> tf.data.Dataset:
        """One dataset whose every iteration is a new shuffle (seeded: the
        same seed gives the same sequence of epochs)."""
        seed, size = self.seed, self.batch_size
        rows = tf.data.Dataset.range(self.num_rows)
        if self.shuffle:
            rows = rows.shuffle(self.num_rows, seed=seed, reshuffle_each_iteration=True)
        if not self.bucket:
            return self._finish(rows.batch(size, drop_remainder=self.drop_remainder))
        lengths = self._tf_lengths

        def sort_window(index):
            return tf.gather(index, tf.argsort(tf.gather(lengths, index), stable=True))

        rows = rows.batch(size * self.bucket_window).map(sort_window)
        rows = rows.unbatch().batch(size, drop_remainder=self.drop_remainder)
        if self.shuffle:
            batch_seed = None if seed is None else seed + 1
            rows = rows.shuffle(
                self.bucket_window, seed=batch_seed, reshuffle_each_iteration=True
            )
        # unbatch() loses the cardinality; state it so Keras knows the epoch
        # length.
        rows = rows.apply(tf.data.experimental.assert_cardinality(self.num_batches))
        return self._finish(rows)


def _check_epoch(epoch) -> int:
    return check_non_negative_int("epoch", epoch)


def _check_train_rows(inputs: np.ndarray, targets: np.ndarray, num_items: int) -> None:
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
