"""A KerasTuner `HyperModel` for FAME and SASRec, with a pretrained-SASRec cache.

The search space (`SearchSpace`) covers the paper's two hyper-parameters,
heads `H` and experts `N` (Sec. 5.4, 5.6), and optionally the hidden size,
the number of blocks, dropout and the learning rate. The objective is the
validation NDCG@20 of the full-ranking evaluation (`OBJECTIVE`), maximised.

`FAMEHyperModel.build` only constructs and compiles the architecture (cheap:
KerasTuner also calls it to discover the space and to reload checkpoints);
`FAMEHyperModel.fit` does the work:

- FAME trials are warm-started from the pretrained SASRec with the same
  backbone (`SASRecCache`, one pretraining per key) and fine-tuned;
- SASRec trials reuse that same cached model instead of training it again
  (valid when the trial's epoch budget is the pretraining budget);
- a trial trains through the recipe's own `keras_fame.training.fit_stage`
  (its seeded pipeline, validation early stopping and best-weight restore),
  with a `TrainConfig` built from the cache's and the trial's values
  (`FAMEHyperModel.trial_config`); the tuner's own callbacks (best-epoch
  checkpoint) run after the evaluation, so they see `logs["val_NDCG@20"]`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import keras

try:
    import keras_tuner
except ImportError as e:  # an optional dependency: the `tuning` extra
    raise ImportError(
        "`tuning` needs KerasTuner: `pip install 'keras-fame[tuning]'` "
        "(or `pip install -e '.[tuning]'` in a checkout)."
    ) from e

from keras_fame.config import TrainConfig
from keras_fame.config_records import config_record
from keras_fame.evaluation import evaluate_ranking
from keras_fame.models import FAME, SASRec
from keras_fame.training import FAME_FIELDS, fit_stage, set_seed, train_sasrec

__all__ = [
    "MODELS",
    "OBJECTIVE",
    "PAPER_EXPERTS",
    "PAPER_HEADS",
    "FAMEHyperModel",
    "SASRecCache",
    "SearchSpace",
]

PAPER_HEADS = (1, 2, 4, 8, 16)
PAPER_EXPERTS = (2, 4, 8, 16, 32)
MODELS = ("fame", "sasrec")
METRIC = "NDCG@20"
OBJECTIVE = keras_tuner.Objective(f"val_{METRIC}", direction="max")

# Hyper-parameter names, in the order they are declared and tabulated.
HP_NAMES = (
    "model",
    "hidden_dim",
    "num_blocks",
    "num_heads",
    "num_experts",
    "dropout",
    "learning_rate",
)


def _as_tuple(name: str, values, kind: type) -> tuple:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        values = (values,)
    values = tuple(values)
    if not values:
        raise ValueError(f"`{name}` must hold at least one value. Received: {name}=()")
    if len(set(values)) != len(values):
        raise ValueError(f"`{name}` holds duplicates. Received: {name}={values}")
    for value in values:
        if kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
            what = "positive integers"
        elif kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            what = "numbers"
        else:
            ok = value in MODELS
            what = f"model names in {MODELS}"
        if not ok:
            raise ValueError(f"`{name}` must hold {what}. Received: {name}={values}")
    if kind is float:
        values = tuple(float(v) for v in values)
    return values


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The hyper-parameters searched, each as a tuple of candidate values.

    A tuple of one value is fixed (declared with `hp.Fixed`), a longer one is
    searched (`hp.Choice`, default = its first value). Head counts that do
    not divide the hidden size are excluded: with one hidden size they are
    dropped from the `num_heads` choice; with several, a trial that draws a
    non-dividing pair fails with `keras_tuner.errors.FailedTrialError`
    (recorded as FAILED, the search goes on), and `grid()` never lists it.

    Args:
        models: `"fame"` and/or `"sasrec"` (the baseline).
        heads: Head counts `H` (paper: 1, 2, 4, 8, 16).
        experts: Experts per head `N` for FAME (paper: 2, 4, 8, 16, 32;
            `N = 1` is FAME without MoE).
        hidden_dims: Hidden sizes `d` (paper: 64, 128).
        num_blocks: Numbers of blocks `L`.
        dropouts: Dropout rates.
        learning_rates: Adam learning rates.

    Example:
    >>> space = SearchSpace(heads=(1, 2, 3, 4), hidden_dims=(16,))
    >>> space.valid_heads()
    (1, 2, 4)
    """

    models: tuple[str, ...] = ("fame",)
    heads: tuple[int, ...] = PAPER_HEADS
    experts: tuple[int, ...] = PAPER_EXPERTS
    hidden_dims: tuple[int, ...] = (64,)
    num_blocks: tuple[int, ...] = (2,)
    dropouts: tuple[float, ...] = (0.5,)
    learning_rates: tuple[float, ...] = (1e-3,)

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "models", _as_tuple("models", self.models, str))
        for name in ("heads", "experts", "hidden_dims", "num_blocks"):
            set_(self, name, _as_tuple(name, getattr(self, name), int))
        set_(self, "dropouts", _as_tuple("dropouts", self.dropouts, float))
        for rate in self.dropouts:
            if not 0.0 <= rate < 1.0:
                raise ValueError(
                    f"`dropouts` must lie in [0, 1). Received: dropouts={self.dropouts}"
                )
        set_(
            self,
            "learning_rates",
            _as_tuple("learning_rates", self.learning_rates, float),
        )
        for rate in self.learning_rates:
            if rate <= 0:
                raise ValueError(
                    "`learning_rates` must be positive. "
                    f"Received: learning_rates={self.learning_rates}"
                )
        if not self.valid_heads():
            raise ValueError(
                "No head count divides a hidden size: every (hidden_dim, "
                f"num_heads) pair is excluded. Received: heads={self.heads}, "
                f"hidden_dims={self.hidden_dims}"
            )

    # ------------------------------------------------------------- validity

    def valid_heads(self, hidden_dim: int | None = None) -> tuple[int, ...]:
        """Head counts that divide `hidden_dim` (or at least one hidden size)."""
        dims = self.hidden_dims if hidden_dim is None else (hidden_dim,)
        return tuple(h for h in self.heads if any(d % h == 0 for d in dims))

    def excluded(self) -> list[tuple[int, int]]:
        """The `(hidden_dim, num_heads)` pairs left out (non-dividing)."""
        return [(d, h) for d in self.hidden_dims for h in self.heads if d % h]

    def grid(self) -> list[dict]:
        """Every valid combination, as hyper-parameter value dicts.

        SASRec entries carry no `num_experts`. Configurations that share a
        backbone (hidden size, blocks, heads, dropout, learning rate) are
        adjacent, models in the order of `models`, then experts, so a
        FAME trial follows the SASRec trial whose pretrained model it reuses.
        """
        configs = []
        for d, blocks, h, rate, lr in itertools.product(
            self.hidden_dims,
            self.num_blocks,
            self.heads,
            self.dropouts,
            self.learning_rates,
        ):
            if d % h:
                continue
            for model in self.models:
                for n in self.experts if model == "fame" else (None,):
                    values = {"model": model, "hidden_dim": d, "num_blocks": blocks}
                    values["num_heads"] = h
                    if n is not None:
                        values["num_experts"] = n
                    values.update(dropout=rate, learning_rate=lr)
                    configs.append(values)
        return configs

    # ---------------------------------------------------------- declaration

    def declare(self, hp: keras_tuner.HyperParameters) -> dict:
        """Declares the space on `hp` and returns this trial's values.

        Returns:
            A dict with every name of `HP_NAMES`; `num_experts` is `None`
            for SASRec.
        """
        values = {"model": _declare(hp, "model", self.models)}
        # Defaults form a valid pair, so KerasTuner's first (default) build works.
        default_dim = next(d for d in self.hidden_dims if self.valid_heads(d))
        values["hidden_dim"] = _declare(hp, "hidden_dim", self.hidden_dims, default_dim)
        values["num_blocks"] = _declare(hp, "num_blocks", self.num_blocks)
        heads = self.valid_heads()
        values["num_heads"] = _declare(
            hp, "num_heads", heads, self.valid_heads(default_dim)[0]
        )
        values["num_experts"] = None
        if "fame" in self.models:
            if len(self.models) > 1:
                with hp.conditional_scope("model", ["fame"]):
                    experts = _declare(hp, "num_experts", self.experts)
            else:
                experts = _declare(hp, "num_experts", self.experts)
            if values["model"] == "fame":
                values["num_experts"] = experts
        values["dropout"] = _declare(hp, "dropout", self.dropouts)
        values["learning_rate"] = _declare(hp, "learning_rate", self.learning_rates)
        return values


def _declare(hp, name: str, choices: Sequence, default=None):
    if len(choices) == 1:
        return hp.Fixed(name, choices[0])
    return hp.Choice(name, list(choices), default=default)


# --------------------------------------------------------------------- cache


class SASRecCache:
    """Pretrained SASRec models, trained once per backbone key and reused.

    The key is `(hidden_dim, num_blocks, num_heads, max_len, dropout,
    learning_rate)`; the other training settings (epochs, patience, batch
    size, seed) are fixed per cache and hashed into the folder name, so a
    changed budget never reuses a stale model. Each key has its own
    `train_sasrec` work directory (`directory/<key>/`), which makes an
    interrupted pretraining resume and a finished one load from
    `model.keras`.

    Args:
        dataset: The `SequenceDataset` (one cache per dataset).
        directory: Folder of the cache.
        config: The `TrainConfig` of the pretraining (its backbone fields are
            overridden per key); `pretrain_epochs`, `patience`, `batch_size`,
            `eval_batch_size`, `seed` apply to every key.
        verbose: Keras verbosity of pretraining.

    Attributes:
        trained: Keys pretrained by this object (each at most once).
        loaded: Keys served from a finished model, one entry per request.
    """

    def __init__(self, dataset, directory, config: TrainConfig, verbose: int = 0):
        self.dataset = dataset
        self.directory = Path(directory)
        self.config = config
        self.verbose = verbose
        self.trained: list[str] = []
        self.loaded: list[str] = []

    def config_for(self, **backbone) -> TrainConfig:
        """The `TrainConfig` of one key (`hidden_dim=..., num_heads=...`)."""
        if "learning_rate" not in backbone:
            raise ValueError("`learning_rate` is part of the cache key; pass it.")
        return dataclasses.replace(self.config, **backbone)

    def key(self, **backbone) -> str:
        """The folder name of one key: readable backbone + hash of the rest."""
        config = config_record(self.config_for(**backbone))
        # Fields SASRec's pretraining does not read (so that a new FAME
        # default, like finetune_dropout's, keeps the cached SASRecs).
        for unused in (*FAME_FIELDS, "finetune_epochs"):
            config.pop(unused, None)
        digest = hashlib.sha1(
            json.dumps(config, sort_keys=True, default=str).encode()
        ).hexdigest()[:8]
        c = self.config_for(**backbone)
        return (
            f"d{c.hidden_dim}-L{c.num_blocks}-H{c.num_heads}-len{c.max_len}"
            f"-p{c.dropout:g}-lr{c.learning_rate:g}-{digest}"
        )

    def get(self, **backbone) -> tuple[SASRec, dict]:
        """The pretrained SASRec of a key, training it if needed.

        Args:
            **backbone: `hidden_dim`, `num_blocks`, `num_heads`, `dropout`,
                `learning_rate` (and optionally `max_len`).

        Returns:
            `(model, results)` as `keras_fame.training.train_sasrec`.
        """
        key = self.key(**backbone)
        workdir = self.directory / key
        finished = (workdir / "sasrec" / "model.keras").exists() and (
            workdir / "sasrec" / "results.json"
        ).exists()
        if not finished and key in self.trained:
            raise RuntimeError(f"Pretrained SASRec {key} vanished from {workdir}.")
        config = self.config_for(**backbone)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(
            json.dumps(dataclasses.asdict(config), indent=2) + "\n"
        )
        model, results = train_sasrec(
            self.dataset, config, workdir, verbose=self.verbose
        )
        (self.loaded if finished else self.trained).append(key)
        return model, results


# ---------------------------------------------------------------- hypermodel


class FAMEHyperModel(keras_tuner.HyperModel):
    """KerasTuner hypermodel of FAME (warm-started) and the SASRec baseline.

    The trial's model is built by `build(hp)` (architecture + Adam) and
    trained by `fit(hp, model, ...)`, which KerasTuner calls with its own
    callbacks and, for Hyperband, `epochs` and `initial_epoch`:

    - FAME: the pretrained SASRec of the same backbone comes from `cache`
      (trained once per key), `FAME.from_sasrec` warm-starts the trial's
      model, which is then fine-tuned (a Hyperband continuation keeps the
      checkpoint KerasTuner loaded instead);
    - SASRec: when the trial's budget equals the pretraining budget (not a
      Hyperband continuation), the cached model *is* the trial's model and
      is not trained again; otherwise it is trained from scratch.

    Training runs `keras_fame.training.fit_stage` with `trial_config(values)`
    in a temporary stage folder: the evaluation runs before KerasTuner's
    callbacks, so `logs["val_NDCG@20"]` exists for them; it early-stops with
    `patience` and restores the best epoch. `fit` returns the validation
    metrics of the best epoch (`val_HR@5`, ..., `val_NDCG@20`, the
    objective), the test metrics of the restored model (`test_...`), and
    `best_epoch`, `epochs_run`, `train_seconds`; KerasTuner stores them all
    in the trial.

    Args:
        dataset: A `keras_fame.datasets.SequenceDataset`.
        space: The `SearchSpace` (default: FAME, the paper's heads/experts).
        directory: Folder of the pretrained-SASRec cache (usually the search
            directory); ignored if `cache` is given.
        epochs: Default epoch budget of a trial (`tuner.search(epochs=...)`
            and Hyperband override it).
        pretrain_epochs: Epoch budget of SASRec pretraining (default
            `epochs`).
        patience: Early-stopping patience on validation NDCG@20.
        max_len: History length.
        batch_size: Training batch size.
        eval_batch_size: Users per evaluation batch.
        expert_init: `"pretrained"` (default) or `"random"` (the paper),
            see `FAME.from_sasrec`.
        facet_init: `"identity"` (default) or `"random"` (the paper), see
            `FAME.from_sasrec`.
        prefixes: Train on one row per target (see
            `keras_fame.training.TrainConfig.prefixes`); default: the
            `TrainConfig` default.
        finetune_learning_rate: Adam's rate for warm-started FAME trials
            (see `keras_fame.training.TrainConfig.finetune_learning_rate`);
            default: the `TrainConfig` default. `None`: the trial's
            `learning_rate`, as SASRec's pretraining and FAME trained from
            scratch always use.
        finetune_dropout: Dropout rate (attention too) of warm-started FAME
            trials (see `keras_fame.training.TrainConfig.finetune_dropout`);
            default: the `TrainConfig` default. `None`: the trial's
            `dropout`, as SASRec and FAME trained from scratch always use.
        warm_start: Warm-start FAME from the pretrained SASRec (paper). If
            False, FAME trials train from scratch and nothing is pretrained.
        evaluate_test: Also report test metrics of every trial.
        seed: Seeds weights, dropout and the shuffle.
        cache: A `SASRecCache` to share between hypermodels.
        verbose: Keras verbosity of pretraining (trials use `search`'s).

    Attributes:
        builds: Number of models built (`build` calls).
        fits: Number of trials trained or served by `fit`.

    Example:

    ```python
    import keras_tuner
    from tuning import FAMEHyperModel, SearchSpace, OBJECTIVE

    hypermodel = FAMEHyperModel(data, SearchSpace(hidden_dims=(64,)), "runs/tune")
    tuner = keras_tuner.BayesianOptimization(
        hypermodel, objective=OBJECTIVE, max_trials=10, directory="runs/tune",
        project_name="bayesian")
    tuner.search(epochs=50)
    ```
    """

    def __init__(
        self,
        dataset,
        space: SearchSpace | None = None,
        directory: str | os.PathLike | None = None,
        *,
        epochs: int = 200,
        pretrain_epochs: int | None = None,
        patience: int = 10,
        max_len: int = 50,
        batch_size: int = 256,
        eval_batch_size: int = 1024,
        expert_init: str = "pretrained",
        facet_init: str = "identity",
        warm_start: bool = True,
        prefixes: bool = TrainConfig.prefixes,
        finetune_learning_rate: float | None = TrainConfig.finetune_learning_rate,
        finetune_dropout: float | None = TrainConfig.finetune_dropout,
        evaluate_test: bool = True,
        seed: int = 0,
        cache: SASRecCache | None = None,
        verbose: int = 0,
        name: str | None = None,
    ):
        super().__init__(name=name, tunable=True)
        if dataset is None or not hasattr(dataset, "num_items"):
            raise ValueError(
                "`dataset` must be a keras_fame.datasets.SequenceDataset. "
                f"Received: dataset={dataset!r}"
            )
        space = SearchSpace() if space is None else space
        if not isinstance(space, SearchSpace):
            raise ValueError(
                f"`space` must be a SearchSpace. Received: space={space!r}"
            )
        pretrain_epochs = epochs if pretrain_epochs is None else pretrain_epochs
        # TrainConfig checks every value, naming the argument.
        checked = TrainConfig(
            finetune_epochs=epochs,
            pretrain_epochs=pretrain_epochs,
            max_len=max_len,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            patience=patience,
            expert_init=expert_init,
            facet_init=facet_init,
            prefixes=prefixes,
            finetune_learning_rate=finetune_learning_rate,
            finetune_dropout=finetune_dropout,
            seed=seed,
        )
        self.dataset = dataset
        self.space = space
        self.epochs = checked.finetune_epochs
        self.pretrain_epochs = checked.pretrain_epochs
        self.patience = checked.patience
        self.max_len = checked.max_len
        self.batch_size = checked.batch_size
        self.eval_batch_size = checked.eval_batch_size
        self.expert_init = checked.expert_init
        self.facet_init = checked.facet_init
        self.warm_start = bool(warm_start)
        self.prefixes = checked.prefixes
        self.finetune_learning_rate = checked.finetune_learning_rate
        self.finetune_dropout = checked.finetune_dropout
        self.evaluate_test = bool(evaluate_test)
        self.seed = checked.seed
        self.verbose = verbose
        if cache is None:
            if directory is None:
                raise ValueError(
                    "`directory` (where pretrained SASRec models are cached) is "
                    "required when no `cache` is given. Received: directory=None"
                )
            cache = SASRecCache(
                dataset,
                Path(directory) / "sasrec_cache",
                TrainConfig(
                    max_len=self.max_len,
                    batch_size=self.batch_size,
                    eval_batch_size=self.eval_batch_size,
                    pretrain_epochs=self.pretrain_epochs,
                    patience=self.patience,
                    seed=self.seed,
                    prefixes=self.prefixes,
                ),
                verbose=verbose,
            )
        elif (
            cache.config.max_len,
            cache.config.pretrain_epochs,
            cache.config.prefixes,
        ) != (self.max_len, self.pretrain_epochs, self.prefixes):
            raise ValueError(
                "`cache` was made for max_len="
                f"{cache.config.max_len}, pretrain_epochs={cache.config.pretrain_epochs}, "
                f"prefixes={cache.config.prefixes}; received max_len={self.max_len}, "
                f"pretrain_epochs={self.pretrain_epochs}, prefixes={self.prefixes}."
            )
        elif cache.config.ema_momentum is not None:
            # Trials train without averaging; their SASRecs must too.
            raise ValueError(
                "`cache` averages weights (ema_momentum="
                f"{cache.config.ema_momentum}); the search trains without."
            )
        elif cache.config.label_smoothing or cache.config.weight_decay:
            # Likewise for the loss and the optimizer's decay.
            raise ValueError(
                "`cache` trains with label_smoothing="
                f"{cache.config.label_smoothing}, weight_decay="
                f"{cache.config.weight_decay}; the search trains without (0)."
            )
        elif cache.config.loss_excludes_history:
            raise ValueError(
                "`cache` trains with loss_excludes_history=True; the search "
                "trains with every item in the softmax (False)."
            )
        self.cache = cache
        self.builds = 0
        self.fits = 0

    # ----------------------------------------------------------------- build

    def declare_hyperparameters(self, hp: keras_tuner.HyperParameters) -> None:
        self.space.declare(hp)

    def values(self, hp: keras_tuner.HyperParameters) -> dict:
        """This trial's values (see `SearchSpace.declare`), checked.

        Raises:
            keras_tuner.errors.FailedTrialError: the hidden size is not
                divisible by the head count (the trial is excluded).
        """
        values = self.space.declare(hp)
        if values["hidden_dim"] % values["num_heads"]:
            raise keras_tuner.errors.FailedTrialError(
                "Excluded: `hidden_dim` must be divisible by `num_heads`. "
                f"Received: hidden_dim={values['hidden_dim']}, "
                f"num_heads={values['num_heads']}"
            )
        return values

    def _backbone(self, values: Mapping) -> dict:
        return {
            "hidden_dim": values["hidden_dim"],
            "num_blocks": values["num_blocks"],
            "num_heads": values["num_heads"],
            "dropout": values["dropout"],
        }

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        """Builds and compiles the trial's (untrained) FAME or SASRec."""
        values = self.values(hp)
        keras.utils.set_random_seed(self.seed)
        kwargs = dict(max_len=self.max_len, **self._backbone(values))
        kwargs["dropout"] = self.dropout(values)
        if values["model"] == "fame":
            model = FAME(
                self.dataset.num_items, num_experts=values["num_experts"], **kwargs
            )
        else:
            model = SASRec(self.dataset.num_items, **kwargs)
        model.compile(optimizer=keras.optimizers.Adam(self.learning_rate(values)))
        self.builds += 1
        return model

    def learning_rate(self, values: Mapping) -> float:
        """Adam's rate of a trial: warm-started FAME fine-tunes at
        `finetune_learning_rate` (when set), everything else trains at the
        trial's `learning_rate` (which also keys the pretrained SASRec)."""
        if (
            values["model"] == "fame"
            and self.warm_start
            and self.finetune_learning_rate is not None
        ):
            return self.finetune_learning_rate
        return values["learning_rate"]

    def dropout(self, values: Mapping) -> float:
        """Dropout rate of a trial's model, attention included: warm-started
        FAME fine-tunes at `finetune_dropout` (when set), everything else at
        the trial's `dropout` (which also keys the pretrained SASRec)."""
        if (
            values["model"] == "fame"
            and self.warm_start
            and self.finetune_dropout is not None
        ):
            return self.finetune_dropout
        return values["dropout"]

    def trial_config(self, values: Mapping) -> TrainConfig:
        """The `TrainConfig` a trial trains with: the cache's (so SASRec
        trials train as the cached pretraining does), with the trial's
        backbone, `learning_rate(values)`, `dropout(values)` and the
        hypermodel's batch sizes, patience, seed and `prefixes`."""
        num_experts = values.get("num_experts") or self.cache.config.num_experts
        backbone = {**self._backbone(values), "dropout": self.dropout(values)}
        return dataclasses.replace(
            self.cache.config,
            **backbone,
            attention_dropout=None,
            learning_rate=self.learning_rate(values),
            num_experts=num_experts,
            max_len=self.max_len,
            batch_size=self.batch_size,
            eval_batch_size=self.eval_batch_size,
            patience=self.patience,
            seed=self.seed,
            prefixes=self.prefixes,
        )

    # ------------------------------------------------------------------- fit

    def pretrained(self, values: Mapping) -> tuple[SASRec, dict]:
        """The cached pretrained SASRec for a trial's values."""
        return self.cache.get(
            **self._backbone(values),
            max_len=self.max_len,
            learning_rate=values["learning_rate"],
        )

    def fit(
        self,
        hp: keras_tuner.HyperParameters,
        model: keras.Model,
        *args,
        callbacks: Sequence[keras.callbacks.Callback] | None = None,
        epochs: int | None = None,
        initial_epoch: int = 0,
        verbose: int | str | None = None,
        **kwargs,
    ) -> dict:
        """Trains (or serves from the cache) one trial; returns its metrics.

        Args:
            hp: The trial's hyper-parameters.
            model: The model of `build(hp)` (with a checkpoint loaded, for a
                Hyperband continuation).
            *args: Ignored (the data come from the hypermodel's dataset).
            callbacks: KerasTuner's callbacks; they run after the
                validation, so they see `val_NDCG@20`.
            epochs: Epoch budget (default: the hypermodel's `epochs`).
            initial_epoch: First epoch (Hyperband continuations: the
                trial trains `epochs - initial_epoch` more epochs).
            verbose: Keras verbosity of the trial (default 0).
            **kwargs: None accepted: the trial trains through `fit_stage`,
                not `model.fit` (a `TypeError` names any given).

        Returns:
            A dict of metrics: `val_*` (best epoch, the objective among
            them), `test_*`, `best_epoch`, `epochs_run`, `train_seconds`,
            `pretrain_reused`.
        """
        if kwargs:
            raise TypeError(
                "FAMEHyperModel.fit trains through keras_fame.training.fit_stage "
                f"and takes no other model.fit arguments. Received: {sorted(kwargs)}"
            )
        values = self.values(hp)
        epochs = self.epochs if epochs is None else epochs
        callbacks = list(callbacks or [])
        verbose = 0 if verbose in (None, "auto") else verbose
        continuing = "tuner/trial_id" in hp.values or initial_epoch > 0
        self.fits += 1
        start = time.perf_counter()
        cached_budget = epochs == self.pretrain_epochs and not continuing

        if values["model"] == "sasrec" and cached_budget:
            sasrec, results = self.pretrained(values)
            model.set_weights(sasrec.get_weights())
            metrics = {
                f"val_{k}": v for k, v in results["valid"].items() if k != "users"
            }
            if self.evaluate_test:
                metrics.update(
                    {f"test_{k}": v for k, v in results["test"].items() if k != "users"}
                )
            best_epoch = results.get("best_epoch") or 1
            # The tuner's checkpoint callback saves these weights as the trial's.
            for callback in callbacks:
                if _is_checkpoint(callback):
                    callback.set_model(model)
                    callback.on_epoch_end(best_epoch - 1, dict(metrics))
            return {
                **metrics,
                "best_epoch": best_epoch,
                "epochs_run": results.get("epochs_run", 0),
                "train_seconds": (results.get("epoch_seconds") or 0.0)
                * results.get("epochs_run", 0),
                "pretrain_reused": 1.0,
            }

        if values["model"] == "fame" and self.warm_start and not continuing:
            sasrec, _ = self.pretrained(values)
            keras.utils.set_random_seed(self.seed)  # the fresh parts' init
            warm = FAME.from_sasrec(
                sasrec,
                num_experts=values["num_experts"],
                expert_init=self.expert_init,
                facet_init=self.facet_init,
                seed=self.seed,
            )
            model.set_weights(warm.get_weights())
            del warm

        config = self.trial_config(values)
        set_seed(self.seed, config.deterministic)
        with tempfile.TemporaryDirectory(prefix="keras_fame_trial_") as stage_dir:
            result = fit_stage(
                model,
                self.dataset,
                config,
                stage_dir,
                epochs - initial_epoch,
                verbose=verbose,
                extra_callbacks=callbacks,
            )
        if result["best_epoch"] is None:
            raise keras_tuner.errors.FailedTrialError(
                f"No epoch was evaluated (epochs={epochs}, initial_epoch={initial_epoch})."
            )
        best_index = result["best_epoch"] - 1
        best = next(h for h in result["history"] if h["epoch"] == best_index)
        metrics = {
            f"val_{k}": v
            for k, v in best.items()
            if k not in ("epoch", "users", "seconds")
        }
        if self.evaluate_test:
            test = self.dataset.eval_dataset("test", self.eval_batch_size, self.max_len)
            metrics.update(
                {
                    f"test_{k}": v
                    for k, v in evaluate_ranking(model, test).items()
                    if k != "users"
                }
            )
        return {
            **metrics,
            "best_epoch": result["best_epoch"],
            "epochs_run": result["epochs_run"],
            "train_seconds": time.perf_counter() - start,
            "pretrain_reused": 0.0,
        }


def _is_checkpoint(callback) -> bool:
    """Whether `callback` is KerasTuner's best-epoch weight checkpoint."""
    try:
        from keras_tuner.src.engine.tuner_utils import SaveBestEpoch
    except ImportError:  # pragma: no cover - other KerasTuner layouts
        return hasattr(callback, "objective") and hasattr(callback, "filepath")
    return isinstance(callback, SaveBestEpoch)
