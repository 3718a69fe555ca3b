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
    train_sasrec,
    two_stage,
)
from tests.recipe import recipe_config as _config
from tests.reference import small_recipe_data


@pytest.fixture(scope="module")
def data():
    return small_recipe_data()


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
