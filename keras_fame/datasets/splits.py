"""Leave-one-out splits as NumPy arrays (no TensorFlow here).

Sequences are stored flat: `items[offsets[u]:offsets[u + 1]]` is user `u`'s
time-ordered sequence `s_1..s_n`. For a user with `n` items:

- training: inputs `s_1..s_{n-3}`, next-item targets `s_2..s_{n-2}` (no row
  when `n < 4`); with an empty prefix also target `s_1` after no input (a
  row from `n >= 3`);
- validation: history `s_1..s_{n-2}`, target `s_{n-1}`;
- test: history `s_1..s_{n-1}`, target `s_n`.

Users with `n < 3` have no validation history and are left out of both
evaluation splits (they are reported, never dropped silently).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from keras_fame.layers._utils import check_choice, check_positive_int

EVAL_SPLITS = ("valid", "test")


def pad_segments(
    values: np.ndarray, starts: np.ndarray, ends: np.ndarray, max_len: int
) -> np.ndarray:
    """Left-pads (and left-truncates) segments of a flat array to `max_len`.

    Row `r` holds the last `min(ends[r] - starts[r], max_len)` values of
    `values[starts[r]:ends[r]]`, right-aligned, with zeros on the left.

    Args:
        values: the flat 1-D array.
        starts, ends: int arrays of segment bounds (`ends >= starts`).
        max_len: row width.

    Returns:
        An int32 array of shape `(len(starts), max_len)`.

    Example:
    >>> pad_segments(np.arange(1, 6), np.array([0, 2]), np.array([2, 5]), 2).tolist()
    [[1, 2], [4, 5]]
    """
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    rows = len(starts)
    out = np.zeros((rows, max_len), dtype=np.int32)
    lengths = np.minimum(ends - starts, max_len)
    total = int(lengths.sum())
    if total == 0:
        return out
    row = np.repeat(np.arange(rows), lengths)
    within = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    column = max_len - lengths[row] + within
    source = ends[row] - lengths[row] + within
    out[row, column] = values[source]
    return out


def right_pad_segments(
    values: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> np.ndarray:
    """Right-pads full segments to the longest one (no truncation).

    Args:
        values: the flat 1-D array.
        starts, ends: int arrays of segment bounds.

    Returns:
        An int32 array of shape `(len(starts), max(ends - starts))`.
    """
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(ends, dtype=np.int64) - starts
    width = int(lengths.max()) if len(lengths) else 0
    out = np.zeros((len(starts), width), dtype=np.int32)
    row = np.repeat(np.arange(len(starts)), lengths)
    within = np.arange(int(lengths.sum())) - np.repeat(
        np.cumsum(lengths) - lengths, lengths
    )
    out[row, within] = values[starts[row] + within]
    return out


def concat_segments(
    values: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> np.ndarray:
    """Concatenates `values[starts[r]:ends[r]]` for every row `r` (vectorised).

    Example:
    >>> concat_segments(np.arange(10), np.array([1, 5]), np.array([3, 7])).tolist()
    [1, 2, 5, 6]
    """
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(ends, dtype=np.int64) - starts
    total = int(lengths.sum())
    within = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return values[np.repeat(starts, lengths) + within]


def check_row_options(windows: bool, prefixes: bool, empty_prefix: bool) -> None:
    """Raises a `ValueError` for `windows` with `prefixes`, or `empty_prefix`
    without `prefixes`."""
    if prefixes and windows:
        raise ValueError(
            "`prefixes` and `windows` exclude each other; pick one (windows "
            "need `prefixes=False`). Received: windows=True, prefixes=True"
        )
    if empty_prefix and not prefixes:
        raise ValueError(
            "`empty_prefix=True` adds a row to the prefix rows: `empty_prefix` "
            "needs `prefixes=True`. Received: empty_prefix=True, prefixes=False"
        )


def train_windows(
    offsets: np.ndarray,
    max_len: int,
    windows: bool = False,
    stride: int | None = None,
    prefixes: bool = False,
    empty_prefix: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Segments of the flat item array that make the training rows.

    For user `u` with `n >= 4` items (`n >= 3` with `empty_prefix`), training
    inputs are the positions
    `[offsets[u], offsets[u] + n - 3)` of the flat array and the target of
    position `p` is position `p + 1`.

    Args:
        offsets: int64 array of length `num_users + 1`.
        max_len: width of a row.
        windows: if False, one row per user holding the most recent `max_len`
            inputs (older ones are dropped). If True, longer histories are cut
            into several rows, from the most recent end backwards.
        stride: step between consecutive window ends (`1 <= stride <=
            max_len`, default `max_len`: non-overlapping windows). With a
            smaller stride windows overlap and give targets more context; each
            target is still used exactly once: it stays in the oldest window
            that contains it, and is masked (0) in the others.
        prefixes: one row per training target instead: the row of target
            `p + 1` holds the (at most `max_len`) inputs up to `p` and keeps
            only its last target, as the prefix-augmented training of the
            ICSRec/BSARec/FMLP-Rec code. Every target is used once, read
            exactly as evaluation reads a history. Excludes `windows`.
        empty_prefix: with `prefixes`, also one row per user of at least 3
            items with an empty input whose target is the user's first item
            (the shortest prefix of the BSARec/FMLP-Rec code's rows): the
            model learns which items start a history. The row's segment is
            empty (`starts == ends`).

    Returns:
        A tuple `(starts, ends, keep_from)` of int64 arrays, one entry per row:
        the input segment `[starts, ends)` of the flat array, and the first
        flat position whose target is kept (targets before it are masked).
        A prefix row keeps the target of its last position, `ends - 1`: the
        item at `ends`, also for an empty prefix (`ends - 1 < starts`).
    """
    if stride is None:
        stride = max_len
    if not 1 <= stride <= max_len:
        raise ValueError(
            f"`stride` must lie in [1, max_len={max_len}]. Received: stride={stride}"
        )
    check_row_options(windows, prefixes, empty_prefix)
    # Inputs of a user's shortest row. A user with 3 items has no training
    # input, but its first item is the target of an empty prefix.
    shortest = 0 if empty_prefix else 1
    begin = offsets[:-1]
    m = offsets[1:] - begin - 3  # number of training inputs per user
    has_row = m >= shortest
    begin, m = begin[has_row], m[has_row]
    if prefixes:
        rows = m + 1 - shortest
        user = np.repeat(np.arange(len(m)), rows)
        local_end = shortest + np.arange(int(rows.sum()))
        local_end -= np.repeat(np.cumsum(rows) - rows, rows)
        ends = begin[user] + local_end
        return np.maximum(begin[user], ends - max_len), ends, ends - 1
    if not windows:
        ends = begin + m
        starts = np.maximum(begin, ends - max_len)
        return starts, ends, starts.copy()
    extra = np.maximum(m - max_len, 0)
    count = 1 + -(-extra // stride)  # ceil division
    user = np.repeat(np.arange(len(m)), count)
    k = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    local_end = m[user] - k * stride
    local_start = np.maximum(local_end - max_len, 0)
    is_oldest = k == count[user] - 1
    local_keep = np.where(is_oldest, local_start, local_end - stride)
    base = begin[user]
    return base + local_start, base + local_end, base + local_keep


def train_arrays(
    items: np.ndarray,
    offsets: np.ndarray,
    max_len: int = 50,
    windows: bool = False,
    stride: int | None = None,
    prefixes: bool = False,
    empty_prefix: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Training inputs and next-item targets, left-padded to `max_len`.

    Args:
        items: the flat int item array.
        offsets: int64 user offsets (length `num_users + 1`).
        max_len: row width.
        windows, stride, prefixes, empty_prefix: see `train_windows`.

    Returns:
        A tuple `(inputs, targets)` of int32 arrays of shape `(rows, max_len)`;
        `targets[r, t]` is the item after `inputs[r, t]`, 0 at padding (and at
        positions masked by an overlapping `stride`, or all but the last with
        `prefixes`).
    """
    max_len = check_positive_int("max_len", max_len)
    starts, ends, keep_from = train_windows(
        offsets, max_len, windows, stride, prefixes, empty_prefix
    )
    inputs = pad_segments(items, starts, ends, max_len)
    if prefixes:
        # One target per row, after its last input (for an empty prefix: the
        # user's first item), in the last column.
        targets = np.zeros_like(inputs)
        targets[:, -1] = items[ends]
        return inputs, targets
    targets = pad_segments(items, starts + 1, ends + 1, max_len)
    masked = keep_from - starts  # number of leading real positions to mask
    if masked.any():
        lengths = np.minimum(ends - starts, max_len)
        first_real = max_len - lengths
        column = np.arange(max_len)[None, :]
        mask = column < (first_real + masked)[:, None]
        targets[mask] = 0
    return inputs, targets


@dataclasses.dataclass(frozen=True)
class EvalArrays:
    """Evaluation rows of one split, as NumPy arrays.

    Attributes:
        item_ids: int32 `(users, max_len)`: the most recent `max_len` items of
            each history, left-padded with 0.
        history_starts, history_ends: int64 bounds of each full history in the
            flat item array (for `seen_ids`).
        targets: int32 `(users,)`: the held-out item.
        user_index: int64 `(users,)`: row of each user in the dataset.
    """

    item_ids: np.ndarray
    history_starts: np.ndarray
    history_ends: np.ndarray
    targets: np.ndarray
    user_index: np.ndarray


def eval_arrays(
    items: np.ndarray, offsets: np.ndarray, split: str = "valid", max_len: int = 50
) -> EvalArrays:
    """Leave-one-out evaluation rows for `split` (`"valid"` or `"test"`).

    Args:
        items: the flat int item array.
        offsets: int64 user offsets (length `num_users + 1`).
        split: `"valid"` (history `s_1..s_{n-2}`, target `s_{n-1}`) or
            `"test"` (history `s_1..s_{n-1}`, target `s_n`).
        max_len: width of `item_ids`.

    Returns:
        An `EvalArrays`; users with fewer than 3 items are not included.
    """
    split = check_choice("split", split, EVAL_SPLITS)
    max_len = check_positive_int("max_len", max_len)
    lengths = offsets[1:] - offsets[:-1]
    user_index = np.flatnonzero(lengths >= 3)
    starts = offsets[:-1][user_index]
    ends = offsets[1:][user_index] - (2 if split == "valid" else 1)
    return EvalArrays(
        item_ids=pad_segments(items, starts, ends, max_len),
        history_starts=starts,
        history_ends=ends,
        targets=items[ends].astype(np.int32),
        user_index=user_index,
    )


def check_id_range(array: np.ndarray, num_items: int, name: str) -> None:
    """Raises `ValueError` unless every id of `array` lies in `[0, num_items]`.

    Args:
        array: an integer array of item ids.
        num_items: the largest valid item id.
        name: how to name the array in the message.
    """
    array = np.asarray(array)
    if array.size == 0:
        return
    if array.dtype.kind not in "iu":
        raise ValueError(
            f"`{name}` must hold integer item ids, got dtype {array.dtype}"
        )
    bad = (array < 0) | (array > num_items)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"`{name}` holds item id {int(array[where])} at index {where}, outside "
            f"[0, num_items={num_items}] (0 is padding)"
        )
