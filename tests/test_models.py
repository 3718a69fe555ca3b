import warnings

import keras
import numpy as np
import pytest
from keras import ops

from keras_fame.layers import FAMEBlock
from keras_fame.models import FAME, PositionEmbedding, SASRec
from keras_fame.training import TrainConfig, warm_start_fame
from tests.reference import (
    dropout_rates,
    fame_forward,
    history_candidates,
    history_excluded_loss,
    next_item_batch,
    randomize,
    routing_loss,
)

NUM_ITEMS = 40
MAX_LEN = 12


def _batch(seed=0, batch=6):
    return next_item_batch(NUM_ITEMS, MAX_LEN, seed, batch)


def _models(dropout=0.0, position_anchor="end"):
    kwargs = dict(
        num_items=NUM_ITEMS,
        max_len=MAX_LEN,
        hidden_dim=16,
        num_heads=2,
        num_blocks=2,
        dropout=dropout,
        position_anchor=position_anchor,
    )
    return [SASRec(**kwargs), FAME(num_experts=3, **kwargs)]


# The models of the loss-reference tests: no dropout, every item scored.
LOSS_MODEL = dict(num_items=NUM_ITEMS, max_len=MAX_LEN, hidden_dim=16, dropout=0.0)


def _sasrec_or_fame(index, **options):
    kwargs = {**LOSS_MODEL, **options}
    return FAME(num_experts=3, **kwargs) if index else SASRec(**kwargs)


@pytest.fixture(params=["sasrec", "fame", "fame-start-anchor"])
def model(request):
    if request.param == "fame-start-anchor":
        return _models(position_anchor="start")[1]
    sasrec, fame = _models()
    return sasrec if request.param == "sasrec" else fame


def _np(x):
    return ops.convert_to_numpy(x)


def test_causality(model):
    x, _ = _batch()
    changed = x.copy()
    changed[:, 8:] = (changed[:, 8:] % NUM_ITEMS) + 1
    a, b = _np(model(x)), _np(model(changed))
    np.testing.assert_allclose(a[:, :8], b[:, :8], atol=1e-5)
    assert not np.allclose(a[:, 8:], b[:, 8:])


def test_left_padding_invariance(model):
    history = np.array([[5, 9, 2, 33]], "int32")
    short = np.concatenate([np.zeros((1, 2), "int32"), history], axis=1)
    full = np.concatenate([np.zeros((1, MAX_LEN - 4), "int32"), history], axis=1)
    np.testing.assert_allclose(_np(model(history)), _np(model(full))[:, -4:], atol=1e-5)
    np.testing.assert_allclose(
        _np(model(short))[:, -4:], _np(model(full))[:, -4:], atol=1e-5
    )
    np.testing.assert_allclose(
        _np(model.score(history)), _np(model.score(full)), atol=1e-4
    )


def test_start_anchor_positions_count_from_the_first_item():
    sasrec = _models(position_anchor="start")[0]
    table = _np(sasrec.position_embedding.embeddings)
    ids = np.array([[0, 0, 3, 7, 9], [1, 2, 3, 4, 5], [0, 0, 0, 0, 8]], "int32")
    got = _np(sasrec.position_embedding(ids))
    # Hand-computed: each row's first item gets position 0.
    expected = np.array([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 0, 0, 0, 0]])
    np.testing.assert_allclose(got, table[expected], atol=1e-7)
    with pytest.raises(ValueError, match="`anchor`.*anchor='left'"):
        PositionEmbedding(5, 4, anchor="left")
    end = _models()[0]
    np.testing.assert_allclose(
        np.broadcast_to(_np(end.position_embedding(ids)), got.shape),
        np.broadcast_to(_np(end.position_embedding.embeddings)[-5:], got.shape),
    )


@pytest.mark.parametrize("index", [0, 1])
def test_start_anchor_embeds_every_training_prefix_as_a_history(index):
    # Next-item training reads position t of a sequence; evaluation reads the
    # last position of the prefix s_1..s_t. With positions counted from the
    # first item the two are the same computation; counted from the end they
    # are not.
    sequence = np.array([[0, 0, 0, 0, 5, 9, 2, 33, 17, 4, 21, 8]], "int32")
    for anchor, same in (("start", True), ("end", False)):
        model = _models(position_anchor=anchor)[index]
        whole = _np(model(sequence))
        for t in range(5, MAX_LEN - 1):
            prefix = np.zeros_like(sequence)
            prefix[0, MAX_LEN - t - 1 :] = sequence[0, : t + 1]
            close = np.allclose(_np(model(prefix))[0, -1], whole[0, t], atol=1e-5)
            assert close == same, (anchor, t)


def test_batch_composition_does_not_matter(model):
    x, _ = _batch()
    together = _np(model.score(x))
    alone = np.concatenate([_np(model.score(x[i : i + 1])) for i in range(len(x))])
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_loss_is_cross_entropy_over_real_positions(model):
    x, y = _batch()
    vectors = _np(model(x))
    table = _np(model.item_embedding.embeddings)
    losses = []
    for b, t in zip(*np.nonzero(y), strict=True):
        logits = table[1:] @ vectors[b, t]  # padding is not a candidate
        logits = logits - logits.max()
        losses.append(np.log(np.exp(logits).sum()) - logits[y[b, t] - 1])
    loss = model.compute_loss(x, y, model(x))
    np.testing.assert_allclose(_np(loss), np.mean(losses), rtol=1e-5)


@pytest.mark.parametrize("index", [0, 1])
def test_label_smoothing_loss_matches_numpy_reference(index):
    eps = 0.2
    model = _sasrec_or_fame(index, label_smoothing=eps)
    x, y = _batch()
    vectors = _np(model(x))
    table = _np(model.item_embedding.embeddings)[1:]
    losses = []
    for b, t in zip(*np.nonzero(y), strict=True):
        logits = table @ vectors[b, t].astype("float64")
        log_p = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
        # Target (1 - eps) on the next item plus eps / num_items on every item.
        target = np.full(NUM_ITEMS, eps / NUM_ITEMS)
        target[y[b, t] - 1] += 1.0 - eps
        losses.append(-(target * log_p).sum())
    loss = model.compute_loss(x, y, model(x))
    np.testing.assert_allclose(_np(loss), np.mean(losses), rtol=1e-5)
    # It survives a config round trip and a warm start.
    assert type(model).from_config(model.get_config()).label_smoothing == eps
    if not index:
        assert FAME.from_sasrec(model, 2).label_smoothing == eps
    with pytest.raises(ValueError, match="`label_smoothing`.*label_smoothing=1.0"):
        SASRec(label_smoothing=1.0, **LOSS_MODEL)
    with pytest.raises(ValueError, match="`label_smoothing` needs softmax='full'"):
        SASRec(label_smoothing=0.1, softmax="sampled", **LOSS_MODEL)


@pytest.mark.parametrize("eps", [0.0, 0.2])
@pytest.mark.parametrize("index", [0, 1])
def test_loss_excluding_history_matches_numpy_reference(index, eps):
    model = _sasrec_or_fame(index, label_smoothing=eps, loss_excludes_history=True)
    x, y = _batch()
    vectors = _np(model(x))
    table = _np(model.item_embedding.embeddings)[1:]
    # Next item at every position: position t has read x[b, :t + 1].
    where = list(zip(*np.nonzero(y), strict=True))
    histories = [x[b, : t + 1] for b, t in where]
    targets = [y[b, t] for b, t in where]
    # The batch has repeated items and targets already read: both cases count.
    assert any(len(set(h[h > 0])) < (h > 0).sum() for h in histories)
    assert any(t in h for h, t in zip(histories, targets, strict=True))
    expected = history_excluded_loss(
        table, [vectors[b, t] for b, t in where], histories, targets, eps
    )
    np.testing.assert_allclose(
        _np(model.compute_loss(x, y, model(x))), expected, rtol=1e-5
    )
    np.testing.assert_allclose(
        _np(model.compute_loss({"item_ids": x}, y, model(x))), expected, rtol=1e-5
    )
    # Targets unrelated to the next input: the history of column t ends at
    # x[b, t], not at x[b, t + 1].
    unrelated = np.where(y > 0, np.random.default_rng(1).integers(1, 41, y.shape), 0)
    expected = history_excluded_loss(
        table,
        [vectors[b, t] for b, t in where],
        histories,
        [unrelated[b, t] for b, t in where],
        eps,
    )
    np.testing.assert_allclose(
        _np(model.compute_loss(x, unrelated, model(x))), expected, rtol=1e-5
    )
    # One target per row: the whole row has been read.
    last = y[:, -1]
    expected = history_excluded_loss(table, vectors[:, -1], x, last, eps)
    got = model.compute_loss(x, last, model(x, last_position_only=True))
    np.testing.assert_allclose(_np(got), expected, rtol=1e-5)
    if not eps:
        # Fewer negatives: the loss is lower than with every item.
        plain = type(model).from_config(
            {**model.get_config(), "loss_excludes_history": False}
        )
        plain.set_weights(model.get_weights())
        assert float(_np(got)) < float(_np(plain.compute_loss(x, last, plain(x))))
    # It survives a config round trip and a warm start.
    assert type(model).from_config(model.get_config()).loss_excludes_history
    if not index:
        assert FAME.from_sasrec(model, 2).loss_excludes_history
    with pytest.raises(ValueError, match="`loss_excludes_history` needs softmax"):
        SASRec(loss_excludes_history=True, softmax="sampled", **LOSS_MODEL)
    with pytest.raises(ValueError, match="`loss_excludes_history` must be True or"):
        SASRec(loss_excludes_history=1, **LOSS_MODEL)


def test_loss_excluding_history_gradient_matches_numpy():
    # d loss / d vector = (softmax over the candidates) . E - E[target], over
    # the rows; an item left out gets no share of it.
    import tensorflow as tf

    model = _sasrec_or_fame(0, loss_excludes_history=True)
    x, y = _batch()
    last = y[:, -1]
    vectors = tf.Variable(_np(model(x, last_position_only=True)))
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x, last, vectors)
    got = _np(tape.gradient(loss, vectors))[:, 0]
    table = _np(model.item_embedding.embeddings)[1:].astype("float64")
    for row, (history, target) in enumerate(zip(x, last, strict=True)):
        candidates = history_candidates(history, target, NUM_ITEMS)
        logits = table[candidates] @ _np(vectors)[row, 0]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        expected = (p @ table[candidates] - table[target - 1]) / len(x)
        np.testing.assert_allclose(got[row], expected, rtol=1e-4, atol=1e-7)


def test_last_position_only_is_the_last_position_of_the_full_output(model):
    x, _ = _batch()
    full = _np(model(x))
    last = _np(model(x, last_position_only=True))
    assert last.shape == (len(x), 1, model.hidden_dim)
    np.testing.assert_allclose(last, full[:, -1:], atol=1e-5)


def test_one_target_per_row_loss_is_the_last_columns_cross_entropy(model):
    x, y = _batch()
    vectors = _np(model(x))[:, -1]
    table = _np(model.item_embedding.embeddings)[1:]
    logits = vectors @ table.T
    logits = logits - logits.max(axis=1, keepdims=True)
    targets = y[:, -1]
    expected = (
        np.log(np.exp(logits).sum(axis=1)) - logits[np.arange(len(x)), targets - 1]
    )
    last_column = np.zeros_like(y)
    last_column[:, -1] = targets
    for labels, y_pred in (
        (targets, model(x, last_position_only=True)),
        (targets, model(x)),
        (last_column, model(x)),
    ):
        loss = model.compute_loss(x, labels, y_pred)
        np.testing.assert_allclose(_np(loss), expected.mean(), rtol=1e-5)
    with pytest.raises(ValueError, match="next_item_ids.*Received shape"):
        model.compute_loss(x, y[:, :, None], model(x))


@pytest.mark.parametrize("index", [0, 1])
def test_fit_with_one_target_per_row_runs_the_last_position_only(index, monkeypatch):
    # The same step as targets in the last column only, computing less: the
    # last block is asked for the last position, and the weights after one
    # SGD step match those of the two-dimensional form.
    x, y = _batch()
    last_column = np.zeros_like(y)
    last_column[:, -1] = y[:, -1]
    weights = []
    for labels in (y[:, -1], last_column):
        keras.utils.set_random_seed(0)
        model = _models()[index]
        last_block = model.blocks[-1] if index == 0 else model.fame_block
        seen = []
        original = type(last_block).call

        def spy(self, *args, _original=original, _seen=seen, _last=last_block, **kw):
            if self is _last:
                _seen.append(kw.get("last_position_only", False))
            return _original(self, *args, **kw)

        monkeypatch.setattr(type(last_block), "call", spy)
        model.compile(optimizer=keras.optimizers.SGD(0.5))
        model.fit(x, labels, batch_size=len(x), epochs=1, verbose=0)
        monkeypatch.undo()
        assert seen and all(flag == (labels.ndim == 1) for flag in seen)
        weights.append([_np(w) for w in model.trainable_weights])
    for a, b in zip(*weights, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_score_and_recommend(model):
    x, _ = _batch()
    scores = _np(model.score(x))
    assert scores.shape == (len(x), NUM_ITEMS + 1)
    assert (scores[:, 0] < scores[:, 1:].min(axis=1)).all()
    ids, top_scores = model.recommend(x, k=5)
    assert ids.shape == (len(x), 5) and ids.dtype == np.int32
    for row in range(len(x)):
        assert 0 not in ids[row]
        assert not set(ids[row]) & set(x[row])
        assert (np.diff(top_scores[row]) <= 0).all()
        unseen = np.setdiff1d(np.arange(1, NUM_ITEMS + 1), x[row])
        best = unseen[np.argsort(-scores[row, unseen], kind="stable")[:5]]
        np.testing.assert_array_equal(ids[row], best)
    ids_all, _ = model.recommend(x, k=5, exclude_seen=False)
    assert (ids_all != 0).all()


def test_recommend_reads_the_context_window_and_excludes_the_whole_history(model):
    rng = np.random.default_rng(3)
    long_history = rng.integers(1, NUM_ITEMS + 1, size=(2, MAX_LEN + 10)).astype(
        "int32"
    )
    np.testing.assert_allclose(
        _np(model.score(long_history)),
        _np(model.score(long_history[:, -MAX_LEN:])),
        atol=1e-5,
    )
    ids, _ = model.recommend(long_history, k=3)
    for row in range(2):
        assert not set(ids[row]) & set(long_history[row])


def test_recommend_with_fewer_unseen_items_than_k():
    model = SASRec(num_items=4, max_len=5, hidden_dim=8, num_heads=2)
    ids, scores = model.recommend(np.array([[1, 2, 3]]), k=3)
    assert (
        ids[0, 0] == 4 and (ids[0, 1:] == -1).all() and np.isneginf(scores[0, 1:]).all()
    )


def test_out_of_vocabulary_ids_raise(model):
    with pytest.raises(
        ValueError, match=f"item id {NUM_ITEMS + 1}.*\\[0, {NUM_ITEMS}\\]"
    ):
        model.score(np.array([[1, NUM_ITEMS + 1]]))
    with pytest.raises(ValueError, match="item id -3"):
        model.recommend(np.array([[-3, 2]]))
    with pytest.raises(ValueError, match="`x` holds item id"):
        model.fit(np.array([[1, 99]]), np.array([[1, 2]]), verbose=0)
    with pytest.raises(ValueError, match="at most max_len"):
        model(np.ones((1, MAX_LEN + 1), "int32"))
    with pytest.raises(ValueError, match="`k` must be at most"):
        model.recommend(np.array([[1, 2]]), k=NUM_ITEMS + 1)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"hidden_dim": 10, "num_heads": 4}, "hidden_dim=10, num_heads=4"),
        ({"num_items": 0}, "num_items"),
        ({"dropout": -0.1}, "dropout"),
        ({"num_experts": 0}, "num_experts"),
        ({"position_anchor": "left"}, "`position_anchor`.*position_anchor='left'"),
        ({"softmax": None}, r"`softmax` must be one of \('full', 'sampled'\)"),
        ({"negatives": ["uniform"]}, r"`negatives` must be one of .*\['uniform'\]"),
        ({"num_blocks": True}, r"`num_blocks` must be a positive integer.*=True"),
        ({"max_len": 5.0}, r"`max_len` must be a positive integer.*=5\.0"),
        ({"num_heads": np.int64(0)}, "`num_heads` must be a positive integer"),
        (
            {"layer_norm_epsilon": 0.0},
            r"`layer_norm_epsilon` must be a positive.*=0\.0",
        ),
        ({"layer_norm_epsilon": "1e-6"}, "`layer_norm_epsilon` must be a positive"),
    ],
)
def test_bad_model_arguments(kwargs, message):
    args = dict(num_items=10, hidden_dim=16, num_heads=2, num_experts=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        FAME(**args)


def test_numpy_integer_sizes(tmp_path):
    # `num_items=ids.max()` is a NumPy integer; Keras' own layers (Embedding)
    # reject those, so the models store Python ints.
    sasrec = SASRec(
        num_items=np.int64(NUM_ITEMS),
        max_len=np.int64(MAX_LEN),
        hidden_dim=np.int32(16),
        num_blocks=np.int64(1),
        num_heads=np.int64(2),
    )
    fame = FAME.from_sasrec(sasrec, num_experts=np.int64(3))
    for model in (sasrec, fame):
        config = model.get_config()
        for name in ("num_items", "max_len", "hidden_dim", "num_heads"):
            assert type(config[name]) is int
        assert model(np.array([[0, 1, 2]])).shape == (1, 3, 16)
    assert type(fame.get_config()["num_experts"]) is int
    assert fame.recommend(np.array([[1, 2]]), k=np.int64(4))[0].shape == (1, 4)
    fame.save(tmp_path / "fame.keras")
    restored = keras.saving.load_model(tmp_path / "fame.keras")
    assert restored.num_items == NUM_ITEMS and restored.num_experts == 3


def test_numpy_string_choices_are_stored_as_python_strings():
    # e.g. a choice read off a NumPy array of grid values.
    sasrec = SASRec(
        num_items=NUM_ITEMS,
        hidden_dim=16,
        num_heads=2,
        position_anchor=np.array(["start"])[0],
        negatives=np.str_("in_batch"),
    )
    fame = FAME.from_sasrec(sasrec, num_experts=2, facet_init=np.str_("identity"))
    for model in (sasrec, fame):
        config = model.get_config()
        assert type(config["position_anchor"]) is str
        assert config["position_anchor"] == "start"
        assert type(config["negatives"]) is str
    with pytest.raises(ValueError, match=r"`expert_init` must be one of"):
        FAME.from_sasrec(sasrec, num_experts=2, expert_init=None)


def test_keras_round_trip(model, tmp_path):
    x, y = _batch()
    model.compile(optimizer="adam")
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored) is type(model)
    assert restored.get_config() == model.get_config()
    np.testing.assert_allclose(_np(restored.score(x)), _np(model.score(x)), atol=1e-6)


def _random_fame():
    """FAME with weights far from initialisation: the gate and the routing
    differ between heads, positions and rows."""
    _, fame = _models()
    randomize(fame, np.random.default_rng(0))
    return fame


def test_fame_facet_weights_match_the_numpy_reference():
    fame = _random_fame()
    x, _ = _batch()
    ref = fame_forward(fame, x)
    facets = fame.facet_weights(x)
    np.testing.assert_allclose(facets["gate"], ref["gate"][:, -1], atol=1e-5)
    np.testing.assert_allclose(facets["routing"], ref["routing"][:, -1], atol=1e-5)
    every = fame.facet_weights(x, all_positions=True)
    assert every["routing"].shape == (len(x), MAX_LEN, 2, 3)
    real = x > 0
    np.testing.assert_allclose(every["gate"][real], ref["gate"][real], atol=1e-5)
    np.testing.assert_allclose(every["routing"][real], ref["routing"][real], atol=1e-5)


def test_fame_with_one_head_and_one_expert_has_unit_weights_and_no_warning():
    # Softmax over a size-1 axis is exactly 1; the gate and router take that
    # path without Keras' per-call "softmax over an axis of size 1" warning.
    fame = FAME(NUM_ITEMS, num_experts=1, max_len=MAX_LEN, hidden_dim=8, num_heads=1)
    x, y = _batch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        facets = fame.facet_weights(x)
        fame.compile(optimizer=keras.optimizers.Adam(1e-3))
        loss = fame.train_on_batch(x, y)
    np.testing.assert_array_equal(facets["gate"], np.ones((len(x), 1)))
    np.testing.assert_array_equal(facets["routing"], np.ones((len(x), 1, 1)))
    assert np.isfinite(loss)


def test_fame_explain_is_consistent_with_the_gate():
    fame = _random_fame()
    x, _ = _batch(batch=3)
    k = 4
    report = fame.explain(x, k=k)
    ref = fame_forward(fame, x)
    gate = ref["gate"][:, -1]  # (B, H)
    head_scores = ref["head_scores"][:, -1]  # (B, H, C), Eq. 9
    np.testing.assert_allclose(report["gate"], gate, atol=1e-5)
    np.testing.assert_allclose(report["routing"], ref["routing"][:, -1], atol=1e-5)
    # Eq. 11: the final score is the gate's mixture of the head scores.
    final = np.einsum("bh,bhc->bc", report["gate"], head_scores)
    np.testing.assert_allclose(final, ref["scores"][:, -1], rtol=1e-5, atol=1e-5)
    for row in range(len(x)):
        candidates = [v for v in range(1, NUM_ITEMS + 1) if v not in set(x[row])]
        best = sorted(candidates, key=lambda v: -final[row, v])[:k]
        np.testing.assert_array_equal(report["top_ids"][row], best)
        np.testing.assert_allclose(
            report["top_scores"][row], final[row, best], rtol=1e-5, atol=1e-4
        )
        for head in range(2):
            scores = head_scores[row, head]
            best = sorted(candidates, key=lambda v: -scores[v])[:k]
            np.testing.assert_array_equal(report["head_top_ids"][row, head], best)
            np.testing.assert_allclose(
                report["head_top_scores"][row, head],
                scores[best],
                rtol=1e-5,
                atol=1e-4,
            )
    # The heads rank differently here, so a head list taken from the final
    # scores (or from the other head) would fail above.
    assert (report["head_top_ids"][:, 0] != report["head_top_ids"][:, 1]).any()


def test_from_sasrec_copies_the_pretrained_parts():
    sasrec, _ = _models()
    for weight in sasrec.weights:  # make the source distinctive
        weight.assign(weight + 0.1)
    fame = FAME.from_sasrec(sasrec, num_experts=4)
    start = FAME.from_sasrec(_models(position_anchor="start")[0], num_experts=2)
    assert start.position_anchor == "start" and fame.position_anchor == "end"
    assert start.position_embedding.anchor == "start"
    get = ops.convert_to_numpy
    np.testing.assert_array_equal(
        get(fame.item_embedding.embeddings), get(sasrec.item_embedding.embeddings)
    )
    np.testing.assert_array_equal(
        get(fame.position_embedding.embeddings),
        get(sasrec.position_embedding.embeddings),
    )
    for a, b in zip(fame.blocks[0].weights, sasrec.blocks[0].weights, strict=True):
        np.testing.assert_array_equal(get(a), get(b))
    src, dst = sasrec.blocks[-1].attention, fame.fame_block.attention
    for name in ("key_kernel", "value_kernel", "key_bias", "value_bias"):
        np.testing.assert_array_equal(get(getattr(dst, name)), get(getattr(src, name)))
    assert tuple(dst.query_kernel.shape) == (16, 2, 4, 8)
    # Lower blocks are identical, so hidden states entering the last block agree.
    x, _ = _batch()
    hs, ms = sasrec._embed(x)
    hf, mf = fame._embed(x)
    np.testing.assert_allclose(
        get(sasrec.blocks[0](hs, ms)), get(fame.blocks[0](hf, mf)), atol=1e-6
    )


def test_from_sasrec_dropout_override_and_the_attention_rate():
    sasrec, _ = _models(dropout=0.5)
    sasrec(_batch()[0])
    # SASRec's attention_dropout (None) resolved to its dropout, 0.5: a new
    # dropout alone keeps it; attention_dropout=None follows the new dropout.
    kept = FAME.from_sasrec(sasrec, num_experts=2, dropout=0.3)
    follows = FAME.from_sasrec(
        sasrec, num_experts=2, dropout=0.3, attention_dropout=None
    )
    assert (kept.dropout, kept.attention_dropout) == (0.3, 0.5)
    assert (follows.dropout, follows.attention_dropout) == (0.3, 0.3)
    assert dropout_rates(kept) == {0.3, 0.5}
    assert dropout_rates(follows) == {0.3}


def test_from_sasrec_pretrained_experts_start_from_the_sasrec_query():
    sasrec, _ = _models()
    fame = FAME.from_sasrec(
        sasrec, num_experts=3, expert_init="pretrained", expert_noise=0.0
    )
    get = ops.convert_to_numpy
    src = get(sasrec.blocks[-1].attention.query_kernel)
    dst = get(fame.fame_block.attention.query_kernel)
    for n in range(3):
        np.testing.assert_allclose(dst[:, :, n], src[:, :, 0])
    with pytest.raises(ValueError, match="hidden_dim"):
        FAME.from_sasrec(sasrec, num_experts=2, hidden_dim=32)
    with pytest.raises(ValueError, match="expert_init"):
        FAME.from_sasrec(sasrec, num_experts=2, expert_init="copy")
    with pytest.raises(ValueError, match="`expert_noise` must be a finite number"):
        FAME.from_sasrec(sasrec, num_experts=2, expert_noise=-0.1)


def test_from_sasrec_expert_noise_has_the_given_stddev():
    sasrec, _ = _models()
    src = ops.convert_to_numpy(sasrec.blocks[-1].attention.query_kernel)
    for noise in (0.02, 0.5):
        fame = FAME.from_sasrec(
            sasrec, num_experts=4, expert_init="pretrained", expert_noise=noise, seed=1
        )
        dst = ops.convert_to_numpy(fame.fame_block.attention.query_kernel)
        offsets = dst - src  # src broadcasts over the experts
        assert offsets.std() == pytest.approx(noise, rel=0.1)
        assert abs(offsets.mean()) < noise / 5


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_training_stays_finite(policy):
    keras.config.set_dtype_policy(policy)
    for model in _models(dropout=0.1):
        x, y = _batch()
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        history = model.fit(x, y, epochs=2, verbose=0)
        assert np.isfinite(history.history["loss"]).all()
        scores = _np(model.score(x))
        assert scores.dtype == np.float32 and np.isfinite(scores).all()
        if isinstance(model, FAME):
            facets = model.facet_weights(x)
            np.testing.assert_allclose(facets["routing"].sum(-1), 1.0, atol=1e-2)


def test_from_sasrec_identity_facets_score_with_the_concatenated_head_states():
    sasrec, _ = _models()
    fame = FAME.from_sasrec(sasrec, num_experts=2, facet_init="identity")
    rng = np.random.default_rng(0)
    states = rng.normal(size=(3, 2, 8)).astype("float32")
    items = rng.normal(size=(5, 16)).astype("float32")
    gate = _np(fame.scorer.gate(states))
    expected = (gate[:, :, None] * states * 2).reshape(3, 16) @ items.T
    np.testing.assert_allclose(
        _np(fame.scorer(states, items)), expected, rtol=1e-4, atol=1e-4
    )
    with pytest.raises(ValueError, match="facet_init"):
        FAME.from_sasrec(sasrec, num_experts=2, facet_init="zeros")


@pytest.mark.parametrize("index", [0, 1])
def test_an_empty_history_learns_the_first_item(index):
    # `TrainConfig(empty_prefix=True)` trains rows with no input at all: the
    # model's vector for them must be finite, the same at any row width, and
    # learnable (here: toward the one first item it is shown).
    keras.utils.set_random_seed(0)
    model = _models()[index]
    wide, narrow = np.zeros((3, MAX_LEN), "int32"), np.zeros((3, 1), "int32")
    vectors = _np(model(wide, last_position_only=True))[:, -1]
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(vectors, np.repeat(vectors[:1], 3, axis=0), atol=1e-6)
    np.testing.assert_allclose(
        _np(model(narrow, last_position_only=True))[:, -1], vectors, atol=1e-5
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    x, _ = _batch(batch=4)
    x = np.concatenate([x, wide[:2]])
    y = np.concatenate([x[:4, -1] % NUM_ITEMS + 1, [7, 7]]).astype("int32")
    for _ in range(30):
        loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    ids, _ = model.recommend(narrow[:1], k=1)
    assert ids.tolist() == [[7]]


def _layer_norms(model):
    return [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.LayerNormalization)
    ]


def test_layer_norm_epsilon_reaches_every_layer_norm_and_the_warm_start():
    sasrec = SASRec(num_items=10, hidden_dim=8, num_heads=2, layer_norm_epsilon=1e-6)
    fame = FAME.from_sasrec(sasrec, num_experts=2)
    default = FAME(num_items=10, hidden_dim=8, num_heads=2, num_experts=2)
    # The embedding's, then two per block (attention and FFN residuals).
    assert len(_layer_norms(sasrec)) == len(_layer_norms(fame)) == 5
    assert {norm.epsilon for norm in _layer_norms(sasrec) + _layer_norms(fame)} == {
        1e-6
    }
    assert {norm.epsilon for norm in _layer_norms(default)} == {1e-12}
    clone = FAME.from_config(fame.get_config())
    assert {norm.epsilon for norm in _layer_norms(clone)} == {1e-6}


def _zero_first_position_batch(model):
    """Item 1's embedding and every position embedding set to zero: the first
    real position (item 1) enters every LayerNorm as an exactly zero vector
    (the biases start at zero, dropout is off)."""
    table = ops.convert_to_numpy(model.item_embedding.embeddings).copy()
    table[1] = 0.0
    model.item_embedding.embeddings.assign(table)
    positions = model.position_embedding.embeddings
    positions.assign(ops.zeros(positions.shape, positions.dtype))
    return np.array([[0, 0, 1, 2]], "int32"), np.array([[0, 0, 2, 3]], "int32")


@pytest.mark.parametrize("cls", [SASRec, FAME])
def test_a_zero_vector_position_overflows_adam_unless_epsilon_is_raised(cls):
    """A LayerNorm of a zero vector multiplies its input gradient by
    1/sqrt(epsilon): 1e6 at the default 1e-12. Five of them in a row (the
    embedding's and two per block) push the gradient past sqrt(float32 max),
    about 1.8e19, so Adam's squared gradient is inf after one step and its
    second-moment update inf - inf = NaN after two. At epsilon 1e-6 (1e3 per
    LayerNorm) the same batch trains to finite weights. (A LayerNorm that
    missed the epsilon is caught by the test above.)"""
    import tensorflow as tf

    extra = {"num_experts": 2} if cls is FAME else {}
    args = dict(num_items=5, max_len=4, hidden_dim=8, num_heads=2, dropout=0.0)
    finite = {}
    for epsilon in (1e-12, 1e-6):
        model = cls(layer_norm_epsilon=epsilon, **args, **extra)
        x, y = _zero_first_position_batch(model)
        if epsilon == 1e-12:
            with tf.GradientTape() as tape:
                loss = model.compute_loss(x, y, model(x, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            largest = max(float(np.abs(g).max()) for g in grads if g is not None)
            assert largest > 1.9e19
        model.compile(optimizer="adam")
        model.fit(x, y, epochs=2, batch_size=1, shuffle=False, verbose=0)
        finite[epsilon] = all(np.isfinite(w).all() for w in model.get_weights())
    assert finite == {1e-12: False, 1e-6: True}


def test_routing_loss_is_added_to_the_training_loss():
    x, y = _batch()
    plain = FAME(
        num_experts=3, num_items=NUM_ITEMS, max_len=MAX_LEN, hidden_dim=16, dropout=0.0
    )
    # A router far from even, so that the loss is well above round-off.
    router = plain.fame_block.attention.router_kernel
    router.assign(np.random.default_rng(3).normal(0, 2.0, size=router.shape))
    weighted = FAME.from_config(dict(plain.get_config(), routing_loss_weight=0.5))
    weighted.set_weights(plain.get_weights())
    losses = []
    for model in (plain, weighted):
        y_pred = model(x, training=True)  # dropout 0: as at inference
        losses.append(ops.convert_to_numpy(model.compute_loss(x, y, y_pred)))
    routing = weighted.facet_weights(x, all_positions=True)["routing"]
    expected = 0.5 * routing_loss(routing, x > 0)
    assert expected < -0.01
    np.testing.assert_allclose(losses[1] - losses[0], expected, rtol=1e-3, atol=1e-5)


def test_routing_loss_weight_reaches_the_warm_start():
    sasrec, _ = _models()
    fame = FAME.from_sasrec(sasrec, num_experts=2, routing_loss_weight=0.2)
    assert fame.fame_block.attention.routing_loss_weight == 0.2
    config = TrainConfig(routing_loss_weight=0.3).finetune_config()
    fame = warm_start_fame(sasrec, config)
    assert fame.fame_block.attention.routing_loss_weight == 0.3
    assert FAME.from_config(fame.get_config()).routing_loss_weight == 0.3
    with pytest.raises(ValueError, match="`routing_loss_weight` must be a finite"):
        FAME(num_items=5, routing_loss_weight=-1.0)


def test_routing_loss_makes_alike_experts_route_apart():
    # Experts that start identical give the router no reason to differ; the
    # routing loss makes each position pick few experts.
    x, y = next_item_batch(40, 8, seed=0, batch=64)

    def entropy_after_training(weight):
        keras.utils.set_random_seed(0)
        model = FAME(
            num_items=40,
            num_experts=3,
            max_len=8,
            hidden_dim=16,
            dropout=0.0,
            routing_loss_weight=weight,
        )
        attention = model.fame_block.attention
        query = ops.convert_to_numpy(attention.query_kernel)
        attention.query_kernel.assign(np.repeat(query[:, :, :1], 3, axis=2))
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
        model.fit(x, y, epochs=20, batch_size=32, verbose=0)
        routing = model.facet_weights(x, all_positions=True)["routing"][x > 0]
        return -np.sum(routing * np.log(routing + 1e-12), -1).mean() / np.log(3)

    without, with_loss = entropy_after_training(0.0), entropy_after_training(1.0)
    assert with_loss < 0.5 * without


def _layer_norm(x, layer):
    gamma, beta = (_np(w) for w in (layer.gamma, layer.beta))
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + layer.epsilon) * gamma + beta


def _randomize(weights, rng):
    for weight in weights:
        weight.assign(rng.normal(0.5, 0.5, size=weight.shape).astype("float32"))


@pytest.mark.parametrize("attention_residual", [True, False])
def test_fame_block_matches_numpy_reference(attention_residual):
    # The block on top of its attention (which has its own reference in
    # test_moe_query_attention.py): Eq. 7, after the attention sub-layer's
    # residual and LayerNorm or (False) directly on the attention's output.
    block = FAMEBlock(2, 3, attention_residual=attention_residual)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, 8)).astype("float32")
    padding = np.array([[0, 0, 1, 1, 1], [1] * 5, [0, 0, 0, 0, 1]], bool)
    block.build(x.shape)
    norms = [block.ffn_norm] + ([block.attention_norm] if attention_residual else [])
    inner, outer = block.ffn_inner, block.ffn_outer
    _randomize([inner.bias, outer.bias] + [w for n in norms for w in n.weights], rng)
    names = [w.path for w in block.weights]
    assert any("attention_norm" in name for name in names) == attention_residual
    f = _np(block.attention(x, padding_mask=padding))  # (3, 5, heads, 4)
    z = f
    if attention_residual:
        z = _layer_norm(x.reshape(3, 5, 2, 4) + f, block.attention_norm)
    hidden = np.maximum(z @ _np(inner.kernel) + _np(inner.bias), 0.0)
    expected = _layer_norm(
        z + hidden @ _np(outer.kernel) + _np(outer.bias), block.ffn_norm
    )
    states = _np(block(x, padding_mask=padding))
    np.testing.assert_allclose(states, expected, rtol=1e-4, atol=1e-4)
    last = _np(block(x, padding_mask=padding, last_position_only=True))
    np.testing.assert_allclose(last, expected[:, -1:], rtol=1e-4, atol=1e-4)


def test_attention_residual_reaches_fame_the_warm_start_and_the_config():
    sasrec, _ = _models()
    fame = FAME.from_sasrec(sasrec, num_experts=2, attention_residual=False)
    assert fame.attention_residual is False
    assert fame.fame_block.attention_residual is False
    # One LayerNorm fewer than with the residual: the FAME block's FFN' one.
    assert len(_layer_norms(fame)) == len(_layer_norms(sasrec)) - 1
    config = TrainConfig(attention_residual=False).finetune_config()
    assert warm_start_fame(sasrec, config).fame_block.attention_residual is False
    clone = FAME.from_config(fame.get_config())
    assert clone.fame_block.attention_residual is False
    clone.set_weights(fame.get_weights())
    ids, _ = _batch()
    np.testing.assert_allclose(_np(clone.score(ids)), _np(fame.score(ids)), atol=1e-5)
    assert FAME.from_sasrec(sasrec, num_experts=2).fame_block.attention_residual
    with pytest.raises(ValueError, match="`attention_residual` must be True or Fal"):
        FAME(num_items=5, attention_residual=1)
