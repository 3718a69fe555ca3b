"""The edges of the models' Python entry points (issue 39, case 8) and the
vocabulary they carry: empty batches, empty histories, k and batch_size out of
range, ragged rows, your own ids in and out, saved with the model."""

import keras
import numpy as np
import pytest

from keras_fame.datasets import Vocabulary
from keras_fame.models import FAME, SASRec

NUM_ITEMS = 50


@pytest.fixture(scope="module")
def models():
    keras.utils.set_random_seed(3)
    sasrec = SASRec(NUM_ITEMS, max_len=6, hidden_dim=8, num_blocks=1, num_heads=2)
    return {"sasrec": sasrec, "fame": FAME.from_sasrec(sasrec, num_experts=2)}


def _scores(model, histories):
    return keras.ops.convert_to_numpy(model.score(np.asarray(histories, "int32")))


@pytest.mark.parametrize("key", ["sasrec", "fame"])
def test_empty_batch_gives_empty_answers(models, key):
    ids, scores = models[key].recommend(np.zeros((0, 4), "int32"), k=3)
    assert ids.shape == (0, 3) and scores.shape == (0, 3)
    assert ids.dtype == np.int32 and scores.dtype == np.float32


@pytest.mark.parametrize("key", ["sasrec", "fame"])
def test_zero_length_history_is_the_empty_history(models, key):
    model = models[key]
    ids, scores = model.recommend(np.zeros((2, 0), "int32"), k=4)
    expected = np.argsort(-_scores(model, [[0]])[0, 1:], kind="stable")[:4] + 1
    np.testing.assert_array_equal(ids, [expected, expected])
    vectors = keras.ops.convert_to_numpy(model.user_vectors(np.zeros((1, 0), "int32")))
    reference = keras.ops.convert_to_numpy(
        model.user_vectors(np.zeros((1, 1), "int32"))
    )
    np.testing.assert_allclose(vectors, reference, rtol=0, atol=0)


def test_explain_k_beyond_the_catalogue_is_refused(models):
    with pytest.raises(ValueError, match=r"`k` must be at most num_items=50"):
        models["fame"].explain(np.array([[1, 2]]), k=51)
    with pytest.raises(ValueError, match=r"`k` must be at most num_items=50"):
        models["fame"].explain(np.array([[1, 2]]), k=1000)
    report = models["fame"].explain(np.array([[1, 2]]), k=50)
    assert report["top_ids"].shape == (1, 50)
    assert (report["top_ids"][0, -2:] == -1).all()  # two items were seen


@pytest.mark.parametrize("batch_size", [0, -1, 2.5])
def test_batch_size_must_be_positive(models, batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        models["sasrec"].recommend(np.array([[1, 2]]), batch_size=batch_size)


def test_ragged_rows_say_pad_on_the_left(models):
    with pytest.raises(ValueError, match="pad each row on the left"):
        models["sasrec"].recommend([[1, 2, 3], [4]])


# ----------------------------------------------------------------- vocabulary

SKUS = [f"sku-{i}" for i in range(1, NUM_ITEMS + 1)]


@pytest.fixture
def fame_with_vocabulary(models):
    fame = FAME.from_config(models["fame"].get_config())
    fame.set_weights(models["fame"].get_weights())
    fame.set_vocabulary(Vocabulary(SKUS))
    return fame


def test_recommend_in_your_ids_equals_model_ids(models, fame_with_vocabulary):
    rows = ["sku-3 sku-9 sku-1", ["sku-20", "never-seen"], ""]
    ids, scores = fame_with_vocabulary.recommend(rows, k=5)
    model_rows = np.array([[3, 9, 1], [0, 0, 20], [0, 0, 0]], "int32")
    expected_ids, expected_scores = models["fame"].recommend(model_rows, k=5)
    assert ids.tolist() == [[SKUS[i - 1] for i in row] for row in expected_ids]
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-6)
    encoded, unknown = fame_with_vocabulary.encode_histories(rows)
    np.testing.assert_array_equal(encoded, model_rows)
    assert unknown.tolist() == [0, 1, 0]


def test_explain_answers_in_your_ids(models, fame_with_vocabulary):
    report = fame_with_vocabulary.explain(["sku-3 sku-9"], k=4)
    expected = models["fame"].explain(np.array([[3, 9]]), k=4)
    assert report["top_ids"].tolist() == [[SKUS[i - 1] for i in expected["top_ids"][0]]]
    assert report["head_top_ids"].tolist() == [
        [[SKUS[i - 1] for i in head] for head in expected["head_top_ids"][0]]
    ]
    np.testing.assert_allclose(report["gate"], expected["gate"], rtol=1e-6)


def test_integer_ids_match_by_their_text(models):
    sasrec = SASRec.from_config(models["sasrec"].get_config())
    sasrec.set_weights(models["sasrec"].get_weights())
    sasrec.set_vocabulary(Vocabulary(np.arange(101, 101 + NUM_ITEMS)))
    by_int, _ = sasrec.recommend([[103, 109]], k=3)
    by_text, _ = sasrec.recommend(["103 109"], k=3)
    expected, _ = models["sasrec"].recommend(np.array([[3, 9]]), k=3)
    assert by_int.tolist() == by_text.tolist() == (expected + 100).tolist()


def test_vocabulary_is_saved_with_the_model(fame_with_vocabulary, tmp_path):
    path = tmp_path / "fame.keras"
    fame_with_vocabulary.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.vocabulary == fame_with_vocabulary.vocabulary
    rows = ["sku-3 sku-9 sku-1", "sku-7"]
    a, _ = loaded.recommend(rows, k=5)
    b, _ = fame_with_vocabulary.recommend(rows, k=5)
    assert a.tolist() == b.tolist()


def test_set_vocabulary_checks_its_argument(models):
    model = SASRec(NUM_ITEMS, max_len=6, hidden_dim=8, num_blocks=1, num_heads=2)
    with pytest.raises(ValueError, match="has 3 items but the model has num_items=50"):
        model.set_vocabulary(Vocabulary(["a", "b", "c"]))
    with pytest.raises(TypeError, match="Vocabulary"):
        model.set_vocabulary({"a": 1})
    with pytest.raises(ValueError, match="same text"):
        model.set_vocabulary(Vocabulary([1, "1", *range(2, NUM_ITEMS)]))
    with pytest.raises(ValueError, match="no vocabulary"):
        model.encode_histories(["a b"])
