"""The paper's two-stage recipe: pretrain SASRec, warm-start FAME, fine-tune.

This module joins the models, the data pipelines and the evaluation: it is
where training runs are checkpointed, logged and resumed. The configuration,
`TrainConfig`, lives in `keras_fame.config` and the reading and writing of its
records (`config.json`) in `keras_fame.config_records`; both are re-exported
here.

Layout of a work directory (`workdir`):

```
workdir/
  config.json                   the TrainConfig of the run
  data.json                     the fingerprint of its data (SequenceDataset.fingerprint)
  sasrec/  fame/                one folder per stage:
    stage.json                  the stage's TrainConfig, epoch budget and data fingerprint
    checkpoint/                 the newest checkpoint (removed once the stage is done)
    logs/                       TensorBoard event files
    history.json                per-epoch validation metrics
    model.keras                 the best model of the stage
    results.json                valid/test metrics of the best model
```

What a work folder guarantees:

- **Exact resume.** A stage writes a checkpoint every `backup_every` steps
  and after every epoch's evaluation, atomically (a temporary file, then a
  rename; the previous checkpoint stays until the new one is complete). A
  run stopped at any moment, even while writing, and rerun with the same
  command continues at the checkpoint's batch with that epoch's shuffle and
  the saved random states, and ends with the weights and metrics of an
  uninterrupted run with the same seed; the batches trained after the last
  checkpoint are trained again, each epoch counts once.
- **It knows its data and configuration.** A rerun with another
  configuration (say another learning rate) or other data (another
  fingerprint: users, items, actions, sequences or vocabulary) is refused,
  finished or not, naming both.
- **It refuses what is partial or damaged**: a finished stage without its
  model, a stage folder without `stage.json`, an unreadable JSON file,
  model or checkpoint, or the unfinished state of an earlier version, each
  named with how to start over. A finished stage is loaded from its
  `model.keras`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

import keras

from keras_fame.config import (  # noqa: F401  (re-exported)
    ACTIVATIONS,
    TrainConfig,
    check_learning_rate,
    config_choices,
    config_help,
    parse_rate_or_none,
)
from keras_fame.config_records import (  # noqa: F401  (re-exported)
    LATER_FIELDS,
    config_from_record,
    config_record,
)
from keras_fame.evaluation import RankingEvaluation, evaluate_ranking
from keras_fame.layers._utils import check_bool
from keras_fame.models import FAME, SASRec

METRICS = ("HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20")
# Weights that `TrainConfig.weight_decay` leaves alone (matched against the
# variables' names): biases and LayerNorm parameters.
NO_DECAY = ("bias", "gamma", "beta")


def set_seed(seed: int, deterministic: bool = True) -> None:
    """Seeds Python, NumPy and the backend; optionally deterministic TF ops."""
    keras.utils.set_random_seed(seed)
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def _train_pipeline(dataset, config: TrainConfig, count_targets: bool = False):
    """The stage's `TrainPipeline`: epoch `n`'s batches depend only on the
    seed and `n`, so a resumed stage trains on what an uninterrupted one
    trains on."""
    from keras_fame.datasets.pipelines import TrainPipeline

    inputs, targets = dataset.train_arrays(
        config.max_len,
        config.windows,
        prefixes=config.prefixes,
        empty_prefix=config.empty_prefix,
    )
    if config.prefixes:
        targets = targets[:, -1]
    return TrainPipeline(
        inputs,
        targets,
        dataset.num_items,
        batch_size=config.batch_size,
        shuffle=True,
        seed=config.seed,
        bucket=config.bucket,
        count_targets=count_targets,
    )


def target_counts(dataset, config: TrainConfig):
    """How often each item id is a training target: `(num_items + 1,)`."""
    import numpy as np

    _, targets = dataset.train_arrays(
        config.max_len,
        config.windows,
        prefixes=config.prefixes,
        empty_prefix=config.empty_prefix,
    )
    return np.bincount(targets[targets > 0], minlength=dataset.num_items + 1)


def _temporary(path: Path) -> Path:
    # Each writer has a temporary file of its own: the workers of a
    # multi-worker cluster claim the same `config.json` at the same time, and
    # with one shared temporary name the second rename found it gone.
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")


def _write_json(path: Path, value) -> None:
    """Writes `value` to `path` atomically (a temporary file, then a rename)."""
    tmp = _temporary(path)
    try:
        tmp.write_text(json.dumps(value, indent=2, default=float) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_json(path: Path, folder: Path):
    """`path`'s JSON value, or a `ValueError` naming the file."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path} is not valid JSON ({error}); the work folder is damaged: "
            f"delete {folder} to start over."
        ) from None


def _load_model(path: Path, folder: Path):
    try:
        return keras.saving.load_model(path)
    except Exception as error:
        raise ValueError(
            f"could not load the model {path} ({type(error).__name__}: {error}); "
            f"the file is damaged or was written by another version: delete "
            f"{folder} to rerun the stage."
        ) from None


def _save_model(model, path: Path) -> None:
    """Saves `model` to `path` atomically (Keras needs the `.keras` ending)."""
    tmp = _temporary(path).with_suffix(".tmp.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def fit_stage(
    model,
    dataset,
    config: TrainConfig,
    stage_dir: str | os.PathLike,
    epochs: int,
    verbose: int = 1,
    extra_callbacks=(),
):
    """Trains one model with validation early stopping, resumable exactly.

    Epoch `n` trains on batches whose order depends only on `config.seed`
    and `n` (`keras_fame.datasets.pipelines.TrainPipeline`). Every
    `config.backup_every` steps and after every epoch's evaluation the stage
    writes a checkpoint to `stage_dir/checkpoint`: the model's variables
    (weights and dropout/sampler random states), the optimizer's, the
    position in the epoch, the early-stopping state and the epoch times, in
    one file written atomically (the previous checkpoint is removed only
    once the new one is complete). A rerun after an interruption continues
    at the checkpoint's batch, so it ends with the weights and metrics of an
    uninterrupted run. Each epoch is one `model.fit` call; `extra_callbacks`
    still see one `on_train_begin` and one `on_train_end` for the stage.

    Args:
        model: A `SASRec` or `FAME`.
        dataset: A `keras_fame.datasets.SequenceDataset`.
        config: The run's `TrainConfig`.
        stage_dir: Folder of this stage (see the module docstring).
        epochs: Epoch budget.
        verbose: Keras progress bar (1), one line per epoch (2) or silent (0).
        extra_callbacks: More Keras callbacks.

    Returns:
        A dict: `best_epoch` (1-based), `epochs_run`, `epoch_seconds` (mean
        training time per epoch, evaluation excluded), `seconds_to_best`,
        `history` (validation metrics per epoch). The model holds the best
        weights.

    Raises:
        ValueError: the checkpoint in `stage_dir` is damaged or belongs to
            another model.
    """
    stage_dir = Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    averaging = {}
    if config.ema_momentum is not None:
        averaging = dict(use_ema=True, ema_momentum=config.ema_momentum)
    decay = {}
    if config.weight_decay:
        decay = dict(weight_decay=config.weight_decay)
    optimizer = keras.optimizers.Adam(config.learning_rate, **averaging, **decay)
    if decay:
        optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY))
    model.compile(optimizer=optimizer)
    # Build the optimizer's slots now, so that a checkpoint can restore them.
    model.optimizer.build(model.trainable_variables)
    strategy = getattr(model, "distribute_strategy", None)
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    if averaging and replicas > 1:
        raise ValueError(
            "`ema_momentum` (weight averaging) is not supported with several "
            f"replicas ({replicas} in the model's strategy); use one device or "
            "ema_momentum=None."
        )
    valid = dataset.eval_dataset("valid", config.eval_batch_size, config.max_len)
    ranking = RankingEvaluation(
        valid,
        monitor="NDCG@20",
        patience=config.patience,
        restore_best_weights=True,
        verbose=1 if verbose else 0,
        item_chunk_size=config.eval_item_chunk_size,
    )
    pipeline = _train_pipeline(dataset, config, count_targets=replicas > 1)
    checkpoints = _Checkpoints(stage_dir / "checkpoint", model)
    state = checkpoints.restore()
    if state is None and (stage_dir / "logs").exists():
        # Events of a run stopped before its first checkpoint.
        shutil.rmtree(stage_dir / "logs")
    state = state or {"epoch": 0, "step": 0, "done": False, "times": [], "elapsed": 0}
    timer = _EpochTimer(state)
    writer = _CheckpointWriter(
        checkpoints,
        ranking,
        timer,
        state,
        epochs,
        pipeline.num_batches,
        config.backup_every,
    )
    callbacks = _StageCallbacks(
        [
            timer,
            ranking,
            keras.callbacks.TensorBoard(str(stage_dir / "logs"), update_freq="epoch"),
            *extra_callbacks,
            writer,
        ],
        add_history=True,
        add_progbar=verbose != 0,
        verbose=verbose,
        epochs=epochs,
        steps=pipeline.num_batches,
        model=model,
    )
    callbacks.begin()
    if "ranking" in state:
        ranking.best = state["ranking"]["best"]
        ranking.best_epoch = state["ranking"]["best_epoch"]
        ranking.stopped_epoch = state["ranking"]["stopped_epoch"]
        ranking.history = state["ranking"]["history"]
        ranking.best_weights = checkpoints.best_weights(state)
    epoch, step, done = state["epoch"], state["step"], state["done"]
    # Keras applies the averaged weights at the end of every `fit`: here once,
    # at the end of the stage, as one `fit` over all epochs would.
    finalize = model.optimizer.finalize_variable_values
    model.optimizer.finalize_variable_values = lambda variables: None
    try:
        while not done and epoch < epochs:
            model.fit(
                pipeline.epoch(epoch, skip_batches=step),
                initial_epoch=epoch,
                epochs=epoch + 1,
                callbacks=callbacks,
                verbose=verbose,
                shuffle=False,  # the pipeline shuffles (seeded)
            )
            done = writer.done
            epoch, step = epoch + 1, 0
    finally:
        del model.optimizer.finalize_variable_values
    finalize(model.trainable_weights)
    callbacks.end()
    history = ranking.history
    _write_json(stage_dir / "history.json", history)
    times = timer.times
    best_epoch = ranking.best_epoch
    return {
        "best_epoch": None if best_epoch is None else best_epoch + 1,
        "epochs_run": len(times),
        "epoch_seconds": sum(times) / max(len(times), 1),
        "seconds_to_best": None
        if best_epoch is None
        else sum(times[: best_epoch + 1])
        + sum(h["seconds"] for h in history if h["epoch"] <= best_epoch),
        "history": history,
    }


class _StageCallbacks(keras.callbacks.CallbackList):
    """A stage's callbacks across its one-epoch `fit` calls: `fit`'s own
    train begin and end are ignored; `begin()` and `end()` run them once."""

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def begin(self):
        super().on_train_begin()

    def end(self):
        super().on_train_end()


class _EpochTimer(keras.callbacks.Callback):
    """Training time per epoch (evaluation excluded), kept across resumes."""

    def __init__(self, state: dict):
        super().__init__()
        self.times = list(state["times"])
        self._resumed = (state["epoch"], state["elapsed"]) if state["step"] else None

    def on_epoch_begin(self, epoch, logs=None):
        carry = 0.0
        if self._resumed is not None and self._resumed[0] == epoch:
            carry = self._resumed[1]
        self._start = time.perf_counter() - carry
        del self.times[epoch:]

    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def on_epoch_end(self, epoch, logs=None):
        # Runs first among the callbacks: evaluation is not counted.
        self.times.append(self.elapsed())


class _CheckpointWriter(keras.callbacks.Callback):
    """Writes the stage's checkpoints: every `every` steps of an epoch and
    after each epoch's evaluation (it runs last among the callbacks)."""

    def __init__(self, checkpoints, ranking, timer, state, epochs, steps, every):
        super().__init__()
        self.checkpoints, self.ranking, self.timer = checkpoints, ranking, timer
        self.epochs, self.steps, self.every = epochs, steps, every
        self._resumed = (state["epoch"], state["step"])
        self.done = state["done"]

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        resumed_epoch, resumed_step = self._resumed
        self.offset = resumed_step if epoch == resumed_epoch else 0

    def on_train_batch_end(self, batch, logs=None):
        step = self.offset + batch + 1
        if step % self.every == 0 and step < self.steps:
            self._write(self.epoch, step, False, self.timer.elapsed())

    def on_epoch_end(self, epoch, logs=None):
        self.done = bool(self.model.stop_training) or epoch + 1 >= self.epochs
        self._write(epoch + 1, 0, self.done, 0.0)

    def _write(self, epoch, step, done, elapsed):
        ranking = self.ranking
        self.checkpoints.write(
            {
                "epoch": epoch,
                "step": step,
                "done": done,
                "times": self.timer.times,
                "elapsed": elapsed,
                "ranking": {
                    "best": ranking.best,
                    "best_epoch": ranking.best_epoch,
                    "stopped_epoch": ranking.stopped_epoch,
                    "history": ranking.history,
                },
            },
            ranking.best_weights,
        )


class _Checkpoints:
    """A stage's checkpoints in `folder`: `state-N.npz` (the newest N is the
    one that counts) and the best weights it names, `best-E.npz`.

    A state file holds the model's variables (weights and random states),
    the optimizer's variables and a JSON `meta` entry; every file is written
    to a temporary name first and renamed when complete.
    """

    def __init__(self, folder: Path, model):
        self.folder = Path(folder)
        self.model = model

    def _states(self) -> list[Path]:
        if not self.folder.exists():
            return []
        return sorted(self.folder.glob("state-*.npz"))

    def _variables(self):
        return [*self.model.variables, *self.model.optimizer.variables]

    def write(self, meta: dict, best_weights) -> None:
        import numpy as np

        self.folder.mkdir(parents=True, exist_ok=True)
        states = self._states()
        number = int(states[-1].stem.split("-")[1]) + 1 if states else 0
        best_epoch = meta["ranking"]["best_epoch"]
        meta["best_file"] = None
        if best_weights is not None and best_epoch is not None:
            best = self.folder / f"best-{best_epoch:06d}.npz"
            meta["best_file"] = best.name
            if not best.exists():
                _save_arrays(best, {f"w{i}": w for i, w in enumerate(best_weights)})
        variables = self._variables()
        arrays = {
            f"v{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(variables)
        }
        meta = {"version": CHECKPOINT_VERSION, "variables": len(variables), **meta}
        arrays["meta"] = np.asarray(json.dumps(meta, default=float))
        _save_arrays(self.folder / f"state-{number:08d}.npz", arrays)
        # The new checkpoint is complete: the older ones can go.
        for path in states:
            path.unlink(missing_ok=True)
        for path in self.folder.glob("best-*.npz"):
            if path.name != meta["best_file"]:
                path.unlink(missing_ok=True)
        for path in self.folder.glob(".*.tmp"):
            path.unlink(missing_ok=True)

    def restore(self) -> dict | None:
        """Sets the model's and optimizer's variables from the newest
        checkpoint and returns its `meta`; `None` without a checkpoint."""
        states = self._states()
        if not states:
            return None
        path = states[-1]
        arrays = _load_arrays(path, self.folder)
        meta = json.loads(str(arrays.pop("meta")))
        variables = self._variables()
        if (
            meta.get("version") != CHECKPOINT_VERSION
            or meta["variables"] != len(variables)
            or len(arrays) != len(variables)
        ):
            raise ValueError(
                f"{path} is a checkpoint of another model or keras-fame version "
                f"({meta.get('variables')} variables, this model has "
                f"{len(variables)}); delete {self.folder.parent} to start the "
                "stage over."
            )
        for i, variable in enumerate(variables):
            value = arrays[f"v{i}"]
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(
                    f"{path}: variable {i} ({variable.path}) has shape "
                    f"{value.shape} in the checkpoint and {tuple(variable.shape)} "
                    f"in the model; delete {self.folder.parent} to start the stage "
                    "over."
                )
            variable.assign(value)
        return meta

    def best_weights(self, meta: dict):
        """The best weights that `meta` names (a list, `model.get_weights()`
        order), or `None`."""
        if meta.get("best_file") is None:
            return None
        path = self.folder / meta["best_file"]
        if not path.exists():
            raise ValueError(
                f"{path} is missing: the checkpoint {self.folder} names it as its "
                f"best weights; delete {self.folder.parent} to start the stage over."
            )
        arrays = _load_arrays(path, self.folder)
        return [arrays[f"w{i}"] for i in range(len(arrays))]


CHECKPOINT_VERSION = 1


def _save_arrays(path: Path, arrays: dict) -> None:
    import numpy as np

    tmp = _temporary(path)
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _load_arrays(path: Path, folder: Path) -> dict:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except Exception as error:
        raise ValueError(
            f"could not read the checkpoint {path} ({type(error).__name__}: "
            f"{error}); delete {folder.parent} to start the stage over."
        ) from None


def evaluate_splits(model, dataset, config: TrainConfig) -> dict:
    """Full-ranking validation and test metrics of `model`."""
    out = {}
    for split in ("valid", "test"):
        data = dataset.eval_dataset(split, config.eval_batch_size, config.max_len)
        out[split] = evaluate_ranking(
            model, data, item_chunk_size=config.eval_item_chunk_size
        )
    return out


def train_sasrec(
    dataset,
    config: TrainConfig,
    workdir,
    verbose: int = 1,
    callbacks=(),
    strategy=None,
    vocabulary=None,
):
    """Stage 1: trains (or reloads, or resumes) SASRec in `workdir/sasrec`.

    `strategy` (default: made from `config.distribution`) is the
    `tf.distribute.Strategy` whose scope holds the model; `vocabulary`, if
    given, is attached to the model (`set_vocabulary`) and saved with it.
    """
    return run_stage(
        "sasrec",
        lambda: SASRec(dataset.num_items, **config.model_kwargs()),
        dataset,
        config,
        workdir,
        config.pretrain_epochs,
        verbose,
        callbacks,
        strategy,
        ignore=FAME_FIELDS,
        vocabulary=vocabulary,
    )


def train_fame(
    dataset,
    config: TrainConfig,
    workdir,
    sasrec=None,
    verbose: int = 1,
    callbacks=(),
    strategy=None,
    vocabulary=None,
):
    """Stage 2: FAME warm-started from `sasrec` (or from scratch), fine-tuned.

    Under a strategy, `sasrec` must have been built in the same `strategy`.
    `vocabulary`, if given, is attached to the model and saved with it (a
    warm start also takes the SASRec's).
    """
    config = config.finetune_config()

    def build():
        if sasrec is None:
            return scratch_fame(dataset.num_items, config)
        return warm_start_fame(sasrec, config)

    return run_stage(
        "fame",
        build,
        dataset,
        config,
        workdir,
        config.finetune_epochs,
        verbose,
        callbacks,
        strategy,
        vocabulary=vocabulary,
    )


def scratch_fame(num_items: int, config: TrainConfig):
    """FAME from a random start, as `train_fame` builds it without a SASRec.

    Every model field of `config` applies, FAME's own included
    (`TrainConfig.fame_kwargs`); the warm-start fields have nothing to act on.
    """
    return FAME(num_items, **config.fame_kwargs(), **config.model_kwargs())


def warm_start_fame(sasrec, config: TrainConfig):
    """FAME warm-started from `sasrec` as `train_fame` builds it.

    `config` is the fine-tuning stage's (`TrainConfig.finetune_config()`):
    its experts, warm start and seed, and, where `finetune_dropout` is set,
    its dropout rates (else FAME keeps the SASRec's).
    """
    dropout = {}
    if config.finetune_dropout is not None:
        dropout = dict(
            dropout=config.dropout, attention_dropout=config.attention_dropout
        )
    return FAME.from_sasrec(
        sasrec,
        expert_init=config.expert_init,
        expert_noise=config.expert_noise,
        facet_init=config.facet_init,
        seed=config.seed,
        **config.fame_kwargs(),
        **dropout,
    )


# Left out of a stage's stage.json: its own `epochs` and `learning_rate` say
# what these said for it.
_STAGE_BUDGETS = ("pretrain_epochs", "finetune_epochs", "finetune_learning_rate")
# Read by FAME's stage only.
FAME_FIELDS = (
    "num_experts",
    "expert_init",
    "expert_noise",
    "routing_loss_weight",
    "facet_init",
    "finetune_dropout",
    "attention_residual",
)


def run_stage(
    name,
    build,
    dataset,
    config: TrainConfig,
    workdir,
    epochs: int,
    verbose: int = 1,
    callbacks=(),
    strategy=None,
    ignore=(),
    vocabulary=None,
):
    """Trains, resumes or reloads one stage in `workdir/name`.

    `train_sasrec` and `train_fame` are this with their model and budget;
    benchmarks use it for other stages (e.g. SASRec trained further).

    Args:
        name: The stage's folder in `workdir`.
        build: Called with no argument to make the model to train (a new
            model, or one loaded or warm-started from an earlier stage).
        dataset: A `keras_fame.datasets.SequenceDataset`.
        config: The stage's `TrainConfig` (its `learning_rate` is the
            stage's rate).
        workdir: The run's folder.
        epochs: Epoch budget.
        verbose: Keras verbosity.
        callbacks: More Keras callbacks.
        strategy: The `tf.distribute.Strategy` whose scope holds the model
            (default: made from `config.distribution`).
        ignore: `TrainConfig` fields this stage does not read: changing them
            does not refuse the stage (`stage.json` leaves them out, as it
            leaves out the epoch budgets and `finetune_learning_rate`, which
            `epochs` and `config.learning_rate` stand for).
        vocabulary: A `Vocabulary` to attach to the model (`set_vocabulary`)
            before it is trained and saved, or `None`.

    Returns:
        `(model, results)`: the stage's best model and its `results.json`
        (`valid`, `test`, `best_epoch`, `epochs_run`, `epoch_seconds`,
        `seconds_to_best`).

    Raises:
        ValueError: `workdir/name/stage.json` holds another configuration or
            budget.
    """
    from keras_fame.distribute import is_chief, make_strategy

    if strategy is None:
        strategy = make_strategy(config.distribution)
    stage_dir = Path(workdir) / name
    if not is_chief(strategy):
        # Other workers train in step with the chief but keep their own
        # backups; only the chief writes the stage's results.
        task = strategy.cluster_resolver.task_id
        stage_dir = Path(workdir) / f"worker-{task}" / name
    stage = {
        k: v
        for k, v in config_record(config).items()
        if k not in {*_STAGE_BUDGETS, *ignore}
    }
    _check_stage(stage_dir, {**stage, "epochs": epochs}, dataset.fingerprint())
    model_path = stage_dir / "model.keras"
    results_path = stage_dir / "results.json"
    with strategy.scope():
        if results_path.exists():
            results = _read_json(results_path, stage_dir)
            if not model_path.exists():
                raise ValueError(
                    f"{results_path} says the stage finished, but {model_path} "
                    f"is missing; delete {stage_dir} to rerun the stage."
                )
            if verbose:
                print(f"[{name}] finished earlier: loading {model_path}")
            return _load_model(model_path, stage_dir), results
        set_seed(config.seed, config.deterministic)
        model = build()
        if vocabulary is not None:
            model.set_vocabulary(vocabulary)
        if config.softmax == "sampled" and config.negatives != "uniform":
            model.set_item_frequencies(target_counts(dataset, config))
        if verbose:
            print(
                f"[{name}] training {model.count_params():,} parameters in {stage_dir}"
            )
        summary = fit_stage(
            model, dataset, config, stage_dir, epochs, verbose, callbacks
        )
    metrics = evaluate_splits(model, dataset, config)
    results = {**metrics, **{k: v for k, v in summary.items() if k != "history"}}
    _save_model(model, model_path)
    _write_json(results_path, results)
    shutil.rmtree(stage_dir / "checkpoint", ignore_errors=True)
    return model, results


# What a stage folder of an earlier keras-fame held instead of `checkpoint/`.
_OLD_STATE = ("backup", "eval_state", "epoch_times.json")


def _check_stage(stage_dir: Path, stage: dict, data: dict) -> None:
    """Refuses a stage folder made with another configuration or other data,
    or one that is partial or of an earlier version; claims it otherwise."""
    path = stage_dir / "stage.json"
    if path.exists():
        previous = _read_json(path, stage_dir)
        _check_data(path, previous.get("data"), data, stage_dir)
    else:
        found = [
            n
            for n in ("results.json", "model.keras", "checkpoint", "history.json")
            if (stage_dir / n).exists()
        ]
        if found:
            raise ValueError(
                f"{stage_dir} holds {found} but no stage.json, so the "
                "configuration and data that made it are unknown; delete "
                f"{stage_dir} to start the stage over."
            )
    old = [n for n in _OLD_STATE if (stage_dir / n).exists()]
    if old and not (stage_dir / "results.json").exists():
        raise ValueError(
            f"{stage_dir} holds {old}: an unfinished stage of an earlier "
            f"keras-fame, which cannot be resumed exactly; delete {stage_dir} to "
            "start the stage over."
        )
    stage_dir.mkdir(parents=True, exist_ok=True)
    _claim(path, {**stage, "data": data}, stage_dir)


def _describe_data(data: dict | None) -> str:
    if not data:
        return "no record of its data (an earlier keras-fame)"
    return (
        f"{data['users']:,} users, {data['items']:,} items, "
        f"{data['actions']:,} actions, sequences {data['sequences'][:12]}, "
        f"vocabulary {data['vocabulary'][:12]}"
    )


def _check_data(path: Path, previous: dict | None, data: dict, folder: Path) -> None:
    """Refuses a folder whose record `path` names other data than `data`."""
    if previous != data:
        raise ValueError(
            f"{folder} belongs to other data: {path} records "
            f"{_describe_data(previous)}; the data given has "
            f"{_describe_data(data)}. Use a new workdir for this data, or "
            f"delete {folder} to start over."
        )


def _claim(path: Path, record: dict, folder: Path) -> None:
    """Writes `record` to `path`, refusing if `path` holds another one."""
    if path.exists():
        previous = _read_json(path, folder)
        if previous != record:
            changed = sorted(
                k for k in {**previous, **record} if previous.get(k) != record.get(k)
            )
            raise ValueError(
                f"{path} holds another configuration (differs in {changed}); "
                f"use a new workdir, or delete {folder} to start over."
            )
    _write_json(path, record)


def two_stage(
    dataset,
    config: TrainConfig,
    workdir,
    verbose: int = 1,
    callbacks=(),
    strategy=None,
    vocabulary: bool | None = None,
) -> dict:
    """Runs the paper's recipe: pretrain SASRec, warm-start FAME, fine-tune.

    Args:
        dataset: A `keras_fame.datasets.SequenceDataset`.
        config: A `TrainConfig`.
        workdir: Folder for checkpoints, logs and results; rerunning with the
            same folder resumes an interrupted run.
        verbose: Keras verbosity.
        callbacks: More Keras callbacks for both stages.
        strategy: A `tf.distribute.Strategy` to use instead of the one
            `config.distribution` names (e.g. particular devices).
        vocabulary: Attach `dataset.vocabulary` to both models, so that they
            take and return your item ids (`recommend`, `explain`, the
            served `serving_default`) and save it with them: `True` always,
            `False` never, `None` (default) when the vocabulary is not the
            identity (your own log's ids; the Amazon and synthetic datasets'
            ids already are `1..num_items`). It is also written to
            `workdir/vocabulary.json`.

    Returns:
        `{"sasrec": (model, results), "fame": (model, results)}`, where
        results hold `valid` and `test` metric dicts, `best_epoch`,
        `epoch_seconds` and `seconds_to_best`.

    Example:
    >>> data = keras_fame.datasets.load("synthetic")  # doctest: +SKIP
    >>> runs = two_stage(data, TrainConfig(pretrain_epochs=5), "runs/demo")  # doctest: +SKIP
    >>> runs["fame"][1]["test"]["NDCG@10"]  # doctest: +SKIP
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data = dataset.fingerprint()
    data_path = workdir / "data.json"
    if data_path.exists():
        _check_data(data_path, _read_json(data_path, workdir), data, workdir)
    _claim(workdir / "config.json", config_record(config), workdir)
    _write_json(data_path, data)
    vocabulary_path = workdir / "vocabulary.json"
    if not vocabulary_path.exists():
        temporary = _temporary(vocabulary_path)
        dataset.vocabulary.save(temporary)
        os.replace(temporary, vocabulary_path)
    if vocabulary is None:
        vocabulary = not dataset.vocabulary.is_identity
    attached = dataset.vocabulary if check_bool("vocabulary", vocabulary) else None
    from keras_fame.distribute import make_strategy

    if strategy is None:
        strategy = make_strategy(config.distribution)
    sasrec = train_sasrec(
        dataset, config, workdir, verbose, callbacks, strategy, vocabulary=attached
    )
    fame = train_fame(
        dataset,
        config,
        workdir,
        sasrec[0],
        verbose,
        callbacks,
        strategy,
        vocabulary=attached,
    )
    return {"sasrec": sasrec, "fame": fame}
