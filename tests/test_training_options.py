"""The recipe's options reach the stages they name (split from
test_training.py so that the two files run on separate workers)."""

import dataclasses
import json

import keras
import numpy as np
import pytest

from keras_fame.models import FAME
from keras_fame.training import (
    TrainConfig,
    config_from_record,
    config_record,
    train_fame,
    train_sasrec,
    two_stage,
)
from tests.recipe import Interrupt as _Interrupt
from tests.recipe import recipe_config as _config
from tests.reference import dropout_rates, small_recipe_data


@pytest.fixture(scope="module")
def data():
    return small_recipe_data()


def test_finetune_learning_rate_applies_to_fame_only(data, tmp_path):
    config = _config(pretrain_epochs=1, finetune_epochs=1, finetune_learning_rate=3e-4)
    runs = two_stage(data, config, tmp_path, verbose=0)
    sasrec_rate = runs["sasrec"][0].optimizer.learning_rate
    fame_rate = runs["fame"][0].optimizer.learning_rate
    assert float(keras.ops.convert_to_numpy(sasrec_rate)) == pytest.approx(1e-3)
    assert float(keras.ops.convert_to_numpy(fame_rate)) == pytest.approx(3e-4)
    # The default (1e-4) is recorded; `None` (one rate, what runs made before
    # the field existed used) is left out, so their work folders stay valid.
    assert config_record(_config())["finetune_learning_rate"] == 1e-4
    single = _config(finetune_learning_rate=None, finetune_dropout=None)
    assert single.finetune_config() == single
    assert config.finetune_config() == dataclasses.replace(
        config, learning_rate=3e-4, dropout=0.3, attention_dropout=None
    )
    assert "finetune_learning_rate" not in config_record(single)
    assert config_from_record(config_record(single)) == single
    assert config_record(config)["finetune_learning_rate"] == 3e-4
    for bad in (0.0, -1e-3, "1e-4", True):
        with pytest.raises(ValueError, match="`finetune_learning_rate` must be a pos"):
            _config(finetune_learning_rate=bad)
    for bad in (None, 0, "1e-3"):
        with pytest.raises(
            ValueError, match=r"`learning_rate` must be a positive number\."
        ):
            _config(learning_rate=bad)


def test_fame_from_scratch_takes_its_own_fields(data, tmp_path):
    # Without a SASRec, `train_fame` builds FAME from a random start: its
    # experts and routing loss weight come from the config too (the weight
    # was once dropped there, silently training without the routing loss).
    config = _config(
        finetune_epochs=1,
        num_experts=3,
        routing_loss_weight=0.25,
        attention_residual=False,
    )
    expected = (3, 0.25, False)
    model, _ = train_fame(data, config, tmp_path, sasrec=None, verbose=0)
    assert isinstance(model, FAME)
    fields = (model.num_experts, model.routing_loss_weight, model.attention_residual)
    assert fields == expected
    stage = json.loads((tmp_path / "fame" / "stage.json").read_text())
    assert (stage["routing_loss_weight"], stage["attention_residual"]) == (0.25, False)
    # A finished stage reloads with the same fields.
    again, _ = train_fame(data, config, tmp_path, sasrec=None, verbose=0)
    fields = (again.num_experts, again.routing_loss_weight, again.attention_residual)
    assert fields == expected


def test_finetune_dropout_applies_to_fame_only(data, tmp_path):
    config = _config(pretrain_epochs=1, finetune_epochs=1, finetune_dropout=0.25)
    runs = two_stage(data, config, tmp_path, verbose=0)
    sasrec, fame = runs["sasrec"][0], runs["fame"][0]
    assert dropout_rates(sasrec) == {0.1}
    # Every dropout of the fine-tuned FAME, attention included, and its
    # saved config (it was reloaded from model.keras on a rerun).
    assert dropout_rates(fame) == {0.25}
    assert (fame.dropout, fame.attention_dropout) == (0.25, 0.25)
    reloaded = two_stage(data, config, tmp_path, verbose=0)["fame"][0]
    assert dropout_rates(reloaded) == {0.25}
    # `None`: FAME keeps the SASRec's rates (attention_dropout included).
    plain = _config(
        pretrain_epochs=1,
        finetune_epochs=1,
        attention_dropout=0.3,
        finetune_dropout=None,
    )
    runs = two_stage(data, plain, tmp_path / "plain", verbose=0)
    assert dropout_rates(runs["fame"][0]) == {0.1, 0.3}
    assert plain.finetune_config().dropout == 0.1
    # Only FAME's stage reads it; `None` is what earlier runs used.
    _, results = train_sasrec(data, _config(pretrain_epochs=1), tmp_path, verbose=0)
    assert results["epochs_run"] == 1
    assert "finetune_dropout" not in config_record(plain)
    assert config_record(config)["finetune_dropout"] == 0.25
    # The default is 0.3 and is recorded, so it is not mistaken for earlier
    # runs' `None` (their work folders' FAME stage is not reused).
    assert TrainConfig().finetune_dropout == 0.3
    assert config_record(TrainConfig())["finetune_dropout"] == 0.3
    for bad in (1.0, -0.1, "0.2", True):
        with pytest.raises(ValueError, match="`finetune_dropout` must be a float"):
            _config(finetune_dropout=bad)


class _WeightRecorder(keras.callbacks.Callback):
    """The trainable weights after every step, with the epoch of the step."""

    def __init__(self):
        super().__init__()
        self.steps = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        weights = [
            keras.ops.convert_to_numpy(v) for v in self.model.trainable_variables
        ]
        self.steps.append((self.epoch, weights))


def test_weight_averaging_matches_a_numpy_reference(data, tmp_path):
    momentum = 0.8
    plain, averaged = _WeightRecorder(), _WeightRecorder()
    config = _config(pretrain_epochs=3, patience=None)
    _, plain_results = train_sasrec(
        data, config, tmp_path / "plain", verbose=0, callbacks=[plain]
    )
    model, results = train_sasrec(
        data,
        dataclasses.replace(config, ema_momentum=momentum),
        tmp_path / "averaged",
        verbose=0,
        callbacks=[averaged],
    )
    # Averaging does not touch training: the raw weights of every step are
    # those of the run without it (the evaluation's swap is exact).
    assert len(plain.steps) == len(averaged.steps) > 3
    for (epoch, weights), (other_epoch, others) in zip(
        plain.steps, averaged.steps, strict=True
    ):
        assert epoch == other_epoch
        for a, b in zip(weights, others, strict=True):
            np.testing.assert_array_equal(a, b)
    # Keras' average: the first step's weights, then m * avg + (1 - m) * w.
    # The model kept is the average at the end of the best epoch.
    best = results["best_epoch"] - 1
    average = None
    for epoch, weights in averaged.steps:
        if epoch > best:
            break
        if average is None:
            average = [w.astype("float64") for w in weights]
        else:
            average = [
                momentum * a + (1 - momentum) * w
                for a, w in zip(average, weights, strict=True)
            ]
    kept = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    for a, b in zip(kept, average, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # It is what was validated and tested, not the raw weights.
    raw = averaged.steps[-1][1]
    assert any(not np.allclose(a, b) for a, b in zip(kept, raw, strict=True))
    history = json.loads(
        (tmp_path / "averaged" / "sasrec" / "history.json").read_text()
    )
    assert results["valid"]["NDCG@20"] == pytest.approx(
        history[best]["NDCG@20"], abs=1e-6
    )
    plain_history = json.loads(
        (tmp_path / "plain" / "sasrec" / "history.json").read_text()
    )
    assert [h["NDCG@20"] for h in history] != [h["NDCG@20"] for h in plain_history]
    assert plain_results["valid"] != results["valid"]
    # A recorded field only when set: runs before it had none.
    assert "ema_momentum" not in config_record(config)
    for bad in (1.0, -0.5, "0.9", True):
        with pytest.raises(ValueError, match="`ema_momentum` must be a float"):
            _config(ema_momentum=bad)
    with pytest.raises(ValueError, match="`ema_momentum`.*distribution='mirrored'"):
        _config(ema_momentum=0.9, distribution="mirrored")


def test_weight_averaging_reaches_both_stages(data, tmp_path):
    config = _config(pretrain_epochs=1, finetune_epochs=1, ema_momentum=0.5)
    runs = two_stage(data, config, tmp_path, verbose=0)
    for name in ("sasrec", "fame"):
        optimizer = runs[name][0].optimizer
        assert optimizer.use_ema and optimizer.ema_momentum == 0.5
        stage = json.loads((tmp_path / name / "stage.json").read_text())
        assert stage["ema_momentum"] == 0.5


class _FirstStep(keras.callbacks.Callback):
    """The trainable weights at the start and after the first step."""

    def _weights(self):
        return [keras.ops.convert_to_numpy(v) for v in self.model.trainable_variables]

    def on_train_begin(self, logs=None):
        self.start = self._weights()

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            self.first = self._weights()


def test_weight_decay_shrinks_kernels_and_embeddings_only(data, tmp_path):
    # Decoupled decay: Adam's step does not depend on the weight, so one step
    # with decay differs from one without by -learning_rate * decay * w.
    decay = 3.0
    config = _config(pretrain_epochs=1, patience=None)
    plain, decayed = _FirstStep(), _FirstStep()
    train_sasrec(data, config, tmp_path / "plain", verbose=0, callbacks=[plain])
    config = dataclasses.replace(config, weight_decay=decay)
    model, _ = train_sasrec(
        data, config, tmp_path / "decayed", verbose=0, callbacks=[decayed]
    )
    assert model.optimizer.weight_decay == decay
    names = [v.name for v in model.trainable_variables]
    kept = 0
    for i, (name, start) in enumerate(zip(names, plain.start, strict=True)):
        np.testing.assert_array_equal(decayed.start[i], start)
        # Biases (`bias`, `query_bias`, ...) and LayerNorm weights are kept.
        shrink = 0.0 if any(n in name for n in ("bias", "gamma", "beta")) else decay
        kept += not shrink
        expected = plain.first[i] - config.learning_rate * shrink * start
        np.testing.assert_allclose(decayed.first[i], expected, atol=1e-6)
        if shrink:
            assert not np.allclose(decayed.first[i], plain.first[i]), name
    assert 0 < kept < len(names)


def test_loss_and_decay_options_reach_both_stages(data, tmp_path):
    for name in ("weight_decay", "label_smoothing", "loss_excludes_history"):
        assert name not in config_record(_config())
    config = _config(
        pretrain_epochs=1,
        finetune_epochs=1,
        label_smoothing=0.1,
        weight_decay=0.01,
        loss_excludes_history=True,
    )
    runs = two_stage(data, config, tmp_path, verbose=0)
    for name in ("sasrec", "fame"):
        model = runs[name][0]
        assert model.label_smoothing == 0.1
        assert model.loss_excludes_history is True
        assert model.optimizer.weight_decay == 0.01
        stage = json.loads((tmp_path / name / "stage.json").read_text())
        assert stage["label_smoothing"] == 0.1 and stage["weight_decay"] == 0.01
        assert stage["loss_excludes_history"] is True
    with pytest.raises(ValueError, match="`label_smoothing` needs softmax='full'"):
        _config(label_smoothing=0.1, softmax="sampled")
    with pytest.raises(ValueError, match="`loss_excludes_history` needs softmax"):
        _config(loss_excludes_history=True, softmax="sampled")


class _AverageRecorder(keras.callbacks.Callback):
    """Raw and averaged weights when training starts and after every step."""

    def _state(self):
        optimizer = self.model.optimizer
        return [
            [keras.ops.convert_to_numpy(v) for v in variables]
            for variables in (
                optimizer._trainable_variables,
                optimizer._model_variables_moving_average,
            )
        ]

    def on_train_begin(self, logs=None):
        self.start, self.steps = self._state(), []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(self._state())


def test_interrupted_averaged_training_resumes_its_averages(data, tmp_path):
    config = _config(pretrain_epochs=3, patience=None, ema_momentum=0.8)
    first, second = _AverageRecorder(), _AverageRecorder()
    with pytest.raises(KeyboardInterrupt):
        train_sasrec(
            data, config, tmp_path, verbose=0, callbacks=[first, _Interrupt(1, 4)]
        )
    train_sasrec(data, config, tmp_path, verbose=0, callbacks=[second])

    def same(a, b):
        return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))

    # The rerun starts from the checkpoint of both the weights and their
    # averages of one step of the interrupted epoch (the step before the
    # interruption: backup_every=2), not from fresh averages.
    raw, averages = second.start
    steps = [i for i, (r, a) in enumerate(first.steps) if same(r, raw)]
    assert len(steps) == 1 and steps[0] >= 5
    assert same(first.steps[steps[0]][1], averages)
    assert not same(raw, averages)


def test_interrupted_training_resumes(data, tmp_path):
    config = _config(pretrain_epochs=4, patience=10)
    with pytest.raises(KeyboardInterrupt):
        train_sasrec(data, config, tmp_path, verbose=0, callbacks=[_Interrupt(2, 3)])
    stage = tmp_path / "sasrec"
    states = list((stage / "checkpoint").glob("state-*.npz"))
    assert len(states) == 1  # the newest checkpoint only
    assert not (stage / "model.keras").exists()

    _, results = train_sasrec(data, config, tmp_path, verbose=0)
    history = json.loads((stage / "history.json").read_text())
    # Evaluations of epochs 0 and 1 are kept; the run continued at epoch 2.
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    assert results["epochs_run"] == 4
    assert not (stage / "checkpoint").exists()  # deleted once finished
    best = max(history, key=lambda h: h["NDCG@20"])
    assert results["best_epoch"] == best["epoch"] + 1
    assert results["valid"]["NDCG@20"] == pytest.approx(best["NDCG@20"], abs=1e-6)


def test_a_stage_refuses_another_configuration(data, tmp_path):
    config = _config(pretrain_epochs=1)
    train_sasrec(data, config, tmp_path, verbose=0)
    path = tmp_path / "sasrec" / "stage.json"
    assert json.loads(path.read_text())["epochs"] == 1
    other = dataclasses.replace(config, learning_rate=5e-4)
    with pytest.raises(ValueError, match=r"differs in \['learning_rate'\]"):
        train_sasrec(data, other, tmp_path, verbose=0)
    with pytest.raises(ValueError, match=r"differs in \['epochs'\]"):
        train_sasrec(data, dataclasses.replace(config, pretrain_epochs=2), tmp_path)
    # Fields only FAME's stage reads do not bind the SASRec stage.
    fame_only = dataclasses.replace(config, num_experts=7, finetune_learning_rate=None)
    assert train_sasrec(data, fame_only, tmp_path, verbose=0)[1]["epochs_run"] == 1
    # A finished stage without its stage.json cannot be checked: refused.
    path.unlink()
    with pytest.raises(ValueError, match=r"no stage\.json.*delete"):
        train_sasrec(data, other, tmp_path, verbose=0)


def test_activation_reaches_both_stages(data, tmp_path):
    config = _config(pretrain_epochs=1, finetune_epochs=1, activation="relu")
    runs = two_stage(data, config, tmp_path, verbose=0)
    sasrec, fame = runs["sasrec"][0], runs["fame"][0]
    relu = keras.activations.get("relu")
    assert [block.ffn_inner.activation for block in sasrec.blocks] == [relu] * 2
    assert [block.ffn_inner.activation for block in fame.blocks] == [relu]
    assert sasrec.activation == fame.activation == "relu"
    assert config_record(config)["activation"] == "relu"
    # The default (GELU) is what runs made before the field existed used.
    assert "activation" not in config_record(_config())
    assert config_from_record(config_record(_config())).activation == "gelu"
    with pytest.raises(
        ValueError, match=r"`activation` must be one of \('gelu', 'relu'\)"
    ):
        _config(activation="tanh")
