import dataclasses
import json

import keras
import numpy as np
import pytest

from keras_fame.models import FAME, SASRec
from keras_fame.training import (
    LATER_FIELDS,
    TrainConfig,
    config_choices,
    config_from_record,
    config_help,
    config_record,
    evaluate_splits,
    fit_stage,
    parse_rate_or_none,
    run_stage,
    train_fame,
    train_sasrec,
    two_stage,
)
from tests.reference import dropout_rates, small_recipe_data


@pytest.fixture(scope="module")
def data():
    return small_recipe_data()


def _config(**overrides):
    base = dict(
        hidden_dim=16,
        num_heads=2,
        num_experts=2,
        max_len=16,
        dropout=0.1,
        batch_size=32,
        pretrain_epochs=3,
        finetune_epochs=2,
        patience=5,
        backup_every=2,
        eval_batch_size=128,
        seed=7,
        prefixes=False,  # one row per user: fewer steps; prefixes tested below
    )
    base.update(overrides)
    return TrainConfig(**base)


class _Interrupt(keras.callbacks.Callback):
    """Simulates a crash in the middle of epoch `epoch` (0-based)."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at = (epoch, batch)
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise KeyboardInterrupt("simulated interruption")


def test_two_stage_runs_and_reports(data, tmp_path):
    runs = two_stage(data, _config(), tmp_path, verbose=0)
    sasrec, sasrec_results = runs["sasrec"]
    fame, fame_results = runs["fame"]
    assert isinstance(sasrec, SASRec) and isinstance(fame, FAME)
    for results in (sasrec_results, fame_results):
        assert set(results["test"]) >= {
            "HR@5",
            "HR@10",
            "HR@20",
            "NDCG@5",
            "NDCG@10",
            "NDCG@20",
        }
        assert results["test"]["users"] == data.num_users
        assert 1 <= results["best_epoch"] <= results["epochs_run"]
    # The stored best model reproduces the reported test metrics.
    from keras_fame.evaluation import evaluate_ranking

    reloaded = keras.saving.load_model(tmp_path / "fame" / "model.keras")
    again = evaluate_ranking(reloaded, data.eval_dataset("test", 128, 16))
    assert again["NDCG@10"] == pytest.approx(fame_results["test"]["NDCG@10"], abs=1e-6)
    # A finished run is loaded, not retrained.
    rerun = two_stage(data, _config(), tmp_path, verbose=0)
    assert rerun["fame"][1] == fame_results
    with pytest.raises(ValueError, match="another configuration"):
        two_stage(data, _config(num_experts=3), tmp_path, verbose=0)


def test_same_seed_same_metrics(data, tmp_path):
    config = _config(pretrain_epochs=2)
    _, first = train_sasrec(data, config, tmp_path / "a", verbose=0)
    _, second = train_sasrec(data, config, tmp_path / "b", verbose=0)
    assert first["test"] == second["test"]
    assert first["valid"] == second["valid"]
    # Streaming the item table in chunks changes nothing but memory.
    chunked = dataclasses.replace(config, eval_item_chunk_size=7)
    _, third = train_sasrec(data, chunked, tmp_path / "c", verbose=0)
    assert third["test"] == first["test"]
    assert third["valid"] == first["valid"]


def _ndcg_by_hand(model, data, max_len, k, split="test"):
    """Mean NDCG@k over the users of `split`: the target's rank among the
    items not in the history (ties counted against it), 0 if it was seen."""
    end = -1 if split == "test" else -2
    ids = np.zeros((len(data.sequences), max_len), "int32")
    for row, sequence in enumerate(data.sequences):
        recent = list(sequence[:end])[-max_len:]
        ids[row, max_len - len(recent) :] = recent
    all_scores = keras.ops.convert_to_numpy(model.score(ids))
    total = 0.0
    for scores, sequence in zip(all_scores, data.sequences, strict=True):
        history, target = list(sequence[:end]), sequence[end]
        if target in history:
            continue
        others = [v for v in range(1, data.num_items + 1) if v not in history]
        rank = 1 + sum(scores[v] >= scores[target] for v in others if v != target)
        total += 1.0 / np.log2(rank + 1) if rank <= k else 0.0
    return total / len(data.sequences)


def test_sampled_softmax_recipe_sets_item_popularity(data, tmp_path):
    config = _config(
        pretrain_epochs=2, softmax="sampled", negatives="mixed", num_negatives=8
    )
    model, results = train_sasrec(data, config, tmp_path, verbose=0)
    # The training targets, counted from the sequences: each user's items
    # after the first, but the two held out for validation and test.
    expected = np.concatenate([s[1:-2] for s in data.sequences])
    counts = np.bincount(expected, minlength=data.num_items + 1)
    prior = keras.ops.convert_to_numpy(model.item_log_prior)
    seen = counts > 0
    seen[0] = False
    np.testing.assert_allclose(
        np.exp(prior[seen]), counts[seen] / counts[1:].sum(), rtol=1e-4
    )
    # The stage's test NDCG@20 is that of the returned model, ranked by hand.
    assert results["test"]["NDCG@20"] == pytest.approx(
        _ndcg_by_hand(model, data, config.max_len, 20), abs=1e-6
    )
    # The warm-started FAME keeps the loss and the popularity.
    runs = two_stage(
        data, dataclasses.replace(config, finetune_epochs=1), tmp_path, verbose=0
    )
    fame = runs["fame"][0]
    assert (fame.softmax, fame.negatives) == ("sampled", "mixed")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(fame.item_log_prior), prior)


def test_run_stage_trains_once_then_reloads(data, tmp_path):
    config = _config(pretrain_epochs=1)
    built = []

    def build():
        built.append(True)
        return SASRec(data.num_items, **config.model_kwargs())

    model, results = run_stage("custom", build, data, config, tmp_path, 1, verbose=0)
    folder = tmp_path / "custom"
    assert {"results.json", "model.keras", "stage.json"} <= {
        p.name for p in folder.iterdir()
    }
    assert (results["epochs_run"], results["best_epoch"]) == (1, 1)
    for split in ("valid", "test"):
        assert results[split]["NDCG@20"] == pytest.approx(
            _ndcg_by_hand(model, data, config.max_len, 20, split), abs=1e-6
        )
    # evaluate_splits: the same metrics of the same model, both splits.
    again = evaluate_splits(model, data, config)
    assert set(again) == {"valid", "test"}
    for split in again:
        assert again[split] == pytest.approx(results[split], abs=1e-6)
    # Finished: a rerun loads the model and the results, building nothing.
    reloaded, same = run_stage("custom", build, data, config, tmp_path, 1, verbose=0)
    assert len(built) == 1 and same == results
    ids = np.array([[0, 0, 3, 4, 5]])
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(reloaded.score(ids)),
        keras.ops.convert_to_numpy(model.score(ids)),
        atol=1e-6,
    )


def test_fit_stage_keeps_the_best_epochs_weights(data, tmp_path):
    config = _config()
    model = SASRec(data.num_items, **config.model_kwargs())
    summary = fit_stage(model, data, config, tmp_path / "stage", epochs=2, verbose=0)
    assert summary["epochs_run"] == 2 and len(summary["history"]) == 2
    best = summary["best_epoch"]
    scores = [h["NDCG@20"] for h in summary["history"]]
    assert scores[best - 1] == max(scores)
    # The model holds the best epoch's weights: its validation NDCG is it.
    assert _ndcg_by_hand(model, data, config.max_len, 20, "valid") == pytest.approx(
        scores[best - 1], abs=1e-6
    )


def test_prefix_sampling_feeds_every_target_once(data, tmp_path):
    from keras_fame.training import _train_pipeline

    config = _config(pretrain_epochs=1, prefixes=True)
    targets = [y for _, y in _train_pipeline(data, config).epoch(0).as_numpy_iterator()]
    assert all(y.ndim == 1 for y in targets)  # one target per row
    expected = np.concatenate([s[1:-2] for s in data.sequences if len(s) >= 4])
    np.testing.assert_array_equal(np.sort(np.concatenate(targets)), np.sort(expected))
    prefixed_model, prefixed = train_sasrec(
        data, config, tmp_path / "prefixes", verbose=0
    )
    plain = dataclasses.replace(config, prefixes=False)
    rows_model, rows = train_sasrec(data, plain, tmp_path / "rows", verbose=0)
    assert prefixed["epochs_run"] == rows["epochs_run"] == 1
    # The stages trained on those pipelines: one step per batch of 32
    # targets (prefixes) or of 32 users (rows).
    batches = -(-len(expected) // config.batch_size)
    assert int(prefixed_model.optimizer.iterations) == batches
    assert int(rows_model.optimizer.iterations) == -(-data.num_users // 32)
    assert batches > data.num_users // 32 + 1


def test_empty_prefix_adds_each_first_item_as_a_target(data):
    from keras_fame.training import _train_pipeline, target_counts

    config = _config(prefixes=True, empty_prefix=True)
    targets = [y for _, y in _train_pipeline(data, config).epoch(0).as_numpy_iterator()]
    expected = np.concatenate([s[:-2] for s in data.sequences if len(s) >= 3])
    np.testing.assert_array_equal(np.sort(np.concatenate(targets)), np.sort(expected))
    counts = target_counts(data, config)
    np.testing.assert_array_equal(
        counts, np.bincount(expected, minlength=data.num_items + 1)
    )
    assert "empty_prefix" not in config_record(_config(prefixes=True))
    assert config_record(config)["empty_prefix"] is True
    with pytest.raises(ValueError, match=r"`empty_prefix=True`.*needs `prefixes"):
        _config(prefixes=False, empty_prefix=True)


def test_work_folders_of_earlier_versions_stay_valid_and_apart(data, tmp_path):
    # A folder written before a field existed holds no entry for it: the
    # field's implied value matches it, any other value does not.
    old = dict(prefixes=False, finetune_learning_rate=None, finetune_dropout=None)
    earlier = config_record(_config(**old))
    assert not set(LATER_FIELDS) & set(earlier)
    assert config_record(_config(prefixes=True))["prefixes"] is True
    assert config_from_record(earlier) == _config(**old)
    assert config_from_record(config_record(_config(prefixes=True))).prefixes
    (tmp_path / "config.json").write_text(json.dumps(earlier))
    with pytest.raises(ValueError, match=r"differs in \['prefixes'\]"):
        two_stage(data, _config(**{**old, "prefixes": True}), tmp_path, verbose=0)
    # Today's defaults differ from such a folder: it is not reused.
    with pytest.raises(
        ValueError, match=r"differs in \['finetune_dropout', 'finetune_learning_rate'\]"
    ):
        two_stage(data, _config(prefixes=False), tmp_path, verbose=0)


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


@pytest.mark.parametrize(
    "field, bad, message",
    [
        ("hidden_dim", 0, "`hidden_dim` must be a positive integer"),
        ("num_experts", 2.0, "`num_experts` must be a positive integer"),
        ("num_blocks", True, "`num_blocks` must be a positive integer"),
        ("pretrain_epochs", -1, "`pretrain_epochs` must be a positive integer"),
        ("backup_every", 0, "`backup_every` must be a positive integer"),
        ("eval_item_chunk_size", 0, "`eval_item_chunk_size` must be a positive"),
        ("patience", -1, "`patience` must be a non-negative integer or None"),
        ("seed", "0", "`seed` must be a non-negative integer"),
        ("dropout", 1.0, r"`dropout` must be a float in \[0, 1\)"),
        ("attention_dropout", -0.1, "`attention_dropout` must be a float"),
        ("expert_init", "pretraned", r"`expert_init` must be one of \('random'"),
        ("facet_init", "eye", "`facet_init` must be one of"),
        ("softmax", "sample", "`softmax` must be one of"),
        ("negatives", "inbatch", "`negatives` must be one of"),
        ("distribution", "mirror", "`distribution` must be one of"),
        ("position_anchor", "left", "`position_anchor` must be one of"),
        ("prefixes", "no", "`prefixes` must be True or False"),
        ("windows", True, r"`prefixes` and `windows` exclude each other"),
        ("num_heads", 3, "`hidden_dim` must be divisible by `num_heads`"),
        ("label_smoothing", 1.0, r"`label_smoothing` must be a float in \[0, 1\)"),
        (
            "loss_excludes_history",
            "yes",
            "`loss_excludes_history` must be True or False",
        ),
        ("weight_decay", -0.1, "`weight_decay` must be a finite number >= 0"),
        ("weight_decay", float("inf"), "`weight_decay` must be a finite number"),
        ("weight_decay", "0.1", "`weight_decay` must be a finite number >= 0"),
        ("expert_noise", -0.01, "`expert_noise` must be a finite number >= 0"),
        ("attention_residual", 1, "`attention_residual` must be True or False"),
        (
            "routing_loss_weight",
            -0.1,
            "`routing_loss_weight` must be a finite number >= 0",
        ),
    ],
)
def test_config_rejects_bad_fields_at_once(field, bad, message):
    # A typo in a field only FAME's stage reads must not wait for SASRec's
    # pretraining to fail: the config is checked when it is made.
    others = {"prefixes": True} if field == "windows" else {}  # _config's: False
    with pytest.raises(ValueError, match=message) as info:
        _config(**{field: bad}, **others)
    assert f"{field}={bad!r}" in str(info.value)


def test_config_accepts_its_edge_values():
    config = _config(
        patience=None, eval_item_chunk_size=7, attention_dropout=0.0, dropout=0.0
    )
    assert config.patience is None and config.eval_item_chunk_size == 7
    _config(patience=0, windows=True, prefixes=False, seed=0)
    for name, choices in config_choices().items():
        for choice in choices:
            assert getattr(_config(**{name: choice}), name) == choice
    # The models accept what the config accepts.
    FAME.from_sasrec(
        SASRec(20, max_len=8, hidden_dim=8, num_heads=2),
        num_experts=2,
        expert_init=config_choices()["expert_init"][0],
        facet_init=config_choices()["facet_init"][0],
    )


def test_config_stores_numpy_integers_as_python_ints():
    # e.g. sizes read off an array (`ids.max()`) or a NumPy grid.
    config = _config(
        hidden_dim=np.int64(8),
        num_heads=np.int32(2),
        patience=np.int64(3),
        seed=np.uint8(7),
        eval_item_chunk_size=np.int64(5),
    )
    for name, value in (
        ("hidden_dim", 8),
        ("num_heads", 2),
        ("patience", 3),
        ("seed", 7),
        ("eval_item_chunk_size", 5),
    ):
        assert type(getattr(config, name)) is int and getattr(config, name) == value
    json.dumps(dataclasses.asdict(config))  # a record can be written


def test_config_stores_numpy_string_choices_as_python_strings():
    config = _config(softmax=np.str_("sampled"), expert_init=np.str_("random"))
    assert type(config.softmax) is str and config.softmax == "sampled"
    assert type(config.expert_init) is str and config.expert_init == "random"
    with pytest.raises(ValueError, match=r"`softmax` must be one of.*softmax=None"):
        _config(softmax=None)


def test_config_help_documents_every_field():
    docs = config_help()
    names = [field.name for field in dataclasses.fields(TrainConfig)]
    assert sorted(docs) == sorted(names)
    assert all(len(docs[name].split()) >= 3 for name in names)
    assert docs["num_experts"] == "FAME's experts per head."
    assert docs["finetune_dropout"].startswith("dropout rate (residual branches")
    assert docs["finetune_dropout"].endswith("as in the paper.")


def test_experimental_fields_are_marked_and_off_by_default():
    from keras_fame.config import EXPERIMENTAL_FIELDS

    docs = config_help()
    marked = {name for name, text in docs.items() if text.startswith("Experimental:")}
    assert marked == set(EXPERIMENTAL_FIELDS) and len(EXPERIMENTAL_FIELDS) == 10
    # Off, or the paper's behaviour, by default.
    defaults = TrainConfig()
    assert defaults.attention_dropout is None and defaults.ema_momentum is None
    assert defaults.routing_loss_weight == 0 and defaults.weight_decay == 0
    assert defaults.label_smoothing == 0 and not defaults.loss_excludes_history
    assert not defaults.empty_prefix and defaults.position_anchor == "end"
    # The docstring describes behaviour, not measurements.
    for word in ("README", "Benchmarks", "TABLE2", "%"):
        assert word not in TrainConfig.__doc__, word


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


def test_parse_rate_or_none():
    assert parse_rate_or_none("0.3") == 0.3
    assert parse_rate_or_none("0") == 0.0
    assert parse_rate_or_none(" None ") is None
    for bad in ("high", "1.0", "-0.1", "nan", ""):
        with pytest.raises(ValueError, match=r"must be a rate in \[0, 1\) or none"):
            parse_rate_or_none(bad)


def test_concurrent_writers_of_one_json_file_both_succeed(tmp_path, monkeypatch):
    # The workers of a multi-worker cluster claim the same config.json at the
    # same time. Here a second writer finishes between the first one's write
    # and its rename; with one shared temporary name the first rename found
    # its file gone (that worker died and the cluster hung).
    from keras_fame import training

    path = tmp_path / "config.json"
    rename = training.os.replace
    calls = []

    def replace_after_another_writer(src, dst):
        calls.append(src)
        if len(calls) == 1:
            training._write_json(path, {"writer": 2})
        rename(src, dst)

    monkeypatch.setattr(training.os, "replace", replace_after_another_writer)
    training._write_json(path, {"writer": 1})
    assert len(calls) == 2 and calls[0] != calls[1]
    assert json.loads(path.read_text()) == {"writer": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]
