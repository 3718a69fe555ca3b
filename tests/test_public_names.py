"""Small tests of public names that had none of their own."""

import random
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fame.datasets import (
    AMAZON_DATASETS,
    DatasetNotAvailableError,
    available_datasets,
    load,
)
from keras_fame.distribute import is_chief
from keras_fame.evaluation import RankingEvaluation, evaluate_ranking, metric_names
from keras_fame.models import SASRec
from keras_fame.training import set_seed


def test_available_datasets_are_the_names_load_accepts(tmp_path):
    names = available_datasets()
    assert names == sorted({*AMAZON_DATASETS, "ml-1m", "ml-20m", "synthetic"})
    assert (
        load(
            "synthetic", num_users=5, num_items=30, min_length=3, max_length=6, seed=0
        ).num_users
        == 5
    )
    for name in sorted(AMAZON_DATASETS):
        # Known names: refused because the files are missing, not the name.
        with pytest.raises(DatasetNotAvailableError):
            load(name, cache_dir=tmp_path, download=False)
    with pytest.raises(ValueError, match="beauty"):
        load("no-such-dataset")


def test_metric_names_order_and_duplicates():
    assert metric_names((20, 5)) == ["HR@20", "HR@5", "NDCG@20", "NDCG@5", "MRR"]
    assert metric_names((10, 10)) == ["HR@10", "NDCG@10", "MRR"]
    assert metric_names(np.array([1])) == ["HR@1", "NDCG@1", "MRR"]
    with pytest.raises(ValueError, match="`ks`"):
        metric_names((0,))


def _strategy(cluster, task_type, task_id):
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id
    )
    return SimpleNamespace(cluster_resolver=resolver)


def test_is_chief():
    assert is_chief(tf.distribute.get_strategy())  # one machine
    assert is_chief(SimpleNamespace())
    workers = {"worker": ["a:1", "b:1"]}
    assert is_chief(_strategy(workers, "worker", 0))
    assert not is_chief(_strategy(workers, "worker", 1))
    with_chief = {"chief": ["c:1"], "worker": ["a:1", "b:1"]}
    assert is_chief(_strategy(with_chief, "chief", 0))
    assert not is_chief(_strategy(with_chief, "worker", 0))
    assert not is_chief(_strategy({**with_chief, "evaluator": ["e:1"]}, "evaluator", 0))
    assert is_chief(_strategy({}, None, None))  # an empty cluster spec


def test_set_seed_repeats_python_numpy_and_keras_draws():
    def draws():
        return (
            random.random(),
            np.random.rand(),
            float(keras.random.uniform((1,))[0]),
            SASRec(5, max_len=3, hidden_dim=4, num_heads=1).get_weights()[0].sum(),
        )

    set_seed(3, deterministic=False)
    first = draws()
    set_seed(3, deterministic=False)
    assert draws() == first
    set_seed(4, deterministic=False)
    assert all(a != b for a, b in zip(draws(), first, strict=True))
    set_seed(3)  # deterministic=True also makes TensorFlow's ops deterministic
    from tensorflow.python.framework import config as tf_config

    assert tf_config.is_op_determinism_enabled()
    assert draws() == first


def test_ranking_evaluation_without_average_weights_scores_the_raw_weights():
    rng = np.random.default_rng(0)
    x = rng.integers(1, 21, size=(64, 6)).astype("int32")
    y = np.roll(x, -1, axis=1)
    valid = [({"item_ids": x[:16, :-1], "seen_ids": x[:16, :-1]}, x[:16, -1])]
    callbacks = {
        flag: RankingEvaluation(
            valid,
            average_weights=flag,
            restore_best_weights=False,
            patience=None,
            verbose=0,
        )
        for flag in (False, True)
    }
    model = SASRec(20, max_len=6, hidden_dim=8, num_heads=1, dropout=0.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2, use_ema=True, ema_momentum=0.9))
    recorded = {}
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: recorded.update(
            raw=model.get_weights(), logs=dict(logs)
        )
    )
    model.fit(
        x, y, batch_size=8, epochs=1, verbose=0, callbacks=[*callbacks.values(), record]
    )
    # Keras leaves the averages in the model after fit; the raw weights are
    # those the callbacks after RankingEvaluation saw.
    averaged = evaluate_ranking(model, valid)
    model.set_weights(recorded["raw"])
    raw = evaluate_ranking(model, valid)
    (without,) = callbacks[False].history
    (with_average,) = callbacks[True].history
    for name in metric_names():
        assert without[name] == pytest.approx(raw[name], abs=1e-9)
        assert with_average[name] == pytest.approx(averaged[name], abs=1e-9)
    # The two really differ here, and the logs hold the last callback's.
    assert averaged["MRR"] != pytest.approx(raw["MRR"], abs=1e-6)
    assert recorded["logs"]["val_MRR"] == pytest.approx(averaged["MRR"], abs=1e-9)
