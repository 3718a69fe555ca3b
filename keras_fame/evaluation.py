"""Full-ranking evaluation for next-item recommendation.

The protocol is the one of S3-Rec / ICLRec that the FAME paper reports
(Sec. 5.2 of the paper; the user guide's "Evaluation protocol"):

- every item `1..num_items` of the catalogue is a candidate (no sampled
  negatives); id `0` is padding and is never a candidate;
- with `exclude_history=True` the items of the user's input history are
  removed from the candidates before ranking. A consequence, inherited from
  that code: a target that already occurs in the history (a repeat
  interaction) can never be hit and counts as a miss for that user;
- the rank of the target is `1 + the number of OTHER candidates whose score
  is >= the target's score`. Ties are broken pessimistically, so a model that
  gives every item the same score ranks every target last, not first;
- `HR@k = [rank <= k]`, `NDCG@k = [rank <= k] / log2(rank + 1)`,
  `MRR = 1 / rank`, each averaged over users. An unrankable target (excluded,
  the padding id, out of range, or scored NaN / -inf) has rank `inf`: a miss
  for every k and 0 reciprocal rank.

Three layers of API:

- `rank_targets(scores, targets, seen_ids)`: the ranking math, `keras.ops`
  only, `O(batch * num_items)`, no sort;
- `metrics_from_ranks(ranks, ks)`: NumPy averages over users;
- `evaluate_ranking(model, dataset)` and the `RankingEvaluation` callback:
  the harness that feeds a `tf.data.Dataset` through `model.score` in one
  compiled TensorFlow function per batch shape.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_fame.layers._utils import (
    check_bool,
    check_non_negative_int,
    check_positive_int,
    id_mask,
    is_int,
)

__all__ = [
    "RankingEvaluation",
    "evaluate_ranking",
    "metric_names",
    "metrics_from_ranks",
    "rank_targets",
    "rank_targets_chunked",
]

DEFAULT_KS = (5, 10, 20)


def _seen_ids_tensor(seen_ids: Any) -> Any:
    """`seen_ids` as an int32 `(batch, num_seen)` tensor, or a clear error."""
    seen_ids = ops.convert_to_tensor(seen_ids)
    if len(seen_ids.shape) != 2:
        raise ValueError(
            "`seen_ids` must have shape (batch, num_seen). "
            f"Received: seen_ids.shape={seen_ids.shape}"
        )
    return ops.cast(seen_ids, "int32")


def rank_targets(scores: Any, targets: Any, seen_ids: Any | None = None) -> Any:
    """Ranks each target among all catalogue items, without sorting.

    Column `j` of `scores` is item id `j`; column 0 (padding) is never a
    candidate, whatever its score. Items listed in `seen_ids` are removed
    from the candidates (set `seen_ids=None` to keep every item). The rank of
    a target is `1 + #{other candidates v : scores[v] >= scores[target]}`,
    i.e. ties are counted against the target (pessimistic), so a constant
    score never looks like a perfect ranking. The cost is a few elementwise
    passes over the `(batch, num_items + 1)` score matrix; the history mask
    is built by scattering `seen_ids` into a `(batch, num_items + 1)` boolean
    matrix.

    A target gets rank `inf` (a miss for every cut-off) when it is not a
    candidate: it is in `seen_ids`, it is the padding id 0, it is outside
    `[0, num_items]`, or its score is NaN or `-inf`. Ids in `seen_ids`
    outside `[1, num_items]` are ignored.

    Args:
        scores: Float tensor `(batch, num_items + 1)` of item scores.
        targets: Integer tensor `(batch,)` (or `(batch, 1)`) of target ids.
        seen_ids: Optional integer tensor `(batch, num_seen)` of ids to remove
            from the candidates (0 = padding, repeats allowed).

    Returns:
        Float32 tensor `(batch,)` of ranks: 1 is best, `inf` means a miss.

    Example:

    >>> import numpy as np
    >>> from keras_fame.evaluation import rank_targets
    >>> scores = np.array([[-np.inf, 0.9, 0.5, 0.5, 0.1]], "float32")
    >>> ranks = rank_targets(scores, np.array([2]))
    >>> np.asarray(ranks).tolist()  # item 1 beats it, item 3 ties with it
    [3.0]
    >>> np.asarray(rank_targets(scores, np.array([2]), np.array([[1, 3]]))).tolist()
    [1.0]
    """
    scores = ops.convert_to_tensor(scores)
    if len(scores.shape) != 2:
        raise ValueError(
            "`scores` must have shape (batch, num_items + 1). "
            f"Received: scores.shape={scores.shape}"
        )
    scores = ops.cast(scores, "float32")
    targets = ops.convert_to_tensor(targets)
    if len(targets.shape) == 2 and targets.shape[1] == 1:
        targets = targets[:, 0]
    if len(targets.shape) != 1:
        raise ValueError(
            "`targets` must have shape (batch,). "
            f"Received: targets.shape={targets.shape}"
        )
    targets = ops.cast(targets, "int32")
    num_columns = ops.shape(scores)[1]

    valid_target = ops.logical_and(targets >= 1, targets < num_columns)
    safe_targets = ops.expand_dims(ops.where(valid_target, targets, 0), 1)

    if seen_ids is None:
        # Only the padding column is removed.
        columns = ops.arange(num_columns, dtype="int32")
        excluded = ops.expand_dims(ops.equal(columns, 0), 0)
        target_excluded = ops.logical_not(valid_target)
    else:
        seen_ids = _seen_ids_tensor(seen_ids)
        in_range = ops.logical_and(seen_ids >= 1, seen_ids < num_columns)
        seen_ids = ops.where(in_range, seen_ids, 0)
        # A leading 0 per row removes the padding column even when the
        # history has no padding.
        seen_ids = ops.concatenate(
            [ops.expand_dims(ops.zeros_like(targets), 1), seen_ids], axis=1
        )
        excluded = id_mask(seen_ids, num_columns)
        target_excluded = ops.logical_or(
            ops.logical_not(valid_target),
            ops.take_along_axis(excluded, safe_targets, axis=1)[:, 0],
        )

    target_scores = ops.take_along_axis(scores, safe_targets, axis=1)
    ahead = ops.logical_and(scores >= target_scores, ops.logical_not(excluded))
    # `ahead` includes the target itself (a candidate with a non-NaN score),
    # so the count is already `1 + #others`.
    ranks = ops.cast(ops.sum(ops.cast(ahead, "int32"), axis=1), "float32")
    target_scores = target_scores[:, 0]
    unrankable = ops.logical_or(
        target_excluded,
        ops.logical_or(
            ops.isnan(target_scores), ops.equal(target_scores, -float("inf"))
        ),
    )
    return ops.where(unrankable, float("inf"), ranks)


def rank_targets_chunked(
    vectors: Any,
    item_table: Any,
    targets: Any,
    seen_ids: Any | None = None,
    chunk_size: int = 65536,
) -> Any:
    """`rank_targets` for inner-product scores, streaming the item table.

    The scores `vectors @ item_table.T` are never held whole: the table is
    read `chunk_size` rows at a time (a `keras.ops.fori_loop`), so memory is
    `O(batch * chunk_size)` instead of `O(batch * num_items)` and the number
    of items only costs time. Ranking rules are those of `rank_targets`
    (pessimistic ties, padding id 0 and `seen_ids` removed, unrankable
    targets get `inf`). The target's own score comes from a separate
    (batched) matrix product; where its rounding differs from the chunk's, a
    rank can differ from `rank_targets` by the items whose scores lie within
    that rounding of the target's (none in our CPU tests; see
    `benchmarks/bench_scale.py` for a GPU comparison).

    Args:
        vectors: float `(batch, dim)` scoring vectors.
        item_table: float `(num_items + 1, dim)`, row = item id (row 0 is
            never a candidate).
        targets: int `(batch,)`.
        seen_ids: optional int `(batch, num_seen)` ids to remove (0 = none;
            repeats are removed once).
        chunk_size: Table rows scored at once.

    Returns:
        float32 `(batch,)` ranks, `inf` for unrankable targets.
    """
    chunk_size = check_positive_int("chunk_size", chunk_size)
    vectors = ops.convert_to_tensor(vectors)
    item_table = ops.convert_to_tensor(item_table)
    if len(vectors.shape) != 2 or len(item_table.shape) != 2:
        raise ValueError(
            "`vectors` must be (batch, dim) and `item_table` (num_items + 1, dim). "
            f"Received: {vectors.shape} and {item_table.shape}"
        )
    targets = ops.cast(ops.reshape(ops.convert_to_tensor(targets), (-1,)), "int32")
    num_rows = item_table.shape[0]
    if num_rows is None:
        num_rows = ops.shape(item_table)[0]
    chunk_size = (
        int(min(chunk_size, num_rows)) if isinstance(num_rows, int) else int(chunk_size)
    )
    num_chunks = (num_rows + chunk_size - 1) // chunk_size
    dtype = item_table.dtype
    vectors = ops.cast(vectors, dtype)
    # Pad the table to whole chunks; padded rows are no candidates.
    table = ops.pad(item_table, [[0, num_chunks * chunk_size - num_rows], [0, 0]])

    valid_target = ops.logical_and(targets >= 1, targets < num_rows)
    safe_targets = ops.where(valid_target, targets, 0)
    target_rows = ops.take(item_table, safe_targets, axis=0)
    # A (batched) matrix product like the chunks', so that its precision (e.g.
    # TF32 on GPUs) and rounding match theirs.
    target_scores = ops.cast(
        ops.matmul(ops.expand_dims(vectors, 1), ops.expand_dims(target_rows, 2))[
            :, 0, 0
        ],
        "float32",
    )

    if seen_ids is None:
        seen = ops.zeros((ops.shape(targets)[0], 1), "int32")
    else:
        seen = ops.sort(_seen_ids_tensor(seen_ids), axis=1)
        # Each distinct id once: drop a sorted id equal to its left neighbour.
        repeat = ops.concatenate(
            [ops.zeros_like(seen[:, :1], "bool"), ops.equal(seen[:, 1:], seen[:, :-1])],
            axis=1,
        )
        seen = ops.where(repeat, 0, seen)
    in_range = ops.logical_and(seen >= 1, seen < num_rows)
    seen = ops.where(in_range, seen, 0)
    target_seen = ops.any(ops.equal(seen, ops.expand_dims(targets, 1)), axis=1)
    # The target is counted once at the end, not among the seen or the chunk.
    seen = ops.where(ops.equal(seen, ops.expand_dims(targets, 1)), 0, seen)
    threshold = ops.expand_dims(target_scores, 1)

    def body(index, count):
        start = index * chunk_size
        chunk = ops.slice(table, [start, 0], [chunk_size, ops.shape(table)[1]])
        scores = ops.cast(ops.matmul(vectors, ops.transpose(chunk)), "float32")
        ids = start + ops.arange(chunk_size, dtype="int32")
        candidate = ops.logical_and(
            ops.logical_and(ids >= 1, ids < num_rows),
            ops.not_equal(ops.expand_dims(ids, 0), ops.expand_dims(targets, 1)),
        )
        ahead = ops.logical_and(scores >= threshold, candidate)
        count = count + ops.sum(ops.cast(ahead, "int32"), axis=1)
        here = ops.logical_and(
            ops.logical_and(seen >= start, seen < start + chunk_size), seen >= 1
        )
        seen_scores = ops.take_along_axis(
            scores, ops.clip(seen - start, 0, chunk_size - 1), axis=1
        )
        seen_ahead = ops.logical_and(here, seen_scores >= threshold)
        return count - ops.sum(ops.cast(seen_ahead, "int32"), axis=1)

    count = ops.fori_loop(
        0, num_chunks, body, ops.zeros((ops.shape(targets)[0],), "int32")
    )
    ranks = ops.cast(count, "float32") + 1.0
    unrankable = ops.logical_or(
        ops.logical_or(ops.logical_not(valid_target), target_seen),
        ops.logical_or(
            ops.isnan(target_scores), ops.equal(target_scores, -float("inf"))
        ),
    )
    return ops.where(unrankable, float("inf"), ranks)


def _check_ks(ks: Any, name: str = "ks") -> tuple[int, ...]:
    """Validates cut-offs: positive ints, deduplicated, order kept."""
    if is_int(ks):
        ks = (ks,)
    if isinstance(ks, (str, bytes)) or not isinstance(ks, Iterable):
        raise ValueError(
            f"`{name}` must be a sequence of positive integers. Received: {name}={ks!r}"
        )
    ks = tuple(ks)
    if not ks or any(not is_int(k) or k < 1 for k in ks):
        raise ValueError(
            f"`{name}` must be a non-empty sequence of positive integers. "
            f"Received: {name}={ks!r}"
        )
    return tuple(dict.fromkeys(int(k) for k in ks))


def metric_names(ks: Sequence[int] = DEFAULT_KS) -> list[str]:
    """Names of the metrics returned for cut-offs `ks`, in order.

    Args:
        ks: Positive integer cut-offs.

    Returns:
        `["HR@k" for k in ks] + ["NDCG@k" for k in ks] + ["MRR"]`.

    Example:

    >>> from keras_fame.evaluation import metric_names
    >>> metric_names((5, 10))
    ['HR@5', 'HR@10', 'NDCG@5', 'NDCG@10', 'MRR']
    """
    ks = _check_ks(ks)
    return [f"HR@{k}" for k in ks] + [f"NDCG@{k}" for k in ks] + ["MRR"]


def metrics_from_ranks(ranks: Any, ks: Sequence[int] = DEFAULT_KS) -> dict:
    """Averages HR@k, NDCG@k and MRR over users, from target ranks.

    Args:
        ranks: Array-like `(num_users,)` of ranks, each `>= 1` or `inf`
            (a miss).
        ks: Positive integer cut-offs.

    Returns:
        Dict with `"HR@k"` for each k, then `"NDCG@k"` for each k (floats),
        `"MRR"` (float) and `"users"` (int, the number of ranks).
        `HR@k = mean(rank <= k)`, `NDCG@k = mean([rank <= k] / log2(rank + 1))`
        (one relevant item, so the ideal DCG is 1), `MRR = mean(1 / rank)`.

    Example:

    >>> from keras_fame.evaluation import metrics_from_ranks
    >>> m = metrics_from_ranks([1, 3, float("inf")], ks=(1, 3))
    >>> round(m["HR@3"], 4), round(m["NDCG@3"], 4), m["users"]
    (0.6667, 0.5, 3)
    """
    ks = _check_ks(ks)
    ranks = np.asarray(ranks, dtype=np.float64).reshape(-1)
    if ranks.size == 0:
        raise ValueError("`ranks` is empty: there is no user to average over.")
    if np.isnan(ranks).any() or (ranks < 1).any():
        raise ValueError(
            "`ranks` must be >= 1 or inf. Received: "
            f"min={np.nanmin(ranks) if not np.isnan(ranks).all() else 'nan'}, "
            f"nan count={int(np.isnan(ranks).sum())}"
        )
    finite = np.isfinite(ranks)
    gains = np.zeros_like(ranks)
    gains[finite] = 1.0 / np.log2(ranks[finite] + 1.0)
    result: dict[str, Any] = {}
    for k in ks:
        result[f"HR@{k}"] = float(np.mean(ranks <= k))
    for k in ks:
        result[f"NDCG@{k}"] = float(np.mean(np.where(ranks <= k, gains, 0.0)))
    result["MRR"] = float(np.mean(1.0 / ranks))
    result["users"] = int(ranks.size)
    return result


def _describe(element: Any) -> str:
    if isinstance(element, (tuple, list)):
        return f"a {type(element).__name__} of {len(element)} parts"
    return f"an element of type {type(element).__name__}"


def _split_element(element: Any) -> tuple[Any, Any, Any]:
    """Returns `(item_ids, seen_ids, targets)` from one dataset element."""
    if not isinstance(element, (tuple, list)) or len(element) != 2:
        raise ValueError(
            "Each `dataset` element must be a pair `(features, target)`, "
            "with features a dict {'item_ids', 'seen_ids'} or an item_ids "
            f"tensor. Received: {_describe(element)}"
        )
    features, targets = element
    if isinstance(features, Mapping):
        if "item_ids" not in features:
            raise ValueError(
                "`dataset` features must contain the key 'item_ids'. "
                f"Received keys: {sorted(features)}"
            )
        item_ids = features["item_ids"]
        seen_ids = features.get("seen_ids", item_ids)
    else:
        item_ids = seen_ids = features
    return item_ids, seen_ids, targets


def _as_int_array(value: Any, name: str, ndim: int) -> np.ndarray:
    array = np.asarray(value)
    if ndim == 1 and array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != ndim or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"`dataset` {name} must be a batched integer tensor of rank {ndim}"
            f" (is the dataset batched?). Received: dtype={array.dtype}, "
            f"shape={array.shape}"
        )
    return array.astype(np.int32, copy=False)


class _RankingEvaluator:
    """Feeds batches through `model.score` + `rank_targets`, compiled once."""

    def __init__(
        self,
        model: Any,
        exclude_history: bool,
        run_eagerly: bool = False,
        item_chunk_size: int | None = None,
    ):
        item_chunk_size = check_positive_int(
            "item_chunk_size", item_chunk_size, allow_none=True
        )
        if item_chunk_size is not None:
            for method in ("user_vectors", "item_table"):
                if not callable(getattr(model, method, None)):
                    raise TypeError(
                        "`item_chunk_size` needs a model with `user_vectors(item_ids)` "
                        f"and `item_table()` (SASRec, FAME). {type(model).__name__} "
                        f"has no `{method}`."
                    )
        elif not callable(getattr(model, "score", None)):
            raise TypeError(
                "`model` must have a `score(item_ids)` method returning "
                f"(batch, num_items + 1) scores. Received: {type(model).__name__}"
            )
        self.model = model
        self.exclude_history = bool(exclude_history)
        self.item_chunk_size = item_chunk_size
        if run_eagerly:
            self._step = self._rank_batch
        else:
            import tensorflow as tf

            self._step = tf.function(self._rank_batch, reduce_retracing=True)

    def _rank_batch(self, item_ids, seen_ids, targets):
        if self.item_chunk_size is not None:
            table = self.model.item_table()
            ranks = rank_targets_chunked(
                self.model.user_vectors(item_ids),
                table,
                targets,
                seen_ids if self.exclude_history else None,
                self.item_chunk_size,
            )
            return ranks, ops.shape(table)[0]
        scores = self.model.score(item_ids)
        ranks = rank_targets(
            scores, targets, seen_ids if self.exclude_history else None
        )
        return ranks, ops.shape(scores)[1]

    def ranks(self, dataset: Iterable) -> np.ndarray:
        """Ranks of every target in `dataset`, in dataset order."""
        num_items = getattr(self.model, "num_items", None)
        all_ranks = []
        for element in dataset:
            item_ids, seen_ids, targets = _split_element(element)
            item_ids = _as_int_array(item_ids, "item_ids", 2)
            seen_ids = _as_int_array(seen_ids, "seen_ids", 2)
            targets = _as_int_array(targets, "target", 1)
            if not item_ids.shape[0] == seen_ids.shape[0] == targets.shape[0]:
                raise ValueError(
                    "`dataset` item_ids, seen_ids and target must have the same "
                    f"batch size. Received: {item_ids.shape}, {seen_ids.shape}, "
                    f"{targets.shape}"
                )
            if targets.shape[0] == 0:
                continue
            ranks, num_columns = self._step(
                ops.convert_to_tensor(item_ids),
                ops.convert_to_tensor(seen_ids),
                ops.convert_to_tensor(targets),
            )
            num_columns = int(num_columns)
            if num_items is not None and num_columns != int(num_items) + 1:
                raise ValueError(
                    "`model.score` must return num_items + 1 columns "
                    f"(column = item id). Received {num_columns} columns for "
                    f"model.num_items={num_items}"
                )
            limit = num_columns - 1
            if targets.min() < 1 or targets.max() > limit:
                raise ValueError(
                    f"`dataset` targets must be item ids in [1, {limit}]. "
                    f"Received: min={targets.min()}, max={targets.max()}"
                )
            if seen_ids.size and (seen_ids.min() < 0 or seen_ids.max() > limit):
                raise ValueError(
                    f"`dataset` seen_ids must be in [0, {limit}]. "
                    f"Received: min={seen_ids.min()}, max={seen_ids.max()}"
                )
            all_ranks.append(np.asarray(ranks))
        if not all_ranks:
            raise ValueError("`dataset` yielded no examples to evaluate.")
        return np.concatenate(all_ranks)


def evaluate_ranking(
    model: Any,
    dataset: Iterable,
    ks: Sequence[int] = DEFAULT_KS,
    exclude_history: bool = True,
    *,
    run_eagerly: bool = False,
    item_chunk_size: int | None = None,
) -> dict:
    """Full-ranking next-item evaluation: HR@k, NDCG@k and MRR over users.

    Every element of `dataset` is one batch of users, each evaluated once:
    `model.score(item_ids)` scores every item, the history is removed from
    the candidates (if `exclude_history`), the target is ranked with
    pessimistic ties (see `rank_targets`), and the metrics are averaged over
    all users (see `metrics_from_ranks`). Scoring and ranking run in one
    `tf.function` (retraced at most once more for a ragged last batch).

    With `exclude_history=True` (the S3-Rec / ICLRec / FAME protocol) a
    target that is already in `seen_ids` can never be hit; it counts as a
    miss. With `exclude_history=False` only the padding id is removed.

    Args:
        model: Object with `score(item_ids)` returning float scores
            `(batch, num_items + 1)`, column = item id (column 0 is never
            ranked), and optionally `num_items` (checked against the scores).
            `score` must be traceable by `tf.function` unless `run_eagerly`.
        dataset: `tf.data.Dataset` or iterable of batched `(features, target)`:
            features is a dict with `"item_ids"` (int `(batch, max_len)`,
            left-padded with 0) and optionally `"seen_ids"` (int
            `(batch, num_seen)`, the full input history padded with 0;
            defaults to `item_ids`), or a plain `item_ids` tensor; target is
            int `(batch,)` with ids in `[1, num_items]`.
        ks: Positive integer cut-offs.
        exclude_history: Remove `seen_ids` from the candidates.
        run_eagerly: Call `model.score` eagerly (for debugging, or for a
            model whose `score` is not traceable).
        item_chunk_size: Stream the catalogue `item_chunk_size` items at a
            time (`rank_targets_chunked`): memory `batch * item_chunk_size`
            scores instead of `batch * num_items`, for large catalogues.
            Needs `model.user_vectors` and `model.item_table` (SASRec, FAME).

    Returns:
        Dict `{"HR@k": float, ..., "NDCG@k": float, ..., "MRR": float,
        "users": int}`, HR keys first, in the order of `ks`.

    Example:

    >>> import numpy as np
    >>> from keras import ops
    >>> from keras_fame.evaluation import evaluate_ranking
    >>> class Popularity:  # scores every item by a fixed popularity
    ...     num_items = 4
    ...     def score(self, item_ids):
    ...         pop = ops.convert_to_tensor([-1e9, 4.0, 3.0, 2.0, 1.0])
    ...         return ops.zeros_like(item_ids[:, :1], "float32") + pop
    >>> data = [({"item_ids": np.array([[0, 1], [1, 2]]),
    ...           "seen_ids": np.array([[0, 1], [1, 2]])}, np.array([2, 4]))]
    >>> m = evaluate_ranking(Popularity(), data, ks=(1, 2))
    >>> m["HR@1"], m["HR@2"], m["users"]
    (0.5, 1.0, 2)
    """
    ks = _check_ks(ks)
    evaluator = _RankingEvaluator(model, exclude_history, run_eagerly, item_chunk_size)
    return metrics_from_ranks(evaluator.ranks(dataset), ks)


class RankingEvaluation(keras.callbacks.Callback):
    """Full-ranking validation after each epoch, with early stopping.

    After every `every`-th epoch the callback runs `evaluate_ranking` on
    `valid_dataset` with the model being trained and writes the metrics into
    the epoch `logs` with `prefix` (e.g. `logs["val_NDCG@20"]`), so `History`,
    `TensorBoard`, `CSVLogger` and `ModelCheckpoint` placed after it in the
    callback list see them. The monitored metric is maximised: training
    stops (`model.stop_training = True`) once `patience` epochs have passed
    since the best epoch without an improvement larger than `min_delta`, and
    the weights of the best epoch are restored when training ends.

    The scoring function is compiled once per model and reused across
    epochs; the model's current weights are read at every evaluation.

    With an optimizer that keeps a moving average of the weights
    (`use_ema=True`, Polyak averaging) and `average_weights`, each
    evaluation scores the averaged weights: they are set for the
    evaluation (and for saving the best ones) and the raw weights are put
    back exactly before the next callback, so training, and callbacks after
    this one, are unchanged. The best weights kept and restored are then
    averaged ones. Callbacks after this one see the averaged weights' metrics
    in `logs` but the raw weights in the model: a `ModelCheckpoint` there
    saves raw weights; the best averaged ones are `state_dir`'s
    `best.weights.h5` and the model once `fit` returns.

    Args:
        valid_dataset: Batched `(features, target)` dataset, as for
            `evaluate_ranking`.
        monitor: Metric to maximise, with or without `prefix`
            (e.g. `"NDCG@20"` or `"val_NDCG@20"`).
        patience: Epochs without improvement before stopping; `None`
            never stops.
        restore_best_weights: At the end of training, set the weights of the
            best evaluated epoch (even if training was not stopped early).
        ks: Positive integer cut-offs.
        exclude_history: Remove the user's history from the candidates.
        every: Evaluate every `every` epochs (epochs `every - 1`,
            `2 * every - 1`, ... counting from 0).
        verbose: 0 silent, 1 a one-line summary per evaluation.
        prefix: Prefix of the keys written into `logs`.
        min_delta: Smallest increase of `monitor` that counts as improvement.
        run_eagerly: Call `model.score` eagerly (debugging only).
        state_dir: Folder where the early-stopping state (best value and
            epoch, best weights, history) is saved after every evaluation
            and reloaded at the start of training, so that a run resumed
            with `keras.callbacks.BackupAndRestore` keeps its patience
            count and its best weights.
        item_chunk_size: Stream the item table in chunks of this many items
            (see `evaluate_ranking`); `None` scores all items at once.
        average_weights: Evaluate the optimizer's averaged weights when it
            keeps them (see above); `False`: always the raw weights.

    Attributes:
        best: Best value of `monitor` so far (`-inf` before any evaluation).
        best_epoch: 0-based epoch of `best` (`None` before any improvement).
        stopped_epoch: 0-based epoch at which training was stopped, or `None`.
        history: One dict per evaluation: `{"epoch", metrics..., "users",
            "seconds"}`.

    Example:

    ```python
    from keras_fame.evaluation import RankingEvaluation

    # valid_ds yields ({"item_ids", "seen_ids"}, target) batches.
    callback = RankingEvaluation(valid_ds, monitor="NDCG@20", patience=10)
    model.fit(train_ds, epochs=200, callbacks=[callback])
    print(callback.best, callback.best_epoch + 1)
    # Put ModelCheckpoint(monitor="val_NDCG@20", mode="max") after it.
    ```
    """

    def __init__(
        self,
        valid_dataset: Iterable,
        monitor: str = "NDCG@20",
        patience: int | None = 10,
        restore_best_weights: bool = True,
        ks: Sequence[int] = DEFAULT_KS,
        exclude_history: bool = True,
        every: int = 1,
        verbose: int = 1,
        prefix: str = "val_",
        min_delta: float = 0.0,
        run_eagerly: bool = False,
        state_dir: str | None = None,
        item_chunk_size: int | None = None,
        average_weights: bool = True,
    ):
        super().__init__()
        self.ks = _check_ks(ks)
        if not isinstance(prefix, str):
            raise ValueError(f"`prefix` must be a string. Received: prefix={prefix!r}")
        names = metric_names(self.ks)
        key = monitor
        if isinstance(key, str) and prefix and key.startswith(prefix):
            if key not in names:
                key = key[len(prefix) :]
        if key not in names:
            raise ValueError(
                f"`monitor` must be one of {names} (optionally prefixed with "
                f"{prefix!r}). Received: monitor={monitor!r}"
            )
        patience = check_non_negative_int("patience", patience, allow_none=True)
        every = check_positive_int("every", every)
        if not isinstance(min_delta, (int, float)) or min_delta < 0:
            raise ValueError(
                "`min_delta` must be a non-negative number. "
                f"Received: min_delta={min_delta!r}"
            )
        if valid_dataset is None:
            raise ValueError("`valid_dataset` must be a dataset, not None.")
        self.valid_dataset = valid_dataset
        self.monitor = key
        self.patience = None if patience is None else int(patience)
        self.restore_best_weights = bool(restore_best_weights)
        self.exclude_history = bool(exclude_history)
        self.every = int(every)
        self.verbose = int(verbose)
        self.prefix = prefix
        self.min_delta = float(min_delta)
        self.run_eagerly = bool(run_eagerly)
        self.state_dir = None if state_dir is None else os.fspath(state_dir)
        self.item_chunk_size = item_chunk_size
        self.average_weights = check_bool("average_weights", average_weights)
        self._evaluator = None
        self._reset()

    def _reset(self) -> None:
        self.best = -math.inf
        self.best_epoch = None
        self.best_weights = None
        self.stopped_epoch = None
        self.history = []

    def on_train_begin(self, logs=None):
        self._reset()
        self._load_state()

    # With `state_dir`, the early-stopping state (best value, best epoch, the
    # best weights, the history) survives an interruption: together with
    # `keras.callbacks.BackupAndRestore` a rerun continues where it stopped.
    def _state_paths(self):
        return (
            os.path.join(self.state_dir, "ranking_state.json"),
            os.path.join(self.state_dir, "best.weights.h5"),
        )

    def _load_state(self) -> None:
        if self.state_dir is None:
            return
        state_path, weights_path = self._state_paths()
        if not os.path.exists(state_path):
            return
        with open(state_path) as f:
            state = json.load(f)
        self.best = state["best"]
        self.best_epoch = state["best_epoch"]
        self.history = state["history"]
        if self.restore_best_weights and os.path.exists(weights_path):
            # The file also holds the optimizer's state of that epoch (its
            # moments, step count, averages): keep the current one.
            optimizer = getattr(self.model, "optimizer", None)
            slots = list(getattr(optimizer, "variables", None) or [])
            state = [ops.convert_to_numpy(v) for v in slots]
            current = self.model.get_weights()
            self.model.load_weights(weights_path)
            self.best_weights = self.model.get_weights()
            self.model.set_weights(current)
            for variable, value in zip(slots, state, strict=True):
                variable.assign(value)

    def _save_state(self, improved: bool) -> None:
        if self.state_dir is None:
            return
        os.makedirs(self.state_dir, exist_ok=True)
        state_path, weights_path = self._state_paths()
        if improved and self.restore_best_weights:
            self.model.save_weights(weights_path + ".tmp.weights.h5")
            os.replace(weights_path + ".tmp.weights.h5", weights_path)
        state = {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "history": self.history,
        }
        with open(state_path + ".tmp", "w") as f:
            json.dump(state, f, default=float)
        os.replace(state_path + ".tmp", state_path)

    def evaluate(self) -> dict:
        """Evaluates the current model on `valid_dataset` (no side effects).

        Returns:
            The dict of `evaluate_ranking`.
        """
        if self._evaluator is None or self._evaluator.model is not self.model:
            self._evaluator = _RankingEvaluator(
                self.model, self.exclude_history, self.run_eagerly, self.item_chunk_size
            )
        return metrics_from_ranks(self._evaluator.ranks(self.valid_dataset), self.ks)

    def _averages(self):
        """`(variable, average)` pairs when the weights are to be evaluated
        averaged, else `None`."""
        optimizer = getattr(self.model, "optimizer", None)
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # loss scale
        if not (self.average_weights and getattr(optimizer, "use_ema", False)):
            return None
        averages = getattr(optimizer, "_model_variables_moving_average", None)
        # Before the first step the averages are zeros, not weights.
        if not averages or int(ops.convert_to_numpy(optimizer.iterations)) == 0:
            return None
        return [
            (variable, average)
            for variable, average in zip(
                optimizer._trainable_variables, averages, strict=True
            )
            if average is not None  # Keras keeps none for some variables
        ]

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        pairs = self._averages()
        if pairs is None:
            self._evaluate_epoch(epoch, logs)
            return
        raw = [ops.convert_to_numpy(variable) for variable, _ in pairs]
        for variable, average in pairs:
            variable.assign(average)
        try:
            self._evaluate_epoch(epoch, logs)
        finally:
            for (variable, _), value in zip(pairs, raw, strict=True):
                variable.assign(value)

    def _evaluate_epoch(self, epoch, logs):
        start = time.perf_counter()
        metrics = self.evaluate()
        seconds = time.perf_counter() - start
        if logs is not None:
            for name, value in metrics.items():
                if name != "users":
                    logs[self.prefix + name] = value
        self.history.append({"epoch": epoch, **metrics, "seconds": seconds})

        value = metrics[self.monitor]
        improved = not math.isnan(value) and value > self.best + self.min_delta
        if improved:
            self.best = value
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
        reference = -1 if self.best_epoch is None else self.best_epoch
        if (
            not improved
            and self.patience is not None
            and epoch - reference >= self.patience
        ):
            self.stopped_epoch = epoch
            self.model.stop_training = True
        self._save_state(improved)

        if self.verbose:
            shown = " - ".join(
                f"{self.prefix}{name}: {metrics[name]:.4f}"
                for name in metric_names(self.ks)
            )
            best_epoch = "-" if self.best_epoch is None else self.best_epoch + 1
            print(
                f"\nEpoch {epoch + 1}: {shown} ({metrics['users']} users, "
                f"{seconds:.1f}s); best {self.prefix}{self.monitor}: "
                f"{self.best:.4f} at epoch {best_epoch}"
                + (" - early stopping" if self.stopped_epoch == epoch else "")
            )

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose:
                print(
                    "Restoring model weights from the end of the best epoch: "
                    f"{self.best_epoch + 1}."
                )
            self.model.set_weights(self.best_weights)
