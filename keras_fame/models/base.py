"""Shared machinery of the sequential recommenders (keras.ops only)."""

import contextlib
import os
import sys

import keras
import numpy as np
from keras import ops

from keras_fame.layers._utils import (
    _MASK_VALUE,
    check_bool,
    check_choice,
    check_epsilon,
    check_heads_divide,
    check_positive_int,
    check_rate,
    default_initializer,
    id_mask,
)
from keras_fame.layers.position_embedding import ANCHORS, PositionEmbedding
from keras_fame.layers.transformer_block import TransformerBlock
from keras_fame.vocabulary import Vocabulary

SOFTMAXES = ("full", "sampled")
NEGATIVES = ("uniform", "in_batch", "mixed")
_VOCABULARY_FILE = "vocabulary.json"


def scale_loss_for_distribution(value):
    """`value` divided by the number of replicas that each compute it.

    Under a `tf.distribute` strategy (TensorFlow backend) every replica
    computes the loss of its share of the global batch and the gradients are
    summed over the replicas, so a per-replica mean is divided by
    `num_replicas_in_sync` to give the global mean's gradient. Without a
    strategy, with one replica or on another backend, `value` is returned
    unchanged. The same as Keras' own loss scaling, without its private
    module.
    """
    if keras.backend.backend() != "tensorflow":
        return value
    # The TensorFlow backend has imported TensorFlow; this module does not
    # import it so that it stays importable on every backend.
    num_replicas = (
        sys.modules["tensorflow"].distribute.get_strategy().num_replicas_in_sync
    )
    if num_replicas > 1:
        value = ops.multiply(value, ops.cast(1.0 / num_replicas, value.dtype))
    return value


def check_label_smoothing(label_smoothing, softmax: str) -> None:
    """Raises a `ValueError` unless `label_smoothing` is a rate in [0, 1),
    and 0 where `softmax` is not `"full"`."""
    check_rate("label_smoothing", label_smoothing)
    if label_smoothing and softmax != "full":
        raise ValueError(
            "`label_smoothing` needs softmax='full' (it spreads its share "
            "over the whole catalogue). Received: "
            f"label_smoothing={label_smoothing!r}, softmax={softmax!r}"
        )


def check_loss_excludes_history(loss_excludes_history, softmax: str) -> None:
    """Raises a `ValueError` unless `loss_excludes_history` is a bool, and
    False where `softmax` is not `"full"`."""
    check_bool("loss_excludes_history", loss_excludes_history)
    if loss_excludes_history and softmax != "full":
        raise ValueError(
            "`loss_excludes_history` needs softmax='full' (it removes items "
            "from the whole catalogue's softmax). Received: "
            f"loss_excludes_history={loss_excludes_history!r}, softmax={softmax!r}"
        )


def _inputs_before_targets(item_ids, num_targets):
    """The inputs each target follows: `(batch * num_targets, length)`.

    `item_ids` is `(batch, length)`; the targets are those of its last
    `num_targets` columns. Row `b * num_targets + j` holds row `b`'s ids up to
    and including the target's column (`length - num_targets + j`), 0 after.
    """
    length = ops.shape(item_ids)[1]
    columns = ops.arange(length)
    target_columns = length - num_targets + ops.arange(num_targets)
    before = ops.less_equal(columns[None, :], target_columns[:, None])
    seen = ops.where(before[None], item_ids[:, None, :], 0)
    return ops.reshape(seen, (-1, length))


def _candidates(seen, labels, num_items):
    """Boolean `(rows, num_items)`: True for each row's candidates, False for
    the items of `seen` (ids, 0 = none) other than the row's target
    (`labels`, id - 1). Column `i` is item `i + 1`."""
    # Column 0 of the id mask is padding; items are columns 1..num_items.
    seen_items = id_mask(ops.cast(seen, "int32"), num_items + 1)[:, 1:]
    columns = ops.expand_dims(ops.arange(num_items, dtype="int32"), 0)
    is_target = ops.equal(columns, ops.expand_dims(ops.cast(labels, "int32"), 1))
    return ops.logical_or(ops.logical_not(seen_items), is_target)


def _excluded_columns(seen, labels):
    """The columns (item id - 1) each row's softmax leaves out.

    Args:
        seen: int32 `(rows, n)` ids a row has read (0 = none, repeats allowed).
        labels: int32 `(rows,)` the row's target column (id - 1).

    Returns:
        `(columns, excluded)`: int32 `(rows, n)` and boolean `(rows, n)`;
        `excluded` is True where `seen` holds an item other than the row's
        target, and there `columns` is its column. Elsewhere `columns` is the
        target's column, so a scatter that adds 0 there changes nothing.
    """
    seen = ops.cast(seen, "int32")
    columns = seen - 1
    targets = ops.expand_dims(ops.cast(labels, "int32"), 1)
    excluded = ops.logical_and(ops.greater(seen, 0), ops.not_equal(columns, targets))
    return ops.where(excluded, columns, targets), excluded


def _first_occurrences(ids, keep):
    """Boolean like `keep`: True where `keep` is and no earlier True entry of
    the same row holds the same id (each distinct id counted once)."""
    length = ops.shape(ids)[1]
    same = ops.logical_and(
        ops.equal(ops.expand_dims(ids, 2), ops.expand_dims(ids, 1)),
        ops.expand_dims(keep, 1),
    )
    # same[r, j, k]: entry k (a kept one) holds the id of entry j; earlier k only.
    earlier = ops.less(
        ops.arange(length)[None, :], ops.arange(length)[:, None]
    )  # [j, k]: k < j
    repeated = ops.any(ops.logical_and(same, earlier[None]), axis=2)
    return ops.logical_and(keep, ops.logical_not(repeated))


def _row_column_indices(columns):
    """`(rows * n, 2)` int32 (row, column) pairs of `columns` `(rows, n)`."""
    rows = ops.shape(columns)[0]
    width = ops.shape(columns)[1]
    row_ids = ops.repeat(ops.arange(rows, dtype="int32"), width)
    return ops.stack([row_ids, ops.reshape(columns, (-1,))], axis=1)


@ops.custom_gradient
def _without_padding_row(table):
    """`table[1:]`, whose gradient is a concatenation (a zero row, then the
    incoming gradient) rather than TensorFlow's slower slice gradient."""

    def grad(*args, upstream=None):
        if upstream is None:
            (upstream,) = args
        return ops.concatenate([ops.zeros_like(upstream[:1]), upstream], axis=0)

    return table[1:], grad


def full_softmax_cross_entropy(
    vectors, items, labels, seen=None, label_smoothing: float = 0.0
):
    """Per-row full-softmax cross-entropy with a memory-lean custom gradient.

    The logits `vectors @ items.T` are computed once, in float32, and turned
    into the softmax (one fused softmax op; no masked copy, no broadcast
    pass): the log-partition is `max(logits) - log(max(softmax))`, exact
    since the largest probability is at least `1 / num_items`. The softmax
    is the only `(rows, items)` buffer kept for the gradient; the target
    distribution (one-hot, and label smoothing's uniform share) is
    subtracted by arithmetic on `(rows, d)` and `(items, d)` terms, so the
    gradients of `vectors` and `items` are the two matmuls of the softmax
    plus small corrections. The items a row leaves out (`seen`) get -1e9
    added to their logits before the softmax (a scatter of `rows * n`
    values), so their probability is exactly 0.

    Args:
        vectors: `(rows, d)` scoring vectors (any float dtype).
        items: `(num_items, d)` item table without the padding row, same
            dtype; column `i` of the logits is item `i + 1`.
        labels: int `(rows,)` target columns (item id - 1), in
            `[0, num_items)`.
        seen: optional int `(rows, n)` item ids (0 = none, repeats allowed)
            to leave out of each row's softmax; a row's own target stays in.
        label_smoothing: share `e` in [0, 1) of the target distribution
            spread evenly over each row's candidates.

    Returns:
        float32 `(rows,)`: `logsumexp(candidate logits) - (1 - e) * target
        logit - e * mean(candidate logits)`.
    """
    eps = float(label_smoothing)
    labels = ops.cast(labels, "int32")
    num_items = ops.shape(items)[0]
    if seen is not None:
        columns, excluded = _excluded_columns(seen, labels)
        pairs = _row_column_indices(columns)
        if eps:
            distinct = ops.cast(_first_occurrences(columns, excluded), "float32")
            num_excluded = ops.sum(distinct, axis=1)

    @ops.custom_gradient
    def losses_fn(vectors, items):
        logits = ops.cast(ops.matmul(vectors, ops.transpose(items)), "float32")
        target_logits = ops.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
        if eps:
            # The mean candidate logit by arithmetic: v . sum(items) less the
            # excluded logits, over the number of candidates.
            items32 = ops.cast(items, "float32")
            vectors32 = ops.cast(vectors, "float32")
            item_sum = ops.sum(items32, axis=0)
            total = ops.matmul(vectors32, item_sum[:, None])[:, 0]
            count = ops.cast(num_items, "float32") + ops.zeros_like(total)
            if seen is not None:
                seen_logits = ops.take_along_axis(logits, columns, axis=1)
                total = total - ops.sum(distinct * seen_logits, axis=1)
                count = count - num_excluded
            mean_logits = total / count
        if seen is not None:
            # -1e9 added at the excluded columns (0 at the target's).
            logits = ops.scatter_update(
                logits,
                pairs,
                ops.reshape(ops.where(excluded, _MASK_VALUE, 0.0), (-1,)),
                reduction="add",
            )
        top = ops.max(logits, axis=1)
        softmax = ops.softmax(logits, axis=1)
        log_partition = top - ops.log(ops.max(softmax, axis=1))
        if eps:
            losses = log_partition - (1.0 - eps) * target_logits - eps * mean_logits
        else:
            losses = log_partition - target_logits

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            upstream = ops.cast(upstream, "float32")[:, None]
            items32 = ops.cast(items, "float32")
            vectors32 = ops.cast(vectors, "float32")
            probs = ops.cast(softmax, vectors.dtype)
            # d loss / d logits = softmax - (1 - e) one-hot - (e / count) on
            # the candidates; each term's matmuls are done on its own.
            d_vectors = ops.cast(ops.matmul(probs, items), "float32")
            weighted = upstream * vectors32
            d_items = ops.cast(
                ops.matmul(ops.transpose(probs), ops.cast(weighted, vectors.dtype)),
                "float32",
            )
            target_rows = ops.take(items32, labels, axis=0)
            d_vectors = d_vectors - (1.0 - eps) * target_rows
            label_rows = labels[:, None]
            shape = (num_items, ops.shape(items)[1])
            d_items = d_items - ops.scatter(label_rows, (1.0 - eps) * weighted, shape)
            if eps:
                share = eps / count[:, None]
                candidate_sum = item_sum[None, :]
                shared = share * weighted
                d_items = d_items - ops.sum(shared, axis=0)[None, :]
                if seen is not None:
                    excluded_rows = ops.take(items32, columns, axis=0)
                    candidate_sum = candidate_sum - ops.sum(
                        distinct[:, :, None] * excluded_rows, axis=1
                    )
                    d_items = d_items + ops.scatter(
                        ops.reshape(columns, (-1, 1)),
                        ops.reshape(
                            distinct[:, :, None] * shared[:, None, :],
                            (-1, ops.shape(items)[1]),
                        ),
                        shape,
                    )
                d_vectors = d_vectors - share * candidate_sum
            d_vectors = upstream * d_vectors
            return (
                ops.cast(d_vectors, vectors.dtype),
                ops.cast(d_items, items.dtype),
            )

        return losses, grad

    return losses_fn(vectors, items)


def _static_rank(tensor):
    """The rank of `tensor` if it is known while tracing, else None."""
    try:
        return len(tensor.shape)
    except (TypeError, ValueError):
        return None


def _multi_worker(model) -> bool:
    """Whether `model` lives in a (multi-worker) collective tf.distribute strategy."""
    strategy = getattr(model, "_distribute_strategy", None)
    return strategy is not None and any(
        cls.__name__ == "CollectiveAllReduceStrategy" for cls in type(strategy).__mro__
    )


def top_k_items(scores, histories, k: int, exclude_seen: bool = True):
    """Best `k` item ids per row of `scores`, never padding, optionally unseen.

    Args:
        scores: float `(batch, ..., num_items + 1)`, column = item id.
        histories: int `(batch, length)`; with `exclude_seen` their items are
            removed from every row of the same batch entry.
        k: List length.
        exclude_seen: Remove the history's items.

    Returns:
        `(ids, scores)`: int32 and float32 arrays `(batch, ..., k)`, best
        first; slots left without a candidate hold id -1 and score -inf.
    """
    scores = np.array(scores, dtype="float32")
    scores[..., 0] = -np.inf
    if exclude_seen:
        rows = np.repeat(np.arange(len(histories)), histories.shape[1])
        scores[rows, ..., histories.reshape(-1)] = -np.inf
        scores[..., 0] = -np.inf
    top = np.argpartition(-scores, k - 1, axis=-1)[..., :k]
    top_scores = np.take_along_axis(scores, top, axis=-1)
    order = np.argsort(-top_scores, axis=-1, kind="stable")
    ids = np.take_along_axis(top, order, axis=-1).astype("int32")
    top_scores = np.take_along_axis(top_scores, order, axis=-1)
    ids[np.isneginf(top_scores)] = -1
    return ids, top_scores


class SequentialRecommender(keras.Model):
    """Base class of `SASRec` and `FAME`: embeddings, scoring, loss, serving.

    Subclasses implement `_encode(x, padding_mask, training, details,
    last_position_only)`, which maps embedded sequences to the scoring
    vectors `(batch, length, hidden_dim)` (or `(batch, 1, hidden_dim)`, the
    last position's, with `last_position_only=True`); an item's score at a
    position is the inner product of that vector with the item's embedding.

    `model(item_ids)` returns those vectors (`model(item_ids,
    last_position_only=True)` the last one only, at a fraction of the cost of
    the last block). `fit` takes `(item_ids, next_item_ids)` batches in one of
    two forms, int32 and left-padded with 0:

    - `next_item_ids` `(batch, length)`: the next item at every position, 0
      where there is none. The loss is the cross-entropy of the next item at
      every position whose target is not padding, averaged over those
      positions (logits are computed for them only).
    - `next_item_ids` `(batch,)`: one target per row, the item after the
      row's last position (`train_dataset(prefixes=True)`). The loss is the
      mean cross-entropy of those targets, and the last block computes the
      last position only: the same loss as the first form with targets at
      the last column only, for less work.

    The softmax runs over all items (`softmax="full"`, the paper's loss) or,
    for large catalogues, over the target and a sample of negatives
    (`softmax="sampled"`): `num_negatives` ids drawn uniformly per step
    (`negatives="uniform"`), the other targets of the batch
    (`"in_batch"`), or both (`"mixed"`). Every sampled logit is corrected
    by the log of the item's expected count in the sample (log-Q), and a
    candidate equal to the position's own target (an accidental hit) is
    removed, so the loss estimates the full-softmax cross-entropy. In-batch
    negatives follow item popularity; set it with `set_item_frequencies`
    (counts of training targets) before training. With
    `log_q_correction=False` the sampled logits are used as they are: the
    loss is then the cross-entropy over the target and its sampled negatives
    (the "SASRec with sampled softmax" of gSASRec/eSASRec), a different
    objective that no longer estimates the full softmax.

    With `loss_excludes_history=True` (full softmax only) a position's
    softmax leaves out the items that position has read (its target stays
    in), as the evaluation leaves a user's history out of the candidates.

    Under `tf.distribute`, feed `{"item_ids": ..., "num_targets": ...}`
    features (`SequenceDataset.train_dataset(count_targets=True)`): with the
    real-target count of the whole global batch, each replica's loss is its
    share of the global mean, so the summed gradients equal one device's.
    """

    def __init__(
        self,
        num_items: int,
        max_len: int = 50,
        hidden_dim: int = 64,
        num_blocks: int = 2,
        num_heads: int = 2,
        dropout: float = 0.5,
        attention_dropout: float | None = None,
        intermediate_dim: int | None = None,
        activation: str = "gelu",
        softmax: str = "full",
        num_negatives: int = 1024,
        negatives: str = "uniform",
        sampler_seed: int | None = None,
        position_anchor: str = "end",
        log_q_correction: bool = True,
        layer_norm_epsilon: float = 1e-12,
        label_smoothing: float = 0.0,
        loss_excludes_history: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        num_items = check_positive_int("num_items", num_items)
        softmax = check_choice("softmax", softmax, SOFTMAXES)
        negatives = check_choice("negatives", negatives, NEGATIVES)
        position_anchor = check_choice("position_anchor", position_anchor, ANCHORS)
        num_negatives = check_positive_int("num_negatives", num_negatives)
        max_len = check_positive_int("max_len", max_len)
        hidden_dim = check_positive_int("hidden_dim", hidden_dim)
        num_blocks = check_positive_int("num_blocks", num_blocks)
        num_heads = check_positive_int("num_heads", num_heads)
        check_rate("dropout", dropout)
        if attention_dropout is None:
            attention_dropout = dropout
        check_rate("attention_dropout", attention_dropout)
        if intermediate_dim is None:
            intermediate_dim = 4 * hidden_dim
        intermediate_dim = check_positive_int("intermediate_dim", intermediate_dim)
        check_heads_divide(hidden_dim, num_heads)
        layer_norm_epsilon = check_epsilon("layer_norm_epsilon", layer_norm_epsilon)
        check_label_smoothing(label_smoothing, softmax)
        check_loss_excludes_history(loss_excludes_history, softmax)
        self.num_items = num_items
        self.max_len = max_len
        self.hidden_dim = hidden_dim
        self.num_blocks = num_blocks
        self.num_heads = num_heads
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.intermediate_dim = intermediate_dim
        self.activation = activation
        self.softmax = softmax
        self.num_negatives = num_negatives
        self.negatives = negatives
        self.sampler_seed = sampler_seed
        self.position_anchor = position_anchor
        self.log_q_correction = bool(log_q_correction)
        self.layer_norm_epsilon = layer_norm_epsilon
        self.label_smoothing = float(label_smoothing)
        self.loss_excludes_history = loss_excludes_history
        self._sampler = keras.random.SeedGenerator(sampler_seed, name="sampler")
        self.vocabulary = None
        # On TensorFlow the loss gathers the real positions (a dynamic shape),
        # which XLA can't compile; the other backends use static shapes.
        self.supports_jit = keras.backend.backend() != "tensorflow"

        policy = self.dtype_policy
        self.item_embedding = keras.layers.Embedding(
            num_items + 1,
            hidden_dim,
            embeddings_initializer=default_initializer(),
            dtype=policy,
            name="item_embedding",
        )
        self.position_embedding = PositionEmbedding(
            max_len,
            hidden_dim,
            anchor=position_anchor,
            dtype=policy,
            name="position_embedding",
        )
        self.embedding_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=policy, name="embedding_norm"
        )
        self.embedding_dropout = keras.layers.Dropout(dropout, dtype=policy)

    # ----------------------------------------------------------------- model

    def build(self, input_shape=None):
        shape = (None, self.max_len, self.hidden_dim)
        self.item_embedding.build((None, self.max_len))
        self.position_embedding.build()
        self.embedding_norm.build(shape)
        self._build_encoder(shape)
        if self._uses_frequencies:
            # log of each item's share of the training targets (uniform until
            # `set_item_frequencies`); the log-Q of in-batch negatives.
            self.item_log_prior = self.add_weight(
                name="item_log_prior",
                shape=(self.num_items + 1,),
                initializer=keras.initializers.Constant(-np.log(self.num_items)),
                trainable=False,
                dtype="float32",
            )
        self.built = True

    @property
    def _uses_frequencies(self) -> bool:
        return self.softmax == "sampled" and self.negatives in ("in_batch", "mixed")

    def set_item_frequencies(self, counts) -> None:
        """Sets the popularity that in-batch negatives are drawn from.

        Args:
            counts: `(num_items + 1,)` non-negative counts of each item id as
                a training target (index 0, padding, is ignored), e.g.
                `np.bincount(targets[targets > 0], minlength=num_items + 1)`.
                Items never seen get a count of 1/2 so their log-Q stays
                finite.
        """
        if not self._uses_frequencies:
            raise ValueError(
                "`set_item_frequencies` is for softmax='sampled' with "
                "negatives='in_batch' or 'mixed'. This model has "
                f"softmax={self.softmax!r}, negatives={self.negatives!r}."
            )
        counts = np.asarray(counts, dtype="float64")
        if counts.shape != (self.num_items + 1,):
            raise ValueError(
                f"`counts` must have shape ({self.num_items + 1},) (one count per "
                f"item id, 0 = padding). Received shape {counts.shape}."
            )
        if not np.all(np.isfinite(counts)) or (counts < 0).any():
            raise ValueError("`counts` must be finite and non-negative.")
        counts = counts.copy()
        counts[0] = 0.0
        counts[1:] = np.maximum(counts[1:], 0.5)
        prior = np.full(counts.shape, -np.inf)
        prior[1:] = np.log(counts[1:] / counts[1:].sum())
        prior[0] = 0.0
        if not self.built:
            self.build()
        self.item_log_prior.assign(prior.astype("float32"))

    def _build_encoder(self, shape):
        raise NotImplementedError

    def _transformer_blocks(self, count: int, shape) -> list:
        """`count` built SASRec blocks named `block_0`, `block_1`, ..."""
        blocks = []
        for index in range(count):
            block = TransformerBlock(
                self.num_heads,
                self.intermediate_dim,
                dropout=self.dropout,
                attention_dropout=self.attention_dropout,
                activation=self.activation,
                layer_norm_epsilon=self.layer_norm_epsilon,
                dtype=self.dtype_policy,
                name=f"block_{index}",
            )
            block.build(shape)
            blocks.append(block)
        return blocks

    def _encode(self, x, padding_mask, training=None, details=False):
        raise NotImplementedError

    def _embed(self, item_ids, training=None):
        item_ids = ops.cast(item_ids, "int32")
        padding_mask = ops.not_equal(item_ids, 0)
        x = self.item_embedding(item_ids) + self.position_embedding(item_ids)
        x = self.embedding_dropout(self.embedding_norm(x), training=training)
        return x, padding_mask

    def call(self, item_ids, training=None, last_position_only=None):
        if isinstance(item_ids, dict):
            item_ids = item_ids["item_ids"]
        if last_position_only is None:
            # Set by train_step/test_step while tracing a batch with one
            # target per row.
            last_position_only = getattr(self, "_one_target_per_row", False)
        x, padding_mask = self._embed(item_ids, training=training)
        return self._encode(
            x, padding_mask, training=training, last_position_only=last_position_only
        )

    def item_table(self):
        """The item embedding table `(num_items + 1, hidden_dim)` (row 0: padding)."""
        return ops.cast(self.item_embedding.embeddings, self.compute_dtype)

    def logits(self, vectors):
        """Scores of every item id for scoring vectors `(..., hidden_dim)`.

        Returns float32 `(..., num_items + 1)`; column 0 (padding) is -1e9.
        """
        logits = ops.cast(
            ops.matmul(vectors, ops.transpose(self.item_table())), "float32"
        )
        is_padding = ops.equal(ops.arange(self.num_items + 1), 0)
        return ops.where(is_padding, _MASK_VALUE, logits)

    # The full softmax's loss: `full_softmax_cross_entropy` (True) or the
    # earlier masked-copy implementation (False, for benchmarks only).
    _fused_full_softmax = True

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        if y is None:
            raise ValueError(
                "SASRec/FAME train on (item_ids, next_item_ids) pairs; `y` "
                "(the next item ids, 0 where there is no target) is missing."
            )
        if _static_rank(y) not in (1, 2, None):
            raise ValueError(
                "`next_item_ids` must be (batch, length) (the next item at every "
                "position) or (batch,) (the item after each row). Received "
                f"shape {tuple(y.shape)}."
            )
        # (batch,) targets are the last column's: (batch, 1). The rank may be
        # unknown in a step traced for both forms; this handles either.
        y = ops.reshape(ops.cast(y, "int32"), (ops.shape(y_pred)[0], -1))
        y_pred = y_pred[:, ops.shape(y_pred)[1] - ops.shape(y)[1] :]
        targets = ops.reshape(y, (-1,))
        vectors = ops.reshape(y_pred, (-1, self.hidden_dim))
        seen = None
        if self.loss_excludes_history:
            item_ids = x["item_ids"] if isinstance(x, dict) else x
            if item_ids is None:
                raise ValueError(
                    "`loss_excludes_history=True` needs the inputs `x` (the "
                    "item ids) in `compute_loss`."
                )
            seen = _inputs_before_targets(ops.cast(item_ids, "int32"), ops.shape(y)[1])
        is_real = ops.greater(targets, 0)
        if keras.backend.backend() == "tensorflow":
            # Only real positions get logits: on Amazon data about 1 in 6.
            real = ops.nonzero(is_real)[0]
            vectors = ops.take(vectors, real, axis=0)
            targets = ops.take(targets, real, axis=0)
            if seen is not None:
                seen = ops.take(seen, real, axis=0)
            weights = ops.ones_like(targets, dtype="float32")
        else:
            # Static shapes (JAX/XLA): score every position, weight real ones.
            weights = ops.cast(is_real, "float32")
        if sample_weight is not None:
            raise ValueError("`sample_weight` is not supported by SASRec/FAME.")
        if self.softmax == "full" and self._fused_full_softmax:
            # Items 1..num_items only: the padding column needs no mask pass.
            losses = full_softmax_cross_entropy(
                vectors,
                _without_padding_row(self.item_table()),
                ops.maximum(targets - 1, 0),
                seen=seen,
                label_smoothing=self.label_smoothing,
            )
        elif self.softmax == "full":
            losses = self._unfused_full_softmax_losses(vectors, targets, seen)
        else:
            losses = self._sampled_softmax_losses(vectors, targets, weights)
        total = ops.sum(losses * weights)
        if isinstance(x, dict) and "num_targets" in x:
            # The global batch's count: this replica's share of the global mean.
            count = ops.cast(ops.max(x["num_targets"]), "float32")
            loss = total / ops.maximum(count, 1.0)
        else:
            loss = scale_loss_for_distribution(
                total / ops.maximum(ops.sum(weights), 1.0)
            )
        if self.losses:
            # Stacked first: JAX cannot sum a Python list of traced tensors.
            extra = ops.stack(
                [ops.sum(ops.cast(term, loss.dtype)) for term in self.losses]
            )
            loss = loss + scale_loss_for_distribution(ops.sum(extra))
        return loss

    def _unfused_full_softmax_losses(self, vectors, targets, seen):
        """The full-softmax losses as computed before `full_softmax_cross_entropy`
        (a masked copy of the logits, Keras's cross-entropy): kept to compare
        the two in `benchmarks/bench_step.py` (`_fused_full_softmax = False`)."""
        # Items 1..num_items only: the padding column needs no mask pass.
        item_logits = ops.cast(
            ops.matmul(vectors, ops.transpose(self.item_table()[1:])), "float32"
        )
        labels = ops.maximum(targets - 1, 0)
        keep = None
        if seen is not None:
            # The items a position has read (but its target) leave the
            # softmax, as evaluation leaves them out of the candidates.
            keep = _candidates(seen, labels, self.num_items)
            item_logits = ops.where(keep, item_logits, _MASK_VALUE)
        if self.label_smoothing:
            # Cross-entropy against (1 - e) one-hot + e uniform over the
            # candidates: logsumexp - (1 - e) target logit - e mean
            # candidate logit, with one logsumexp pass over the logits.
            eps = self.label_smoothing
            target_logits = ops.take_along_axis(
                item_logits, ops.expand_dims(labels, -1), axis=-1
            )[:, 0]
            if keep is None:
                mean_logits = ops.mean(item_logits, axis=-1)
            else:
                mean_logits = ops.sum(
                    ops.where(keep, item_logits, 0.0), axis=-1
                ) / ops.sum(ops.cast(keep, "float32"), axis=-1)
            losses = (
                ops.logsumexp(item_logits, axis=-1)
                - (1.0 - eps) * target_logits
                - eps * mean_logits
            )
        else:
            losses = keras.losses.sparse_categorical_crossentropy(
                labels, item_logits, from_logits=True
            )
        return losses

    def _sampled_softmax_losses(self, vectors, targets, weights):
        """Per-position sampled-softmax cross-entropy with log-Q correction.

        The candidates are shared by all positions of the batch: uniform draws
        from `[1, num_items]` (with replacement) and/or the batch's targets.
        With `n_u` uniform draws and `n_b` real targets, item `j` is expected
        `n_u / num_items + n_b * p(j)` times in the sample (`p`: the target
        popularity), and `log` of that is subtracted from its logit. The
        target's own term is exact (uncorrected, and removed from the
        sample), so `exp(target) + sum_c exp(logit_c - log q_c)` is an
        importance-sampling estimate of the full softmax's partition sum and
        the loss estimates the full cross-entropy.
        """
        table = self.item_table()
        candidates = []
        if self.negatives in ("uniform", "mixed"):
            candidates.append(
                keras.random.randint(
                    (self.num_negatives,),
                    1,
                    self.num_items + 1,
                    seed=self._sampler,
                    dtype="int32",
                )
            )
        if self.negatives in ("in_batch", "mixed"):
            candidates.append(targets)
        candidates = ops.concatenate(candidates, axis=0)

        def log_expected_count(ids):
            count = ops.zeros(ops.shape(ids), "float32")
            if self.negatives in ("uniform", "mixed"):
                count = count + self.num_negatives / self.num_items
            if self.negatives in ("in_batch", "mixed"):
                prior = ops.exp(ops.take(self.item_log_prior, ids, axis=0))
                count = count + ops.sum(weights) * prior
            return ops.log(count)

        target_logits = ops.cast(
            ops.sum(vectors * ops.take(table, targets, axis=0), axis=-1), "float32"
        )
        negative_logits = ops.cast(
            ops.matmul(vectors, ops.transpose(ops.take(table, candidates, axis=0))),
            "float32",
        )
        if self.log_q_correction:
            negative_logits = negative_logits - ops.expand_dims(
                log_expected_count(candidates), 0
            )
        # Accidental hits (the target itself among the negatives) and the
        # padding targets of a static-shape batch are no candidates.
        removed = ops.logical_or(
            ops.equal(ops.expand_dims(targets, 1), ops.expand_dims(candidates, 0)),
            ops.expand_dims(ops.equal(candidates, 0), 0),
        )
        negative_logits = ops.where(removed, _MASK_VALUE, negative_logits)
        logits = ops.concatenate(
            [ops.expand_dims(target_logits, 1), negative_logits], axis=1
        )
        return ops.logsumexp(logits, axis=1) - target_logits

    # ------------------------------------------------------------- inference

    def _check_item_ids(self, item_ids, argument="item_ids"):
        """Validates a concrete model-id array `(batch, length)`; returns int32."""
        if isinstance(item_ids, (list, tuple)):
            lengths = {len(row) for row in item_ids if isinstance(row, (list, tuple))}
            if len(lengths) > 1:
                raise ValueError(
                    f"`{argument}` rows have different lengths ({min(lengths)} to "
                    f"{max(lengths)}): pad each row on the left with 0 to one "
                    "length (or attach a vocabulary with `set_vocabulary` to "
                    "pass rows of any length in your own item ids)."
                )
        array = np.asarray(item_ids)
        if array.ndim != 2:
            raise ValueError(
                f"`{argument}` must be a 2-D array (batch, length) of item ids. "
                f"Received shape {array.shape}."
            )
        if array.size == 0 and array.dtype.kind not in "iu":
            array = array.astype("int32")
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(
                f"`{argument}` must hold integer item ids. Received dtype {array.dtype}."
            )
        if array.size:
            low, high = array.min(), array.max()
            if low < 0 or high > self.num_items:
                bad = array[(array < 0) | (array > self.num_items)][0]
                raise ValueError(
                    f"`{argument}` holds item id {bad}, outside the vocabulary: ids "
                    f"must lie in [0, {self.num_items}] (0 = padding)."
                )
        return array.astype("int32")

    # ------------------------------------------------------------ vocabulary

    def set_vocabulary(self, vocabulary) -> None:
        """Attaches the map from your item ids to the model's ids (or removes it).

        With a vocabulary, `recommend` (and FAME's `explain`,
        `facet_weights`, `expert_outputs`) take histories in your item ids
        and answer in them, `export_for_serving` writes a `serving_default`
        signature that reads and returns your ids, and the vocabulary is saved
        with the model (`model.save("m.keras")`). `score`, `user_vectors` and
        `call` always work in model ids.

        Args:
            vocabulary: A `keras_fame.datasets.Vocabulary` with `num_items`
                items (e.g. `dataset.vocabulary`), or `None` to remove it.
        """
        if vocabulary is not None:
            if not isinstance(vocabulary, Vocabulary):
                raise TypeError(
                    "`vocabulary` must be a keras_fame.datasets.Vocabulary or None. "
                    f"Received: {type(vocabulary)}"
                )
            if vocabulary.num_items != self.num_items:
                raise ValueError(
                    f"`vocabulary` has {vocabulary.num_items} items but the model "
                    f"has num_items={self.num_items}."
                )
            vocabulary.texts  # noqa: B018 (refuses ids that collide as text)
        self.vocabulary = vocabulary

    def save_assets(self, dir_path):
        """Keras saving hook: writes the vocabulary into the `.keras` archive."""
        if self.vocabulary is not None:
            self.vocabulary.save(os.path.join(dir_path, _VOCABULARY_FILE))

    def load_assets(self, dir_path):
        """Keras loading hook: reads the vocabulary saved by `save_assets`."""
        path = os.path.join(dir_path, _VOCABULARY_FILE)
        if os.path.exists(path):
            self.set_vocabulary(Vocabulary.load(path))

    def encode_histories(self, histories):
        """Maps histories in your item ids to the model's left-padded ids.

        Needs a vocabulary (`set_vocabulary`). Ids the vocabulary does not
        hold are dropped and counted, never an error.

        Args:
            histories: One row per user, oldest item first, rows of any
                length. A row is a string of ids separated by whitespace
                (`"sku1 sku7 sku9"`, as the served model reads them) or a
                sequence of ids. Ids match by their text, so `12` and `"12"`
                are the same item.

        Returns:
            `(item_ids, unknown)`: int32 `(batch, length)` model ids,
            left-padded with 0 to the longest row (at least 1), and int32
            `(batch,)`, how many ids of each row were not in the vocabulary.

        Example:
        >>> from keras_fame.datasets import Vocabulary
        >>> from keras_fame.models import SASRec
        >>> model = SASRec(num_items=3, max_len=4, hidden_dim=8, num_heads=1)
        >>> model.set_vocabulary(Vocabulary(["a", "b", "c"]))
        >>> ids, unknown = model.encode_histories(["a c", ["b", "zz"]])
        >>> ids.tolist(), unknown.tolist()
        ([[1, 3], [0, 2]], [0, 1])
        """
        if self.vocabulary is None:
            raise ValueError(
                "This model has no vocabulary: pass model ids (int, left-padded "
                "with 0), or attach one with `set_vocabulary(dataset.vocabulary)`."
            )
        if isinstance(histories, str) or not hasattr(histories, "__len__"):
            raise ValueError(
                "`histories` must be a sequence of rows (one per user), e.g. "
                f"['sku1 sku7', 'sku3']. Received: {histories!r:.80}"
            )
        rows, unknown = [], np.zeros(len(histories), dtype="int32")
        for index, row in enumerate(histories):
            if isinstance(row, bytes):
                row = row.decode("utf-8")
            tokens = row.split() if isinstance(row, str) else np.asarray(row).tolist()
            if not isinstance(tokens, list):
                tokens = [tokens]
            ids = self.vocabulary.encode_texts(tokens)
            unknown[index] = int((ids == 0).sum())
            rows.append(ids[ids > 0])
        width = max([len(row) for row in rows] + [1])
        item_ids = np.zeros((len(rows), width), dtype="int32")
        for index, row in enumerate(rows):
            if len(row):
                item_ids[index, width - len(row) :] = row
        return item_ids, unknown

    def _histories(self, histories, argument="item_ids"):
        """Model ids `(batch, length >= 1)` of histories in the caller's ids."""
        if self.vocabulary is not None:
            item_ids, _ = self.encode_histories(histories)
        else:
            item_ids = self._check_item_ids(histories, argument)
        if item_ids.shape[1] == 0:
            # An empty history reads one padding position (the export does so).
            item_ids = np.zeros((len(item_ids), 1), dtype="int32")
        return item_ids

    def _decode(self, ids):
        """Your item ids of model ids `ids` (-1, no candidate, becomes None)."""
        missing = ids < 0
        decoded = self.vocabulary.item_ids[np.maximum(ids, 1) - 1]
        if missing.any():
            decoded = decoded.astype(object)
            decoded[missing] = None
        return decoded

    def _check_k(self, k):
        k = check_positive_int("k", k)
        if k > self.num_items:
            raise ValueError(
                f"`k` must be at most num_items={self.num_items}. Received: k={k}"
            )
        return k

    def _context(self, item_ids):
        """The most recent `max_len` items (the model's context window)."""
        return item_ids[:, -self.max_len :]

    def score(self, item_ids):
        """Scores of every item for the next step after each history.

        Args:
            item_ids: int `(batch, length)`, left-padded with 0. A NumPy array
                or list is validated (ids in `[0, num_items]`) and, when longer
                than `max_len`, reduced to its most recent `max_len` items (the
                model's context window). Tensors are used as they are, so the
                method can be traced inside a `tf.function`.

        Returns:
            float32 `(batch, num_items + 1)`, column `v` the score of item `v`;
            column 0 (padding) holds -1e9 so it never ranks first.
        """
        return self.logits(self.user_vectors(item_ids))

    def user_vectors(self, item_ids):
        """The scoring vector after each history: `score = vector . item_table().T`.

        Args:
            item_ids: as for `score`.

        Returns:
            `(batch, hidden_dim)` in the compute dtype. With `item_table()`
            this lets a caller stream the catalogue in chunks (see
            `keras_fame.evaluation.evaluate_ranking(item_chunk_size=...)`).
        """
        if isinstance(item_ids, (np.ndarray, list, tuple)):
            item_ids = self._check_item_ids(item_ids)
            if item_ids.shape[1] == 0:
                item_ids = np.zeros((len(item_ids), 1), dtype="int32")
            item_ids = self._context(item_ids)
        return self(item_ids, training=False, last_position_only=True)[:, -1, :]

    def recommend(
        self, histories, k: int = 10, exclude_seen: bool = True, batch_size: int = 1024
    ):
        """Top-`k` items for the next step after each history.

        Args:
            histories: Without a vocabulary: int model ids `(batch, length)`,
                left-padded with 0 (any length; the most recent `max_len`
                items form the model's context). With one (`set_vocabulary`):
                rows in your item ids, of any length, as `encode_histories`
                reads them; unknown ids are dropped.
            k: Number of items to return, `1 <= k <= num_items`.
            exclude_seen: Never recommend an item of the history (all of it,
                also what lies beyond the context window).
            batch_size: Histories scored at once.

        Returns:
            `(ids, scores)`: NumPy arrays `(batch, k)`, best first: model ids
            (int32), or your item ids with a vocabulary; float32 scores. The
            padding id 0 is never returned. When fewer than `k` unseen items
            exist, the missing slots hold score -inf and id -1 (None with a
            vocabulary).
        """
        k = self._check_k(k)
        batch_size = check_positive_int("batch_size", batch_size)
        item_ids = self._histories(histories)
        ids, scores = self._recommend_ids(item_ids, k, exclude_seen, batch_size)
        if self.vocabulary is not None:
            ids = self._decode(ids)
        return ids, scores

    def _recommend_ids(self, item_ids, k, exclude_seen=True, batch_size=1024):
        """`recommend` on checked model ids `(batch, length >= 1)`."""
        all_ids = [np.zeros((0, k), dtype="int32")]
        all_scores = [np.zeros((0, k), dtype="float32")]
        for start in range(0, len(item_ids), batch_size):
            batch = item_ids[start : start + batch_size]
            scores = ops.convert_to_numpy(self.score(self._context(batch)))
            ids, top_scores = top_k_items(scores, batch, k, exclude_seen)
            all_ids.append(ids)
            all_scores.append(top_scores)
        return np.concatenate(all_ids), np.concatenate(all_scores)

    # ---------------------------------------------------------------- config

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # The TensorFlow trainer, under a tf.distribute strategy, reads one
        # training batch to build state before `fit`. These models are built
        # at construction; with the optimizer built here (and no compiled
        # loss or metrics) nothing is left to build, so the read is skipped.
        # It would start the seeded shuffle one reshuffle late (so the same
        # seed would train differently with and without a strategy), and it
        # fails under MultiWorkerMirroredStrategy (Keras reduces the whole
        # (x, y) batch structure across workers).
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)
        if (
            self.built
            and self._compile_loss is None
            and self._compile_metrics is None
            and (self.optimizer is None or self.optimizer.built)
        ):
            return
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    @contextlib.contextmanager
    def _one_target_per_row_scope(self, data):
        """While a step is traced, makes `call` compute the last position only
        if the batch's targets are `(batch,)`, one per row."""
        _, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        previous = getattr(self, "_one_target_per_row", False)
        self._one_target_per_row = y is not None and _static_rank(y) == 1
        try:
            yield
        finally:
            self._one_target_per_row = previous

    def test_step(self, *args, **kwargs):
        # args[-1] is the batch on every backend (JAX passes the state first).
        with self._one_target_per_row_scope(args[-1]):
            return super().test_step(*args, **kwargs)

    def train_step(self, *args, **kwargs):
        with self._one_target_per_row_scope(args[-1]):
            logs = super().train_step(*args, **kwargs)
        if _multi_worker(self):
            # Keras's TensorFlow trainer averages each replica's logs with
            # `strategy.reduce("MEAN", value, axis=0)` under
            # MultiWorkerMirroredStrategy, which rejects scalars: give it
            # one-element vectors (the reduction returns them as scalars).
            logs = {key: ops.reshape(value, (1,)) for key, value in logs.items()}
        return logs

    def fit(self, x=None, y=None, *args, **kwargs):
        if isinstance(x, np.ndarray):
            self._check_item_ids(x, "x")
        if isinstance(y, np.ndarray):
            if y.ndim == 1:
                self._check_item_ids(y[:, None], "y")
            else:
                self._check_item_ids(y, "y")
        return super().fit(x, y, *args, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_items": self.num_items,
                "max_len": self.max_len,
                "hidden_dim": self.hidden_dim,
                "num_blocks": self.num_blocks,
                "num_heads": self.num_heads,
                "dropout": self.dropout,
                "attention_dropout": self.attention_dropout,
                "intermediate_dim": self.intermediate_dim,
                "activation": self.activation,
                "softmax": self.softmax,
                "num_negatives": self.num_negatives,
                "negatives": self.negatives,
                "sampler_seed": self.sampler_seed,
                "position_anchor": self.position_anchor,
                "log_q_correction": self.log_q_correction,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "label_smoothing": self.label_smoothing,
                "loss_excludes_history": self.loss_excludes_history,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("trainable",):
            config.pop(key, None)
        return cls(**config)
