"""Search heads and experts the way the paper did, with KerasTuner.

Command line (run `python tuning/search.py --help`):

```bash
# The paper's protocol (Sec. 5.4, 5.6): heads for FAME without MoE (N=1)
# against SASRec, then experts at the best head count.
python tuning/search.py --protocol paper --dataset beauty \
    --data-dir ../shared/datasets/amazon --epochs 200 --directory runs/tuning-beauty

# A Bayesian (or hyperband, grid, random) search over heads and experts.
python tuning/search.py --tuner bayesian --max-trials 20 --dataset sports \
    --directory runs/tuning-sports --epochs 100
```

A rerun with the same `--directory` resumes: finished trials are not run
again (KerasTuner's project folders, `overwrite=False`), an interrupted one
is run again, and pretrained SASRec models are loaded from
`<directory>/sasrec_cache/`.

Python API: `make_tuner`, `run_search`, `run_paper_protocol`, `trial_rows`,
`write_summary`, and `ConfigListSearch` (a tuner that runs an explicit list
of configurations: the grid search and the protocol's phases).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import numbers
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

if __package__ in (None, ""):  # `python tuning/search.py`: import from the repo
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

try:
    import keras_tuner  # noqa: E402
except ImportError as e:  # an optional dependency: the `tuning` extra
    raise ImportError(
        "`tuning` needs KerasTuner: `pip install 'keras-fame[tuning]'` "
        "(or `pip install -e '.[tuning]'` in a checkout)."
    ) from e

from keras_fame.models.fame import EXPERT_INITS, FACET_INITS  # noqa: E402
from keras_fame.training import TrainConfig, parse_rate_or_none  # noqa: E402
from tuning.hypermodel import (  # noqa: E402
    HP_NAMES,
    OBJECTIVE,
    PAPER_EXPERTS,
    PAPER_HEADS,
    FAMEHyperModel,
    SearchSpace,
)
from tuning.plots import plot_experts, plot_heads  # noqa: E402

__all__ = [
    "TUNERS",
    "ConfigListOracle",
    "ConfigListSearch",
    "best_row",
    "main",
    "make_tuner",
    "markdown_table",
    "run_paper_protocol",
    "run_search",
    "trial_rows",
    "write_summary",
]

TUNERS = ("bayesian", "hyperband", "grid", "random")
_OBJECTIVE_KEY = OBJECTIVE.name


# ------------------------------------------------------------------- tuners


def _matches(config: Mapping, values: Mapping) -> bool:
    return all(values.get(key) == value for key, value in config.items())


class ConfigListOracle(keras_tuner.Oracle):
    """An oracle that proposes a fixed list of configurations, each once.

    Used for the grid search (`SearchSpace.grid()`, valid combinations only)
    and for the paper protocol's phases. On a resumed search, a
    configuration that already has a trial is skipped.

    Args:
        configs: Hyper-parameter value dicts, run in this order.
        objective: The objective (default: validation NDCG@20, max).
        max_trials: Cap on the number of trials (default: all configs).
        **kwargs: Other `keras_tuner.Oracle` arguments.
    """

    def __init__(
        self, configs: Sequence[Mapping], objective=OBJECTIVE, max_trials=None, **kwargs
    ):
        configs = [dict(config) for config in configs]
        if not configs:
            raise ValueError("`configs` must list at least one configuration.")
        super().__init__(
            objective=objective, max_trials=max_trials or len(configs), **kwargs
        )
        self.configs = configs

    def populate_space(self, trial_id):
        tried = [trial.hyperparameters.values for trial in self.trials.values()]
        for config in self.configs:
            if not any(_matches(config, values) for values in tried):
                return {"status": "RUNNING", "values": dict(config)}
        return {"status": "STOPPED", "values": None}


class ConfigListSearch(keras_tuner.Tuner):
    """A tuner that runs the configurations of a `ConfigListOracle`.

    Args:
        hypermodel: The `FAMEHyperModel`.
        configs: Hyper-parameter value dicts (see `ConfigListOracle`).
        objective: The objective (default: validation NDCG@20, max).
        max_trials: Cap on the number of trials (default: all configs).
        seed: Oracle seed.
        max_consecutive_failed_trials: Stop after this many failures in a row.
        **kwargs: `keras_tuner.Tuner` arguments (`directory`,
            `project_name`, `overwrite`, ...).
    """

    def __init__(
        self,
        hypermodel,
        configs: Sequence[Mapping],
        objective=OBJECTIVE,
        max_trials: int | None = None,
        seed: int | None = None,
        max_consecutive_failed_trials: int = 10,
        **kwargs,
    ):
        oracle = ConfigListOracle(
            configs,
            objective=objective,
            max_trials=max_trials,
            seed=seed,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
        )
        super().__init__(oracle, hypermodel, **kwargs)


def make_tuner(
    kind: str,
    hypermodel: FAMEHyperModel,
    directory: str | os.PathLike,
    project_name: str | None = None,
    *,
    max_trials: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    hyperband_factor: int = 3,
    configs: Sequence[Mapping] | None = None,
    max_consecutive_failed_trials: int = 10,
) -> keras_tuner.Tuner:
    """A KerasTuner tuner for `hypermodel`, objective validation NDCG@20.

    Args:
        kind: `"bayesian"`, `"hyperband"`, `"grid"` (every valid combination
            of the hypermodel's space, or `configs`) or `"random"`.
        hypermodel: A `FAMEHyperModel`.
        directory: The search folder; the project is `directory/project_name`.
        project_name: Default: `kind`.
        max_trials: Trial budget (default: 20 for bayesian/random, all
            combinations for grid, none for hyperband, whose budget is
            `hypermodel.epochs` = `max_epochs` and one iteration).
        seed: Oracle seed.
        overwrite: Start over instead of resuming the project.
        hyperband_factor: Hyperband's reduction factor.
        configs: For `"grid"`: an explicit list of value dicts.
        max_consecutive_failed_trials: Stop after this many failed trials in
            a row (excluded head counts fail, so keep it above a few).

    Returns:
        The tuner (not yet searched).
    """
    if not isinstance(kind, str) or kind not in TUNERS:
        raise ValueError(
            f"`kind` must be one of {list(TUNERS)}. Received: kind={kind!r}"
        )
    kind = str(kind)
    if max_trials is not None and (
        not isinstance(max_trials, numbers.Integral)
        or isinstance(max_trials, bool)
        or max_trials < 1
    ):
        raise ValueError(
            "`max_trials` must be a positive integer or None. Received: "
            f"max_trials={max_trials!r}"
        )
    max_trials = None if max_trials is None else int(max_trials)
    common = dict(
        directory=os.fspath(directory),
        project_name=project_name or kind,
        overwrite=overwrite,
    )
    failures = dict(max_consecutive_failed_trials=max_consecutive_failed_trials)
    if kind == "grid":
        return ConfigListSearch(
            hypermodel,
            configs if configs is not None else hypermodel.space.grid(),
            max_trials=max_trials,
            seed=seed,
            **failures,
            **common,
        )
    if kind == "random":
        return keras_tuner.RandomSearch(
            hypermodel,
            objective=OBJECTIVE,
            max_trials=max_trials or 20,
            seed=seed,
            **failures,
            **common,
        )
    if kind == "bayesian":
        try:
            import sklearn  # noqa: F401
        except ImportError as e:
            raise ImportError(
                "`kind='bayesian'` needs scikit-learn: "
                "`pip install 'keras-fame[tuning]'`."
            ) from e
        return keras_tuner.BayesianOptimization(
            hypermodel,
            objective=OBJECTIVE,
            max_trials=max_trials or 20,
            seed=seed,
            **failures,
            **common,
        )
    tuner = keras_tuner.Hyperband(
        hypermodel,
        objective=OBJECTIVE,
        max_epochs=hypermodel.epochs,
        factor=hyperband_factor,
        hyperband_iterations=1,
        seed=seed,
        **failures,
        **common,
    )
    tuner.oracle.max_trials = max_trials
    return tuner


# ------------------------------------------------------------------ results


def trial_rows(tuner: keras_tuner.Tuner, phase: str | None = None) -> list[dict]:
    """One dict per trial: status, hyper-parameters, metrics.

    Args:
        tuner: A searched tuner.
        phase: A label stored in every row (e.g. `"heads"`).

    Returns:
        Rows in trial order with `phase`, `trial`, `status`, the names of
        `HP_NAMES` (`None` where not active), `epochs` (Hyperband's budget,
        else `None`), every reported metric (`val_*`, `test_*`,
        `best_epoch`, ...) and `message` (why a trial failed).
    """
    rows = []
    for trial_id in sorted(tuner.oracle.trials):
        trial = tuner.oracle.trials[trial_id]
        values = trial.hyperparameters.values
        row = {"phase": phase, "trial": trial_id, "status": trial.status}
        for name in HP_NAMES:
            row[name] = values.get(name)
        if row["model"] == "sasrec":
            row["num_experts"] = None
        row["epochs"] = values.get("tuner/epochs")
        for name in sorted(trial.metrics.metrics):
            row[name] = trial.metrics.get_last_value(name)
        message = (trial.message or "").strip().splitlines()
        row["message"] = message[-1] if message else ""
        rows.append(row)
    return rows


def best_row(rows: Sequence[Mapping], **match) -> dict | None:
    """The completed row with the highest objective (`val_NDCG@20`)."""
    candidates = [
        row
        for row in rows
        if row.get("status") == "COMPLETED"
        and row.get(_OBJECTIVE_KEY) is not None
        and all(row.get(k) == v for k, v in match.items())
    ]
    if not candidates:
        return None
    return dict(max(candidates, key=lambda row: row[_OBJECTIVE_KEY]))


_TABLE = (
    ("phase", "phase"),
    ("trial", "trial"),
    ("status", "status"),
    ("model", "model"),
    ("hidden_dim", "d"),
    ("num_blocks", "L"),
    ("num_heads", "H"),
    ("num_experts", "N"),
    ("dropout", "dropout"),
    ("learning_rate", "lr"),
    ("epochs", "epochs"),
    ("val_NDCG@20", "val NDCG@20"),
    ("val_HR@20", "val HR@20"),
    ("test_NDCG@20", "test NDCG@20"),
    ("test_HR@20", "test HR@20"),
    ("best_epoch", "best epoch"),
    ("train_seconds", "seconds"),
)


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key in ("best_epoch", "train_seconds") and isinstance(value, float):
        return f"{value:.0f}"
    if key.startswith(("val_", "test_")):
        return f"{value:.4f}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def markdown_table(rows: Sequence[Mapping]) -> str:
    """The trials as a markdown table (failed trials say why in a note)."""
    keys = [key for key, _ in _TABLE if any(row.get(key) is not None for row in rows)]
    names = dict(_TABLE)
    lines = [
        "| " + " | ".join(names[k] for k in keys) + " | note |",
        "|" + "---|" * (len(keys) + 1),
    ]
    for row in rows:
        if row.get("status") != "COMPLETED":
            note = row.get("message", "")
        elif row.get("pretrain_reused"):
            note = "the cached pretrained SASRec"
        else:
            note = ""
        cells = [_cell(key, row.get(key)) for key in keys]
        lines.append("| " + " | ".join(cells) + f" | {note.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def _describe(row: Mapping | None) -> str:
    if row is None:
        return "none (no completed trial)"
    values = ", ".join(
        f"{name}={row[name]}" for name in HP_NAMES if row.get(name) is not None
    )
    return f"{values}: val NDCG@20 {row[_OBJECTIVE_KEY]:.4f}" + (
        f", test NDCG@20 {row['test_NDCG@20']:.4f}"
        if row.get("test_NDCG@20") is not None
        else ""
    )


def write_summary(
    rows: Sequence[Mapping],
    directory: str | os.PathLike,
    *,
    title: str = "Search summary",
    best: Mapping | None = None,
    notes: Sequence[str] = (),
    extra: Mapping | None = None,
) -> dict:
    """Writes `summary.md`, `trials.csv` and `summary.json` into `directory`.

    Args:
        rows: Trial rows (`trial_rows`).
        directory: Output folder (created).
        title: Markdown title.
        best: The best row (default: `best_row(rows)`).
        notes: Lines added under the best configuration.
        extra: More JSON fields for `summary.json` (e.g. the protocol's
            per-phase bests).

    Returns:
        `{"summary.md": path, "trials.csv": path, "summary.json": path}`.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    best = best_row(rows) if best is None else best
    md = [
        f"# {title}",
        "",
        f"Objective: `{_OBJECTIVE_KEY}` (full ranking), maximised.",
        "",
    ]
    md.append(f"**Best configuration:** {_describe(best)}")
    md.extend(["", *[f"- {note}" for note in notes]] if notes else [])
    md.extend(["", markdown_table(rows)])
    paths = {
        "summary.md": directory / "summary.md",
        "trials.csv": directory / "trials.csv",
        "summary.json": directory / "summary.json",
    }
    paths["summary.md"].write_text("\n".join(md))
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    with open(paths["trials.csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    payload = {
        "objective": _OBJECTIVE_KEY,
        "best": best,
        **(extra or {}),
        "trials": list(rows),
    }
    paths["summary.json"].write_text(
        json.dumps(payload, indent=1, default=float) + "\n"
    )
    return {name: os.fspath(path) for name, path in paths.items()}


# ------------------------------------------------------------------ running


def _check_dataset(directory: Path, dataset) -> None:
    """Refuses to mix two datasets in one search folder (the cache is per dataset)."""
    info = {
        "name": getattr(dataset, "name", "?"),
        "num_users": int(dataset.num_users),
        "num_items": int(dataset.num_items),
        "num_actions": int(dataset.num_actions),
    }
    path = directory / "dataset.json"
    if path.exists():
        previous = json.loads(path.read_text())
        if previous != info:
            raise ValueError(
                f"`directory` {directory} holds a search on another dataset "
                f"({previous}); this one is {info}. Use another directory."
            )
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info) + "\n")


def run_search(
    dataset,
    directory: str | os.PathLike,
    *,
    tuner: str = "bayesian",
    space: SearchSpace | None = None,
    max_trials: int | None = None,
    project_name: str | None = None,
    overwrite: bool = False,
    hyperband_factor: int = 3,
    verbose: int = 0,
    notes: Sequence[str] = (),
    **hypermodel_kwargs,
) -> dict:
    """Runs (or resumes) one KerasTuner search and writes its summary.

    Args:
        dataset: A `keras_fame.datasets.SequenceDataset`.
        directory: The search folder: the KerasTuner project, the SASRec
            cache (`sasrec_cache/`) and the summary (`<project>/summary/`).
        tuner: `"bayesian"`, `"hyperband"`, `"grid"` or `"random"`.
        space: The `SearchSpace`.
        max_trials: Trial budget (see `make_tuner`).
        project_name: Default: `tuner`.
        overwrite: Start the project over.
        hyperband_factor: Hyperband's reduction factor.
        verbose: Trial verbosity (KerasTuner's and Keras'); 2 also shows
            SASRec pretraining.
        notes: Extra lines for the summary (e.g. the command).
        **hypermodel_kwargs: `FAMEHyperModel` arguments (`epochs`, ...).

    Returns:
        `{"tuner", "hypermodel", "rows", "best", "files"}`.
    """
    directory = Path(directory)
    _check_dataset(directory, dataset)
    hypermodel_kwargs.setdefault("verbose", 1 if verbose == 2 else 0)
    hypermodel = FAMEHyperModel(dataset, space, directory, **hypermodel_kwargs)
    project_name = project_name or tuner
    searcher = make_tuner(
        tuner,
        hypermodel,
        directory,
        project_name,
        max_trials=max_trials,
        seed=hypermodel.seed,
        overwrite=overwrite,
        hyperband_factor=hyperband_factor,
    )
    searcher.search(epochs=hypermodel.epochs, verbose=verbose)
    rows = trial_rows(searcher, phase=project_name)
    best = best_row(rows)
    out = directory / project_name / "summary"
    excluded = hypermodel.space.excluded()
    notes = [*notes, f"tuner: {tuner}; {len(rows)} trials"]
    if excluded:
        notes.append(f"excluded (hidden_dim, num_heads) pairs: {excluded}")
    files = write_summary(rows, out, title=f"{tuner} search", best=best, notes=notes)
    if best is not None:
        fixed = {
            k: best[k] for k in ("hidden_dim", "num_blocks", "dropout", "learning_rate")
        }
        if len({r["num_experts"] for r in rows if r.get("model") == "fame"}) > 1:
            try:
                files["experts.png"] = plot_experts(
                    rows, out / "experts.png", num_heads=best["num_heads"], **fixed
                )
            except ValueError:
                pass
    return {
        "tuner": searcher,
        "hypermodel": hypermodel,
        "rows": rows,
        "best": best,
        "files": files,
    }


def run_paper_protocol(
    dataset,
    directory: str | os.PathLike,
    *,
    space: SearchSpace | None = None,
    max_trials: int | None = None,
    overwrite: bool = False,
    verbose: int = 0,
    notes: Sequence[str] = (),
    summary_only: bool = False,
    **hypermodel_kwargs,
) -> dict:
    """The paper's protocol: heads first (N=1 vs SASRec), then experts.

    Phase `heads` (paper Sec. 5.4, Fig. 5): for every head count `H` of
    `space.heads` that divides the hidden size (and every hidden size,
    block count, dropout and learning rate of `space`), SASRec and FAME
    without MoE (`N = 1`, warm-started from that SASRec, which is trained
    once and reused by both trials).

    Phase `experts` (Sec. 5.6, Fig. 6): FAME with `N` in `space.experts` at
    the best configuration of FAME without MoE (by validation NDCG@20),
    warm-started from the same cached SASRec.

    Args:
        dataset: A `keras_fame.datasets.SequenceDataset`.
        directory: The search folder: projects `heads/` and `experts/`, the
            SASRec cache, `summary.md`, `trials.csv`, `summary.json`,
            `heads.png`, `experts.png`. Rerunning resumes.
        space: `heads`, `experts` and the backbone values (its `models` is
            ignored). Default: the paper's heads and experts, d=64, L=2,
            dropout 0.5, lr 1e-3.
        max_trials: Cap on the trials of each phase (default: all).
        overwrite: Start both phases over (the SASRec cache is kept).
        verbose: Trial verbosity; 2 also shows SASRec pretraining.
        notes: Extra lines for the summary (e.g. the command).
        summary_only: Train nothing: summarise the trials finished so far
            (e.g. of a search stopped before its last trials).
        **hypermodel_kwargs: `FAMEHyperModel` arguments (`epochs`,
            `pretrain_epochs`, `patience`, `max_len`, ...).

    Returns:
        `{"rows", "best_heads", "best_experts", "best", "files",
        "hypermodels", "tuners"}`: the trial rows, the best FAME N=1 row,
        the best row of the experts phase, the best row overall, the
        written files, and the two phases' hypermodels and tuners.
    """
    directory = Path(directory)
    _check_dataset(directory, dataset)
    space = SearchSpace() if space is None else space
    hypermodel_kwargs.setdefault("verbose", 1 if verbose == 2 else 0)
    heads_space = dataclasses.replace(space, models=("sasrec", "fame"), experts=(1,))
    heads_model = FAMEHyperModel(dataset, heads_space, directory, **hypermodel_kwargs)
    heads_tuner = ConfigListSearch(
        heads_model,
        heads_space.grid(),
        max_trials=max_trials,
        seed=heads_model.seed,
        directory=os.fspath(directory),
        project_name="heads",
        overwrite=overwrite,
    )
    if not summary_only:
        heads_tuner.search(epochs=heads_model.epochs, verbose=verbose)
    rows = trial_rows(heads_tuner, phase="heads")
    best_heads = best_row(rows, model="fame")
    if best_heads is None:
        raise RuntimeError(
            "No FAME (N=1) trial of the heads phase completed; see "
            f"{directory / 'heads'} and the failures in the table:\n"
            + markdown_table(rows)
        )

    experts_space = SearchSpace(
        models=("fame",),
        heads=(best_heads["num_heads"],),
        experts=space.experts,
        hidden_dims=(best_heads["hidden_dim"],),
        num_blocks=(best_heads["num_blocks"],),
        dropouts=(best_heads["dropout"],),
        learning_rates=(best_heads["learning_rate"],),
    )
    experts_model = FAMEHyperModel(
        dataset, experts_space, cache=heads_model.cache, **hypermodel_kwargs
    )
    experts_tuner = ConfigListSearch(
        experts_model,
        experts_space.grid(),
        max_trials=max_trials,
        seed=experts_model.seed,
        directory=os.fspath(directory),
        project_name="experts",
        overwrite=overwrite,
    )
    if not summary_only:
        experts_tuner.search(epochs=experts_model.epochs, verbose=verbose)
    expert_rows = trial_rows(experts_tuner, phase="experts")
    rows = rows + expert_rows
    best_experts = best_row(expert_rows)
    best = best_row(rows)

    fixed = {
        k: best_heads[k]
        for k in ("hidden_dim", "num_blocks", "dropout", "learning_rate")
    }
    files = {}
    files["heads.png"] = plot_heads(
        rows,
        directory / "heads.png",
        title=f"{dataset.name}: heads (N=1) vs SASRec",
        **fixed,
    )
    if best_experts is not None:
        files["experts.png"] = plot_experts(
            rows,
            directory / "experts.png",
            num_heads=best_heads["num_heads"],
            title=f"{dataset.name}: experts at H={best_heads['num_heads']}",
            **fixed,
        )
    cache = heads_model.cache
    notes = [
        *notes,
        f"dataset: {dataset.name} ({dataset.num_users} users, {dataset.num_items} items)",
        f"best head count (FAME without MoE, N=1): {_describe(best_heads)}",
        f"best experts at H={best_heads['num_heads']}: {_describe(best_experts)}",
        f"epochs per trial: {heads_model.epochs} (pretraining {heads_model.pretrain_epochs}), "
        f"patience {heads_model.patience}; SASRec trials and FAME warm starts share "
        f"one pretrained SASRec per backbone ({cache.directory.name}/)",
    ]
    if heads_space.excluded():
        notes.append(
            f"excluded (hidden_dim, num_heads) pairs: {heads_space.excluded()}"
        )
    files.update(
        write_summary(
            rows,
            directory,
            title=f"Paper protocol on {dataset.name}: heads, then experts",
            best=best,
            notes=notes,
            extra={"best_heads": best_heads, "best_experts": best_experts},
        )
    )
    return {
        "rows": rows,
        "best_heads": best_heads,
        "best_experts": best_experts,
        "best": best,
        "files": files,
        "hypermodels": (heads_model, experts_model),
        "tuners": (heads_tuner, experts_tuner),
    }


# ---------------------------------------------------------------------- CLI


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from e


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from e


def _rate_or_none(text: str) -> float | None:
    try:
        return parse_rate_or_none(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _option(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    for kind in (int, float):
        try:
            return key, kind(value)
        except ValueError:
            pass
    return key, value


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of `python tuning/search.py`."""
    p = argparse.ArgumentParser(
        prog="python tuning/search.py",
        description=(
            "Search FAME's heads and experts (and optionally hidden size, blocks, "
            "dropout, learning rate) with KerasTuner. Objective: validation NDCG@20 "
            "of the full-ranking evaluation, maximised. Rerun the same command to "
            "resume; finished trials are kept and pretrained SASRec models reused."
        ),
        epilog=(
            "Examples:\n"
            "  python tuning/search.py --protocol paper --dataset beauty "
            "--data-dir ../shared/datasets/amazon --epochs 200 --directory runs/tuning-beauty\n"
            "  python tuning/search.py --tuner bayesian --max-trials 20 --dataset synthetic "
            "--directory runs/tuning-synthetic --epochs 20\n"
            "  python tuning/search.py --protocol paper --dataset synthetic "
            "--dataset-option num_users=300 --dataset-option num_items=80 "
            "--hidden-dims 16 --epochs 3 --directory runs/tuning-tiny"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data = p.add_argument_group("data")
    data.add_argument(
        "--dataset",
        required=True,
        help="synthetic, beauty, sports, toys, ml-1m or ml-20m",
    )
    data.add_argument(
        "--data-dir",
        default=None,
        help="folder with the dataset files (Amazon: Beauty.txt, ...)",
    )
    data.add_argument(
        "--dataset-option",
        type=_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra argument of keras_fame.datasets.load, repeatable (synthetic: num_users=300)",
    )
    run = p.add_argument_group("search")
    run.add_argument(
        "--protocol",
        choices=("paper", "search"),
        default="search",
        help="paper: heads (FAME N=1 vs SASRec), then experts at the best H; "
        "search: one --tuner search over the space (default)",
    )
    run.add_argument(
        "--tuner",
        choices=TUNERS,
        default="bayesian",
        help="tuner of --protocol search (default: bayesian)",
    )
    run.add_argument(
        "--max-trials",
        type=int,
        default=None,
        help="trial budget (default: 20 for bayesian/random, every valid combination for "
        "grid and each paper phase, none for hyperband)",
    )
    run.add_argument(
        "--directory",
        required=True,
        help="search folder (projects, SASRec cache, summary)",
    )
    run.add_argument(
        "--project-name",
        default=None,
        help="KerasTuner project of --protocol search (default: the tuner)",
    )
    run.add_argument(
        "--overwrite", action="store_true", help="start over instead of resuming"
    )
    run.add_argument(
        "--summary-only",
        action="store_true",
        help="--protocol paper: write the summary and plots of the trials "
        "finished so far, train nothing",
    )
    run.add_argument(
        "--hyperband-factor", type=int, default=3, help="Hyperband's reduction factor"
    )
    space = p.add_argument_group("space (comma-separated values; one value = fixed)")
    space.add_argument(
        "--models",
        default="fame",
        help="fame and/or sasrec, for --protocol search (default: fame)",
    )
    space.add_argument(
        "--heads", type=_ints, default=PAPER_HEADS, help="default: 1,2,4,8,16"
    )
    space.add_argument(
        "--experts", type=_ints, default=PAPER_EXPERTS, help="default: 2,4,8,16,32"
    )
    space.add_argument(
        "--hidden-dims", type=_ints, default=(64,), help="default: 64 (paper: 64,128)"
    )
    space.add_argument("--num-blocks", type=_ints, default=(2,), help="default: 2")
    space.add_argument("--dropouts", type=_floats, default=(0.5,), help="default: 0.5")
    space.add_argument(
        "--learning-rates", type=_floats, default=(1e-3,), help="default: 0.001"
    )
    train = p.add_argument_group("training")
    train.add_argument(
        "--epochs",
        type=int,
        default=200,
        help="epochs per trial (Hyperband: max_epochs); default 200",
    )
    train.add_argument(
        "--pretrain-epochs",
        type=int,
        default=None,
        help="SASRec pretraining epochs (default: --epochs)",
    )
    train.add_argument(
        "--patience",
        type=int,
        default=10,
        help="early stopping on validation NDCG@20 (default 10)",
    )
    train.add_argument("--max-len", type=int, default=50)
    train.add_argument("--batch-size", type=int, default=256)
    train.add_argument("--eval-batch-size", type=int, default=1024)
    train.add_argument(
        "--expert-init",
        choices=EXPERT_INITS,
        default="pretrained",
        help="FAME's experts at the warm start: SASRec's query + noise "
        "(default) or random (paper)",
    )
    train.add_argument(
        "--facet-init",
        choices=FACET_INITS,
        default="identity",
        help="W_f of the warm-started FAME: per-head identity (default) or "
        "random (paper)",
    )
    train.add_argument(
        "--no-warm-start",
        action="store_true",
        help="train FAME from scratch (no SASRec pretraining)",
    )
    train.add_argument(
        "--prefixes",
        action=argparse.BooleanOptionalAction,
        default=TrainConfig.prefixes,
        help="one training row per target (prefix sampling) instead of one "
        "row per user (default: TrainConfig's)",
    )
    train.add_argument(
        "--finetune-learning-rate",
        type=float,
        default=TrainConfig.finetune_learning_rate,
        help="Adam's rate of warm-started FAME trials (default: TrainConfig's); "
        "0 for the trial's --learning-rates (the paper)",
    )
    train.add_argument(
        "--finetune-dropout",
        type=_rate_or_none,
        default=TrainConfig.finetune_dropout,
        help="dropout rate of warm-started FAME trials (default: TrainConfig's); "
        "none for the trial's --dropouts (the paper)",
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    return p


def main(argv: Sequence[str] | None = None) -> dict:
    """Runs the command line; returns the result of the protocol or search."""
    args = build_parser().parse_args(argv)
    import keras_fame.datasets

    options = dict(args.dataset_option)
    try:
        dataset = keras_fame.datasets.load(args.dataset, args.data_dir, **options)
    except TypeError as e:
        raise SystemExit(f"--dataset-option: {e}") from e
    space = SearchSpace(
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
        heads=args.heads,
        experts=args.experts,
        hidden_dims=args.hidden_dims,
        num_blocks=args.num_blocks,
        dropouts=args.dropouts,
        learning_rates=args.learning_rates,
    )
    command = "python tuning/search.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    kwargs = dict(
        notes=[f"command: `{command}`"],
        epochs=args.epochs,
        pretrain_epochs=args.pretrain_epochs,
        patience=args.patience,
        max_len=args.max_len,
        batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size,
        expert_init=args.expert_init,
        facet_init=args.facet_init,
        warm_start=not args.no_warm_start,
        prefixes=args.prefixes,
        finetune_learning_rate=args.finetune_learning_rate or None,
        finetune_dropout=args.finetune_dropout,
        seed=args.seed,
    )
    if args.protocol == "paper":
        result = run_paper_protocol(
            dataset,
            args.directory,
            space=space,
            max_trials=args.max_trials,
            overwrite=args.overwrite,
            summary_only=args.summary_only,
            verbose=args.verbose,
            **kwargs,
        )
    else:
        result = run_search(
            dataset,
            args.directory,
            tuner=args.tuner,
            space=space,
            max_trials=args.max_trials,
            project_name=args.project_name,
            overwrite=args.overwrite,
            hyperband_factor=args.hyperband_factor,
            verbose=args.verbose,
            **kwargs,
        )
    print()
    print(markdown_table(result["rows"]))
    print(f"Best: {_describe(result['best'])}")
    for name, path in result["files"].items():
        print(f"wrote {name}: {path}")
    return result


if __name__ == "__main__":
    main()
