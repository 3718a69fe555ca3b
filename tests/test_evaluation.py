"""Tests for keras_fame.evaluation against hand-computed ranks and metrics."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from keras_fame.evaluation import (
    RankingEvaluation,
    evaluate_ranking,
    metrics_from_ranks,
    rank_targets,
)

INF = float("inf")
NEG = -float("inf")


def ranks_of(scores, targets, seen_ids=None):
    scores = np.asarray(scores, "float32")
    return np.asarray(rank_targets(scores, np.asarray(targets), seen_ids)).tolist()


class TableModel:
    """`score` returns the row `table[last item]`: fixed scores per user."""

    def __init__(self, table):
        self.table = np.asarray(table, "float32")
        self.num_items = self.table.shape[1] - 1

    def score(self, item_ids):
        return ops.take(ops.convert_to_tensor(self.table), item_ids[:, -1], axis=0)


# ---------------------------------------------------------------- rank_targets


def test_simple_ranks():
    scores = [[NEG, 0.9, 0.1, 0.5, 0.3, 0.2, 0.0]]
    # Item 3 (0.5) is beaten by item 1 only; item 6 (0.0) by all 5 others.
    assert ranks_of(scores * 3, [1, 3, 6]) == [1.0, 2.0, 6.0]


def test_ties_are_pessimistic():
    scores = [[NEG, 0.5, 0.5, 0.5, 0.1, 0.1, 0.1]]
    # Target 2 ties with items 1 and 3 -> rank 3; target 5 is behind 1, 2, 3
    # and ties with 4 and 6 -> rank 6.
    assert ranks_of(scores * 2, [2, 5]) == [3.0, 6.0]
    # A constant model ranks every target last among the 6 candidates.
    assert ranks_of([[0.0] * 7] * 3, [1, 4, 6]) == [6.0, 6.0, 6.0]


def test_padding_column_never_counted():
    # Column 0 has the highest score; it must neither beat the target nor be
    # a rankable target.
    scores = [[100.0, 0.9, 0.5, 0.1]]
    assert ranks_of(scores * 2, [1, 3]) == [1.0, 3.0]
    assert ranks_of(scores, [0]) == [INF]
    assert ranks_of(scores, [0], [[1]]) == [INF]
    # Column 0 equal to the target's score is not a tie either.
    assert ranks_of([[0.5, 0.5, 0.1, 0.1]], [1]) == [1.0]


def test_history_exclusion():
    scores = [[NEG, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4]]
    # Without exclusion item 3 has rank 3; removing 1 and 2 makes it first.
    assert ranks_of(scores, [3]) == [3.0]
    assert ranks_of(scores, [3], [[0, 1, 2]]) == [1.0]
    # Repeats and padding in the history are harmless.
    assert ranks_of(scores, [5], [[2, 2, 0, 1, 0]]) == [3.0]
    # A target in the history is removed too: a miss.
    assert ranks_of(scores, [2], [[1, 2]]) == [INF]
    # Rows are masked independently.
    assert ranks_of(scores * 2, [4, 4], [[1, 2, 3], [0, 0, 0]]) == [1.0, 4.0]


def test_unrankable_targets():
    scores = [[NEG, 0.9, np.nan, NEG, 0.1]]
    # NaN or -inf target score, out-of-range target id -> inf.
    assert ranks_of(scores * 3, [2, 3, 7]) == [INF, INF, INF]
    # NaN scores of other items never count as ahead of the target.
    assert ranks_of(scores, [4]) == [2.0]


def test_rank_targets_rejects_bad_shapes():
    with pytest.raises(ValueError, match="scores"):
        rank_targets(np.zeros((3,), "float32"), np.array([1]))
    with pytest.raises(ValueError, match="seen_ids"):
        rank_targets(np.zeros((1, 3), "float32"), np.array([1]), np.array([1]))


# ---------------------------------------------------------- metrics_from_ranks


def test_metrics_from_ranks_hand_computed():
    ranks = [1, 2, 5, 6, 10, 11, 20, 21, INF]
    m = metrics_from_ranks(ranks, ks=(5, 10, 20))
    assert list(m) == [
        "HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20", "MRR", "users",
    ]  # fmt: skip
    # Rank exactly k is a hit at k, rank k + 1 is not.
    assert m["HR@5"] == pytest.approx(3 / 9)
    assert m["HR@10"] == pytest.approx(5 / 9)
    assert m["HR@20"] == pytest.approx(7 / 9)
    g = {r: 1 / math.log2(r + 1) for r in (1, 2, 5, 6, 10, 11, 20)}
    assert g[1] == 1.0 and g[2] == pytest.approx(0.6309298, abs=1e-7)
    assert m["NDCG@5"] == pytest.approx((g[1] + g[2] + g[5]) / 9)
    ndcg10 = (g[1] + g[2] + g[5] + g[6] + g[10]) / 9
    assert m["NDCG@10"] == pytest.approx(ndcg10)
    assert m["NDCG@20"] == pytest.approx(ndcg10 + (g[11] + g[20]) / 9)
    mrr = (1 + 1 / 2 + 1 / 5 + 1 / 6 + 1 / 10 + 1 / 11 + 1 / 20 + 1 / 21) / 9
    assert m["MRR"] == pytest.approx(mrr)
    assert m["users"] == 9


def test_metrics_from_ranks_rank_one_and_all_misses():
    assert metrics_from_ranks([1, 1], ks=(1,)) == {
        "HR@1": 1.0,
        "NDCG@1": 1.0,
        "MRR": 1.0,
        "users": 2,
    }
    m = metrics_from_ranks([INF, INF], ks=(5,))
    assert m["HR@5"] == m["NDCG@5"] == m["MRR"] == 0.0


@pytest.mark.parametrize("ks", [(0,), (5, -1), ("5",), (2.5,), (), (True,), "5"])
def test_bad_ks(ks):
    with pytest.raises(ValueError, match="`ks`"):
        metrics_from_ranks([1.0], ks=ks)


def test_bad_ranks():
    with pytest.raises(ValueError, match="ranks"):
        metrics_from_ranks([0.0, 1.0])
    with pytest.raises(ValueError, match="ranks"):
        metrics_from_ranks([np.nan])
    with pytest.raises(ValueError, match="empty"):
        metrics_from_ranks([])


# ------------------------------------------------------------ evaluate_ranking

# Three users, 6 items; the model scores by the last history item.
TABLE = np.full((7, 7), NEG, "float32")
TABLE[4] = [NEG, 0.1, 0.6, 0.3, 0.9, 0.2, 0.0]  # user A (last item 4)
TABLE[5] = [NEG, 0.5, 0.5, 0.5, 0.9, 0.5, 0.1]  # user B (last item 5)
TABLE[6] = [5.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]  # user C (last item 6)
ITEM_IDS = np.array([[0, 0, 4], [0, 3, 5], [1, 2, 6]], "int32")
TARGETS = np.array([2, 1, 6], "int32")
# With exclusion:    A -> 2 first once 4 is gone: rank 1; B -> ties with 2,
# beaten by 4 (3, 5 gone): rank 3; C -> 6 is in its history: miss.
# Without exclusion: A -> beaten by 4: rank 2; B -> ties 2, 3, 5, beaten by 4:
# rank 5; C -> 0.6 is the best real item (column 0 ignored): rank 1.
KS = (1, 3, 5)
EXPECTED_EXCLUDED = {
    "HR@1": 1 / 3,
    "HR@3": 2 / 3,
    "HR@5": 2 / 3,
    "NDCG@1": 1 / 3,
    "NDCG@3": (1 + 1 / math.log2(4)) / 3,
    "NDCG@5": (1 + 1 / math.log2(4)) / 3,
    "MRR": (1 + 1 / 3) / 3,
    "users": 3,
}
EXPECTED_KEPT = {
    "HR@1": 1 / 3,
    "HR@3": 2 / 3,
    "HR@5": 1.0,
    "NDCG@1": 1 / 3,
    "NDCG@3": (1 / math.log2(3) + 1) / 3,
    "NDCG@5": (1 / math.log2(3) + 1 / math.log2(6) + 1) / 3,
    "MRR": (1 / 2 + 1 / 5 + 1) / 3,
    "users": 3,
}


def make_dataset(batch_size, item_ids=ITEM_IDS, seen_ids=ITEM_IDS, targets=TARGETS):
    features = {"item_ids": item_ids, "seen_ids": seen_ids}
    return tf.data.Dataset.from_tensor_slices((features, targets)).batch(batch_size)


def assert_metrics(actual, expected):
    assert list(actual) == list(expected)
    assert actual == pytest.approx(expected)


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_evaluate_ranking_hand_computed_and_batching_invariant(batch_size):
    model = TableModel(TABLE)
    ds = make_dataset(batch_size)
    assert_metrics(evaluate_ranking(model, ds, ks=KS), EXPECTED_EXCLUDED)
    kept = evaluate_ranking(model, ds, ks=KS, exclude_history=False)
    assert_metrics(kept, EXPECTED_KEPT)


def test_evaluate_ranking_plain_iterable_and_plain_features():
    model = TableModel(TABLE)
    batches = [(ITEM_IDS[:2], TARGETS[:2]), (ITEM_IDS[2:], TARGETS[2:])]
    assert_metrics(evaluate_ranking(model, batches, ks=KS), EXPECTED_EXCLUDED)
    eager = evaluate_ranking(model, batches, ks=KS, run_eagerly=True)
    assert_metrics(eager, EXPECTED_EXCLUDED)


def test_evaluate_ranking_uses_seen_ids_not_item_ids():
    # User B's full history also holds item 4, truncated out of item_ids: once
    # it is excluded only item 2 ties with the target -> rank 2.
    seen = np.array([[0, 0, 4], [3, 5, 4], [1, 2, 6]], "int32")
    m = evaluate_ranking(TableModel(TABLE), make_dataset(3, seen_ids=seen), ks=(2,))
    assert m["HR@2"] == pytest.approx(2 / 3)
    assert m["MRR"] == pytest.approx((1 + 1 / 2) / 3)


def test_constant_model_gets_no_hits():
    model = TableModel(np.zeros((7, 7), "float32"))
    m = evaluate_ranking(model, make_dataset(3), ks=(5,), exclude_history=False)
    # Every target ties with the 5 other items: rank 6.
    assert m["HR@5"] == 0.0
    assert m["MRR"] == pytest.approx(1 / 6)


def test_evaluate_ranking_default_keys():
    m = evaluate_ranking(TableModel(TABLE), make_dataset(3))
    assert list(m) == [
        "HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20", "MRR", "users",
    ]  # fmt: skip


def test_evaluate_ranking_errors():
    model = TableModel(TABLE)
    with pytest.raises(TypeError, match="`model`"):
        evaluate_ranking(object(), make_dataset(3))
    with pytest.raises(ValueError, match="`dataset`"):
        evaluate_ranking(model, [(ITEM_IDS, TARGETS, TARGETS)])
    with pytest.raises(ValueError, match="item_ids"):
        evaluate_ranking(model, [({"seen_ids": ITEM_IDS}, TARGETS)])
    with pytest.raises(ValueError, match="batched"):
        unbatched = tf.data.Dataset.from_tensor_slices((ITEM_IDS, TARGETS))
        evaluate_ranking(model, unbatched)
    with pytest.raises(ValueError, match="targets"):
        evaluate_ranking(model, [(ITEM_IDS, np.array([1, 2, 7]))])
    with pytest.raises(ValueError, match="no examples"):
        evaluate_ranking(model, [])
    with pytest.raises(ValueError, match="`ks`"):
        evaluate_ranking(model, make_dataset(3), ks=(0,))

    wrong_width = TableModel(TABLE)
    wrong_width.num_items = 9  # scores have 7 columns, not 10
    with pytest.raises(ValueError, match="num_items"):
        evaluate_ranking(wrong_width, make_dataset(3))


# ------------------------------------------------------------------- callback


def scores_for_rank(rank, num_items=4):
    """Bias over columns 0..num_items putting item 1 at `rank`."""
    bias = np.zeros(num_items + 1, "float32")
    bias[1] = 1.0
    bias[2 : rank + 1] = 2.0
    return bias


class BiasModel(keras.Model):
    """Scores = a non-trainable bias vector, the same for every user."""

    num_items = 4

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(1)
        self.bias = self.add_weight(
            shape=(self.num_items + 1,), initializer="zeros", trainable=False
        )

    def call(self, x):
        return self.dense(ops.cast(x, "float32"))

    def score(self, item_ids):
        zeros = ops.zeros_like(ops.cast(item_ids[:, :1], "float32"))
        return zeros + ops.expand_dims(self.bias, 0)


class SetBias(keras.callbacks.Callback):
    """Sets the model's bias at the end of each epoch from a schedule."""

    def __init__(self, ranks):
        super().__init__()
        self.ranks = ranks

    def on_epoch_end(self, epoch, logs=None):
        self.model.bias.assign(scores_for_rank(self.ranks[epoch]))


def fit_with_schedule(ranks, epochs, **kwargs):
    keras.utils.set_random_seed(0)
    model = BiasModel()
    model.compile(optimizer="sgd", loss="mse")
    x = np.zeros((2, 3), "int32")
    y = np.zeros((2, 1), "float32")
    valid = [(x, np.array([1, 1], "int32"))]
    callback = RankingEvaluation(valid, ks=(1, 20), **kwargs)
    history = model.fit(
        x, y, epochs=epochs, verbose=0, callbacks=[SetBias(ranks), callback]
    )
    return model, callback, history


def ndcg(rank):
    return 1 / math.log2(rank + 1)


def test_callback_early_stopping_and_restore(capsys):
    # NDCG@20 goes up (ranks 3, 2, 1) then down; patience 2 stops at epoch 4.
    ranks = [3, 2, 1, 2, 3, 4, 4, 4, 4, 4]
    model, callback, history = fit_with_schedule(ranks, epochs=10, patience=2)
    expected = [ndcg(r) for r in ranks[:5]]
    assert history.history["val_NDCG@20"] == pytest.approx(expected)
    assert history.history["val_HR@1"] == [0.0, 0.0, 1.0, 0.0, 0.0]
    assert "val_MRR" in history.history and "val_users" not in history.history
    assert callback.best == pytest.approx(1.0)
    assert callback.best_epoch == 2
    assert callback.stopped_epoch == 4
    assert [h["epoch"] for h in callback.history] == [0, 1, 2, 3, 4]
    assert callback.history[1]["users"] == 2
    # Scoring was compiled once and reused by all five evaluations.
    assert callback._evaluator._step.experimental_get_tracing_count() == 1
    # The weights of the best epoch (rank 1) are back.
    np.testing.assert_array_equal(model.bias.numpy(), scores_for_rank(1))
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("Epoch")]
    assert len(lines) == 5 and all("val_NDCG@20: " in line for line in lines)
    assert "Epoch 3: val_HR@1: 1.0000" in out
    assert "early stopping" in out and "Restoring" in out


def test_callback_without_restore_keeps_last_weights():
    ranks = [2, 1, 3, 3]
    model, callback, history = fit_with_schedule(
        ranks,
        epochs=4,
        patience=None,
        restore_best_weights=False,
        verbose=0,
        monitor="val_MRR",
    )
    assert len(history.history["loss"]) == 4  # never stopped
    assert callback.best == pytest.approx(1.0) and callback.best_epoch == 1
    assert callback.stopped_epoch is None
    np.testing.assert_array_equal(model.bias.numpy(), scores_for_rank(3))


def test_callback_every_other_epoch():
    ranks = [4, 2, 4, 1]
    _, callback, _ = fit_with_schedule(ranks, epochs=4, every=2, verbose=0)
    assert [h["epoch"] for h in callback.history] == [1, 3]
    assert [h["NDCG@20"] for h in callback.history] == pytest.approx([ndcg(2), 1.0])
    assert callback.best_epoch == 3


def test_callback_argument_errors():
    valid = [(ITEM_IDS, TARGETS)]
    with pytest.raises(ValueError, match="`monitor`"):
        RankingEvaluation(valid, monitor="NDCG@50")
    with pytest.raises(ValueError, match="`patience`"):
        RankingEvaluation(valid, patience=-1)
    with pytest.raises(ValueError, match="`every`"):
        RankingEvaluation(valid, every=0)
    with pytest.raises(ValueError, match="`ks`"):
        RankingEvaluation(valid, ks=(0,))
    with pytest.raises(ValueError, match="`average_weights` must be True or False"):
        RankingEvaluation(valid, average_weights="yes")
    assert RankingEvaluation(valid, monitor="val_HR@10").monitor == "HR@10"


# ------------------------------------------------------------ chunked ranking


def _chunk_case(seed=0, batch=40, num_items=300, dim=8):
    from keras_fame.evaluation import rank_targets

    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(batch, dim)).astype("float32")
    table = rng.normal(size=(num_items + 1, dim)).astype("float32")
    targets = rng.integers(1, num_items + 1, size=batch)
    targets[0] = 0  # padding: unrankable
    targets[1] = num_items + 5  # out of range: unrankable
    seen = rng.integers(0, num_items + 1, size=(batch, 25))
    seen[2, 3] = targets[2]  # target in the history: a miss
    seen[3, :5] = seen[3, 5]  # repeats are removed once
    full = np.asarray(rank_targets(vectors @ table.T, targets, seen))
    return vectors, table, targets, seen, full


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 301, 10_000])
def test_chunked_ranks_equal_full_ranks(chunk_size):
    from keras_fame.evaluation import rank_targets_chunked

    vectors, table, targets, seen, full = _chunk_case()
    chunked = np.asarray(
        rank_targets_chunked(vectors, table, targets, seen, chunk_size)
    )
    assert np.isinf(full[:3]).all()
    np.testing.assert_array_equal(chunked, full)
    no_history = np.asarray(rank_targets_chunked(vectors, table, targets, None, 64))
    from keras_fame.evaluation import rank_targets

    np.testing.assert_array_equal(
        no_history, np.asarray(rank_targets(vectors @ table.T, targets))
    )


def test_chunked_ranks_hand_computed_with_ties():
    from keras_fame.evaluation import rank_targets_chunked

    # scores = table @ [1]: items 1..5 score 3, 1, 3, 2, 3; target 3 ties with
    # items 1 and 5 (pessimistic: rank 3); with item 5 seen, rank 2.
    table = np.array([[9.0], [3.0], [1.0], [3.0], [2.0], [3.0]], "float32")
    vectors = np.ones((2, 1), "float32")
    ranks = rank_targets_chunked(
        vectors, table, np.array([3, 3]), np.array([[0, 0], [5, 5]]), chunk_size=2
    )
    np.testing.assert_array_equal(np.asarray(ranks), [3.0, 2.0])


def test_evaluate_ranking_streams_the_item_table():
    from keras_fame.models import SASRec

    rng = np.random.default_rng(0)
    model = SASRec(num_items=90, max_len=6, hidden_dim=8, num_heads=2)
    ids = rng.integers(1, 91, size=(50, 6)).astype("int32")
    ids[:10, :3] = 0
    data = [
        (
            {"item_ids": ids[i : i + 16], "seen_ids": ids[i : i + 16]},
            rng.integers(1, 91, size=len(ids[i : i + 16])),
        )
        for i in range(0, 50, 16)
    ]
    full = evaluate_ranking(model, data)
    chunked = evaluate_ranking(model, data, item_chunk_size=13)
    assert chunked == full
    with pytest.raises(TypeError, match="user_vectors"):
        evaluate_ranking(object(), data, item_chunk_size=13)
    with pytest.raises(ValueError, match="`item_chunk_size`"):
        evaluate_ranking(model, data, item_chunk_size=0)
