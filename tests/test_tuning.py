"""The KerasTuner search of heads and experts (`tuning/`), on tiny synthetic data.

One module-scoped run of the paper protocol through the command line
(heads 1, 2 and 3 -> 3 is excluded for d=16; experts 2) serves most tests;
the others build models without training or run a 1-epoch SASRec search.
"""

import json
import math

import keras_tuner
import numpy as np
import pytest

import keras_fame.datasets
from keras_fame.evaluation import evaluate_ranking
from keras_fame.training import TrainConfig
from tests.reference import dropout_rates
from tuning import (
    OBJECTIVE,
    ConfigListSearch,
    FAMEHyperModel,
    SASRecCache,
    SearchSpace,
    make_tuner,
    run_paper_protocol,
    trial_rows,
)
from tuning.search import build_parser, main

TINY = dict(num_users=300, num_items=80, seed=0)
TRAIN = dict(max_len=20, batch_size=128, eval_batch_size=512, patience=2)


@pytest.fixture(scope="module")
def data():
    return keras_fame.datasets.load("synthetic", **TINY)


@pytest.fixture(scope="module")
def protocol(tmp_path_factory):
    """`python tuning/search.py --protocol paper ...` on the tiny data."""
    directory = tmp_path_factory.mktemp("paper")
    argv = [
        "--protocol", "paper", "--dataset", "synthetic",
        "--dataset-option", "num_users=300", "--dataset-option", "num_items=80",
        "--dataset-option", "seed=0",
        "--heads", "1,2,3", "--experts", "2", "--hidden-dims", "16",
        "--num-blocks", "1", "--epochs", "1", "--max-len", "20",
        "--batch-size", "128", "--eval-batch-size", "512", "--patience", "2",
        "--directory", str(directory), "--verbose", "0",
    ]  # fmt: skip
    result = main(argv)
    return directory, argv, result


def _eval(model, data, split):
    return evaluate_ranking(model, data.eval_dataset(split, 512, 20))


# ------------------------------------------------------------- the protocol


def test_protocol_trials_carry_the_requested_hyperparameters(protocol):
    _, _, result = protocol
    heads = [r for r in result["rows"] if r["phase"] == "heads"]
    experts = [r for r in result["rows"] if r["phase"] == "experts"]
    # H=3 does not divide d=16: excluded, never run.
    assert sorted((r["model"], r["num_heads"]) for r in heads) == [
        ("fame", 1), ("fame", 2), ("sasrec", 1), ("sasrec", 2)
    ]  # fmt: skip
    for row in heads + experts:
        assert row["status"] == "COMPLETED"
        assert (row["hidden_dim"], row["num_blocks"]) == (16, 1)
        assert (row["dropout"], row["learning_rate"]) == (0.5, 1e-3)
    assert [r["num_experts"] for r in heads] == [None, 1, None, 1]  # SASRec, FAME
    best_h = result["best_heads"]["num_heads"]
    fame_n1 = [r for r in heads if r["model"] == "fame"]
    assert result["best_heads"]["val_NDCG@20"] == max(r["val_NDCG@20"] for r in fame_n1)
    assert [(r["model"], r["num_heads"], r["num_experts"]) for r in experts] == [
        ("fame", best_h, 2)
    ]


def test_protocol_objective_is_the_full_ranking_ndcg(protocol, data):
    _, _, result = protocol
    heads_tuner, experts_tuner = result["tuners"]
    assert heads_tuner.oracle.objective.name == "val_NDCG@20"
    assert heads_tuner.oracle.objective.direction == "max"
    # Trial scores against a direct evaluation of the trials' saved weights:
    # a SASRec served from the pretraining cache, a fine-tuned FAME (N=1),
    # and the experts phase's FAME.
    trials = list(heads_tuner.oracle.trials.values())[:2]
    trials = [(heads_tuner, t) for t in trials] + [
        (experts_tuner, t) for t in experts_tuner.oracle.trials.values()
    ]
    assert [t.hyperparameters.values["model"] for _, t in trials] == [
        "sasrec",
        "fame",
        "fame",
    ]
    for tuner, trial in trials:
        model = tuner.load_model(trial)
        valid = _eval(model, data, "valid")
        assert trial.score == pytest.approx(valid["NDCG@20"], abs=1e-6)
        assert trial.metrics.get_last_value("val_HR@20") == pytest.approx(
            valid["HR@20"], abs=1e-6
        )
    test = _eval(model, data, "test")
    assert trial.metrics.get_last_value("test_NDCG@20") == pytest.approx(
        test["NDCG@20"], abs=1e-6
    )


def test_protocol_pretrains_sasrec_once_per_key(protocol):
    directory, _, result = protocol
    heads_model, experts_model = result["hypermodels"]
    cache = heads_model.cache
    assert experts_model.cache is cache
    # Two backbones (H=1, H=2), each pretrained once; the SASRec trials and
    # every FAME warm start load it.
    assert len(cache.trained) == 2 and len(set(cache.trained)) == 2
    best_h = result["best_heads"]["num_heads"]
    best_key = next(key for key in cache.trained if f"-H{best_h}-" in key)
    assert sorted(cache.loaded) == sorted([*cache.trained, best_key])
    sasrec_rows = [r for r in result["rows"] if r["model"] == "sasrec"]
    assert [r["pretrain_reused"] for r in sasrec_rows] == [1.0, 1.0]
    assert sorted(p.name for p in (directory / "sasrec_cache").iterdir()) == sorted(
        cache.trained
    )


def test_protocol_writes_summary_table_and_plots(protocol):
    directory, _, result = protocol
    summary = json.loads((directory / "summary.json").read_text())
    assert summary["objective"] == "val_NDCG@20"
    assert len(summary["trials"]) == 5
    assert summary["best"]["val_NDCG@20"] == max(
        r["val_NDCG@20"] for r in summary["trials"]
    )
    markdown = (directory / "summary.md").read_text()
    assert "Best configuration" in markdown and "(16, 3)" in markdown
    assert markdown.count("| heads |") == 4 and markdown.count("| experts |") == 1
    csv_lines = (directory / "trials.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 6 and "val_NDCG@20" in csv_lines[0]
    for name in ("heads.png", "experts.png"):
        png = (directory / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) < 200_000


def test_protocol_resumes_without_redoing_trials(protocol, capsys):
    directory, argv, first = protocol
    again = main(argv)
    capsys.readouterr()
    for hypermodel in again["hypermodels"]:
        assert hypermodel.fits == 0
    assert again["hypermodels"][0].cache.trained == []
    assert [r["val_NDCG@20"] for r in again["rows"]] == [
        r["val_NDCG@20"] for r in first["rows"]
    ]
    with pytest.raises(ValueError, match="another dataset"):
        other = keras_fame.datasets.load("synthetic", num_users=200, num_items=80)
        run_paper_protocol(other, directory, epochs=1)
    # --summary-only rewrites the summary from the finished trials alone.
    (directory / "summary.md").unlink()
    summary = main([*argv, "--summary-only"])
    capsys.readouterr()
    assert all(h.fits == 0 for h in summary["hypermodels"])
    assert (directory / "summary.md").exists()
    assert [r["val_NDCG@20"] for r in summary["rows"]] == [
        r["val_NDCG@20"] for r in first["rows"]
    ]


# ------------------------------------------------------------------- space


def test_space_excludes_non_dividing_heads():
    space = SearchSpace(
        models=("sasrec", "fame"), heads=(2, 3, 8), experts=(2,), hidden_dims=(8, 12)
    )
    assert space.excluded() == [(8, 3), (12, 8)]
    grid = space.grid()
    assert {(c["hidden_dim"], c["num_heads"]) for c in grid} == {
        (8, 2),
        (8, 8),
        (12, 2),
        (12, 3),
    }
    assert all(c["hidden_dim"] % c["num_heads"] == 0 for c in grid)
    assert SearchSpace(heads=(1, 2, 3, 32), hidden_dims=(16,)).valid_heads() == (1, 2)


def test_space_errors_name_the_argument():
    with pytest.raises(ValueError, match="`heads`"):
        SearchSpace(heads=(0, 2))
    with pytest.raises(ValueError, match="`models`"):
        SearchSpace(models=("bert4rec",))
    with pytest.raises(ValueError, match="`dropouts`"):
        SearchSpace(dropouts=(1.5,))
    with pytest.raises(ValueError, match="No head count divides"):
        SearchSpace(heads=(3,), hidden_dims=(16,))


def test_build_declares_space_and_excludes_bad_pairs(data, tmp_path):
    space = SearchSpace(
        models=("sasrec", "fame"), heads=(2, 3), experts=(1, 4), hidden_dims=(8, 12)
    )
    hypermodel = FAMEHyperModel(data, space, tmp_path, epochs=1, **TRAIN)
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)  # defaults: a valid pair
    assert hp.values == {
        "model": "sasrec", "hidden_dim": 8, "num_blocks": 2, "num_heads": 2,
        "dropout": 0.5, "learning_rate": 1e-3,
    }  # fmt: skip
    assert model.num_heads == 2 and model.hidden_dim == 8
    hp.values.update(model="fame", hidden_dim=12, num_heads=3, num_experts=4)
    model = hypermodel.build(hp)
    assert (model.num_experts, model.num_heads, model.hidden_dim) == (4, 3, 12)
    # A warm-started FAME fine-tunes at TrainConfig's fine-tuning rate.
    assert math.isclose(_rate(model), 1e-4, rel_tol=1e-6)
    hp.values.update(hidden_dim=8, num_heads=3)
    with pytest.raises(keras_tuner.errors.FailedTrialError, match="divisible"):
        hypermodel.build(hp)
    assert hypermodel.builds == 2 and hypermodel.cache.trained == []


def _rate(model):
    return float(np.asarray(model.optimizer.learning_rate))


def test_finetune_learning_rate_is_for_warm_started_fame_only(data, tmp_path):
    space = SearchSpace(
        models=("sasrec", "fame"), hidden_dims=(8,), learning_rates=(2e-3,)
    )
    hp = keras_tuner.HyperParameters()
    rates = {}
    for label, options in (
        ("3e-4", dict(finetune_learning_rate=3e-4)),
        ("single", dict(finetune_learning_rate=None)),
        ("scratch", dict(finetune_learning_rate=3e-4, warm_start=False)),
    ):
        hypermodel = FAMEHyperModel(data, space, tmp_path, epochs=1, **TRAIN, **options)
        hp.values.update(model="sasrec")
        sasrec_rate = _rate(hypermodel.build(hp))
        hp.values.update(model="fame", num_experts=2)
        rates[label] = (sasrec_rate, _rate(hypermodel.build(hp)))
    for label, expected in (
        ("3e-4", (2e-3, 3e-4)), ("single", (2e-3, 2e-3)), ("scratch", (2e-3, 2e-3))
    ):  # fmt: skip
        assert rates[label] == pytest.approx(expected, rel=1e-6), label
    for bad in (0.0, -1e-4):
        with pytest.raises(ValueError, match="`finetune_learning_rate`"):
            FAMEHyperModel(data, space, tmp_path, finetune_learning_rate=bad)


def test_finetune_dropout_is_for_warm_started_fame_only(data, tmp_path, capsys):
    space = SearchSpace(models=("sasrec", "fame"), hidden_dims=(8,), dropouts=(0.4,))
    hp = keras_tuner.HyperParameters()
    rates = {}
    for label, options in (
        ("default", {}),
        ("0.1", dict(finetune_dropout=0.1)),
        ("none", dict(finetune_dropout=None)),
        ("scratch", dict(finetune_dropout=0.1, warm_start=False)),
    ):
        hypermodel = FAMEHyperModel(data, space, tmp_path, epochs=1, **TRAIN, **options)
        hp.values.update(model="sasrec")
        sasrec = dropout_rates(hypermodel.build(hp))
        hp.values.update(model="fame", num_experts=2)
        rates[label] = (sasrec, dropout_rates(hypermodel.build(hp)))
    # Every dropout of the model, attention included; TrainConfig's default 0.3.
    assert rates == {
        "default": ({0.4}, {0.3}),
        "0.1": ({0.4}, {0.1}),
        "none": ({0.4}, {0.4}),
        "scratch": ({0.4}, {0.4}),
    }
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="`finetune_dropout` must be a float"):
            FAMEHyperModel(data, space, tmp_path, finetune_dropout=bad)
    parser = build_parser()
    base = ["--dataset", "synthetic", "--directory", str(tmp_path)]
    assert parser.parse_args(base).finetune_dropout == 0.3
    assert (
        parser.parse_args([*base, "--finetune-dropout", "None"]).finetune_dropout
        is None
    )
    assert (
        parser.parse_args([*base, "--finetune-dropout", "0.2"]).finetune_dropout == 0.2
    )
    for bad in ("high", "1.5", "-0.1"):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([*base, "--finetune-dropout", bad])
        assert exit_info.value.code == 2  # argparse's usage error
        assert (
            f"argument --finetune-dropout: must be a rate in [0, 1) or none. "
            f"Received: {bad!r}" in capsys.readouterr().err
        )


def test_sasrec_cache_key_ignores_what_pretraining_does_not_read(data, tmp_path):
    def key(**fields):
        config = TrainConfig(**{**dict(max_len=20, batch_size=128), **fields})
        return SASRecCache(data, tmp_path, config).key(learning_rate=1e-3)

    # FAME's fields (a new finetune_dropout default included) keep the cached
    # SASRecs; a field pretraining reads does not.
    assert key() == key(finetune_dropout=None) == key(num_experts=8)
    assert key() == key(expert_init="random", finetune_epochs=3)
    assert key() != key(patience=3)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("ema_momentum", 0.9, "`cache` averages weights"),
        ("label_smoothing", 0.1, "`cache` trains with label_smoothing=0.1"),
        ("weight_decay", 0.01, "`cache` trains with .*weight_decay=0.01"),
        ("loss_excludes_history", True, "`cache` trains with loss_excludes_history"),
    ],
)
def test_cache_trained_differently_from_the_trials_is_refused(
    data, tmp_path, field, value, message
):
    # Trials compile a plain Adam and the plain loss; the SASRecs they
    # warm-start from must have been trained the same way.
    config = TrainConfig(**{**TRAIN, "pretrain_epochs": 1, field: value})
    cache = SASRecCache(data, tmp_path, config)
    with pytest.raises(ValueError, match=message):
        FAMEHyperModel(data, None, epochs=1, cache=cache, **TRAIN)


def test_non_dividing_trial_is_excluded_not_crashed(data, tmp_path):
    space = SearchSpace(
        models=("sasrec",), heads=(2, 8), hidden_dims=(12, 16), num_blocks=(1,)
    )
    hypermodel = FAMEHyperModel(data, space, tmp_path, epochs=1, **TRAIN)
    configs = [
        {"model": "sasrec", "hidden_dim": 12, "num_heads": 8},  # 12 % 8 != 0
        {"model": "sasrec", "hidden_dim": 16, "num_heads": 8},
    ]
    tuner = ConfigListSearch(hypermodel, configs, directory=tmp_path, project_name="p")
    tuner.search(epochs=1, verbose=0)
    rows = trial_rows(tuner)
    assert [r["status"] for r in rows] == ["FAILED", "COMPLETED"]
    assert "hidden_dim=12, num_heads=8" in rows[0]["message"]
    assert hypermodel.cache.trained == [hypermodel.cache.key(
        hidden_dim=16, num_blocks=1, num_heads=8, dropout=0.5, max_len=20,
        learning_rate=1e-3,
    )]  # fmt: skip


def test_random_search_resumes_after_an_interruption(data, tmp_path):
    """A trial cut by Ctrl-C is rerun; finished trials are not."""

    class Interrupted(FAMEHyperModel):
        def fit(self, hp, model, *args, **kwargs):
            raise KeyboardInterrupt

    space = SearchSpace(
        models=("sasrec",), heads=(2, 4), hidden_dims=(8,), num_blocks=(1,)
    )
    options = dict(epochs=1, **TRAIN)

    def tuner_for(hypermodel, max_trials):
        return make_tuner(
            "random", hypermodel, tmp_path, "random", max_trials=max_trials, seed=1
        )

    first = FAMEHyperModel(data, space, tmp_path, **options)
    tuner_for(first, 1).search(epochs=1, verbose=0)
    done = first.fits
    assert done == 1 and len(first.cache.trained) == 1
    with pytest.raises(KeyboardInterrupt):
        tuner_for(Interrupted(data, space, tmp_path, **options), 2).search(
            epochs=1, verbose=0
        )
    resumed = FAMEHyperModel(data, space, tmp_path, **options)
    tuner = tuner_for(resumed, 2)
    tuner.search(epochs=1, verbose=0)
    rows = trial_rows(tuner)
    assert resumed.fits == 1  # only the interrupted trial
    assert sorted(r["num_heads"] for r in rows) == [2, 4]
    assert all(r["status"] == "COMPLETED" for r in rows)
    assert tuner.oracle.objective.name == OBJECTIVE.name


def test_cli_help_documents_the_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--protocol", "--dataset", "--data-dir", "--tuner", "--max-trials",
        "--directory", "--heads", "--experts", "bayesian", "hyperband",
    ):  # fmt: skip
        assert option in text


def test_make_tuner_rejects_bad_arguments(data, tmp_path):
    hypermodel = FAMEHyperModel(
        data, SearchSpace(hidden_dims=(16,)), tmp_path, epochs=1
    )
    with pytest.raises(ValueError, match="`kind`"):
        make_tuner("evolution", hypermodel, tmp_path)
    with pytest.raises(ValueError, match="`max_trials`"):
        make_tuner("random", hypermodel, tmp_path, max_trials=0)
    with pytest.raises(ValueError, match="`expert_init`"):
        FAMEHyperModel(data, expert_init="copy", directory=tmp_path)
    with pytest.raises(ValueError, match="`facet_init`"):
        FAMEHyperModel(data, facet_init="eye", directory=tmp_path)
    with pytest.raises(ValueError, match="`directory`"):
        FAMEHyperModel(data)
