"""The `keras-fame` command line: your log in, served recommendations out.

    keras-fame describe LOG [column flags]
    keras-fame train LOG --workdir DIR [column flags] [--attributes JSON] [config]
    keras-fame train --dataset synthetic --workdir DIR [config]
    keras-fame evaluate DIR
    keras-fame recommend DIR --history "id id id" [-k 10] [--explain]
    keras-fame export DIR BASE_DIR [--name fame] [--version N] [--k 10]

`train` runs the two-stage recipe (`keras_fame.training.two_stage`) in `DIR`
and writes nothing outside it; rerun the same command to resume. `DIR` keeps
how the log was read (`source.json`), so `evaluate` reads it again the same
way; `recommend` and `export` need only the folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

# The recipe's own readers and writers of a work folder's files (errors name
# the file; writes are atomic).
from keras_fame.training import _load_model, _read_json, _write_json

_SOURCE_FILE = "source.json"
_STAGES = ("sasrec", "fame")


class CommandError(Exception):
    """An error the command line reports as `keras-fame: error: ...`."""


# ------------------------------------------------------------------- parsing


def _first_sentence(text: str) -> str:
    """A field's description up to its first `. ` or `; ` outside brackets
    and backticks, without an `Experimental: ` prefix (escaped for argparse)."""
    text = " ".join(text.split()).removeprefix("Experimental: ")
    depth, quoted = 0, False
    for index, char in enumerate(text):
        if char == "`":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth = max(depth - 1, 0)
        elif (
            not quoted
            and depth == 0
            and char in ".;"
            and text[index + 1 : index + 2] == " "
            and not text[:index].endswith(("Eq", "Sec", "e.g", "i.e"))
        ):
            text = text[:index]
            break
    return text.rstrip(".").replace("%", "%%")


def _or_none(kind):
    def parse(text):
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = f"{kind.__name__} or none"  # argparse's error names it
    return parse


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One `--field-name` flag per `TrainConfig` field, defaults unset.

    Only the flags given are applied, so that a resumed run keeps the rest.
    """
    from keras_fame.config import (
        EXPERIMENTAL_FIELDS,
        TrainConfig,
        config_choices,
        config_help,
    )

    docs, choices = config_help(), config_choices()
    defaults = TrainConfig()
    main_group = parser.add_argument_group(
        "training (keras_fame.config.TrainConfig; default in brackets)"
    )
    experimental = parser.add_argument_group(
        "experimental training options (may be removed in a later version)"
    )
    for field in dataclasses.fields(TrainConfig):
        group = experimental if field.name in EXPERIMENTAL_FIELDS else main_group
        value = getattr(defaults, field.name)
        flag = "--" + field.name.replace("_", "-")
        text = f"{_first_sentence(docs.get(field.name, ''))} [{value}]"
        if field.type == "bool":
            group.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=text
            )
            continue
        kind = {"int": int, "float": float, "str": str}[field.type.split(" | ")[0]]
        if field.type.endswith(" | None"):
            kind = _or_none(kind)
        group.add_argument(
            flag,
            type=kind,
            default=None,
            choices=choices.get(field.name),
            metavar=field.name.upper(),
            help=text,
        )


def _add_log_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("reading the log")
    group.add_argument("--user-col", default="user_id", help="user id column [user_id]")
    group.add_argument("--item-col", default="item_id", help="item id column [item_id]")
    group.add_argument(
        "--time-col", default="timestamp", help="timestamp column [timestamp]"
    )
    group.add_argument(
        "--no-time",
        action="store_true",
        help="the log has no time column: its row order is the time order",
    )
    group.add_argument("--sep", default=None, help="field separator of a text file")
    group.add_argument(
        "--format",
        dest="file_format",
        choices=("csv", "tsv", "parquet"),
        default=None,
        help="file format, if the suffix does not say",
    )
    group.add_argument(
        "--id-type",
        choices=("auto", "int", "str"),
        default="auto",
        help="how ids are read [auto: integers if all are integers]",
    )
    group.add_argument(
        "--min-count",
        type=_or_none(int),
        default=5,
        metavar="K",
        help="k-core: keep users and items with at least K actions; none: off [5]",
    )
    group.add_argument(
        "--duplicates",
        choices=("drop_exact", "keep", "drop_consecutive", "keep_first"),
        default="drop_exact",
        help="repeated (user, item) actions [drop_exact: same time]",
    )


def build_parser() -> argparse.ArgumentParser:
    """The `keras-fame` argument parser (one sub-command per task)."""
    parser = argparse.ArgumentParser(
        prog="keras-fame",
        description="Train, evaluate and serve FAME sequential recommenders.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    describe = commands.add_parser(
        "describe",
        help="what a log holds and what preprocessing would drop",
        description="Reads LOG and prints users, items, actions, history "
        "lengths and what de-duplication and the k-core filter drop.",
    )
    describe.add_argument("log", metavar="LOG", help="CSV, TSV or Parquet log")
    _add_log_flags(describe)

    train = commands.add_parser(
        "train",
        help="train SASRec then FAME on a log (resumable)",
        description="Runs the two-stage recipe on LOG in DIR; rerun the same "
        "command to resume. Writes only under DIR.",
    )
    train.add_argument("log", metavar="LOG", nargs="?", help="CSV, TSV or Parquet log")
    train.add_argument(
        "--dataset",
        default=None,
        help="a built-in dataset instead of LOG (synthetic, beauty, sports, toys, ...)",
    )
    train.add_argument(
        "--data-dir", default=None, help="local folder of a built-in dataset's files"
    )
    train.add_argument("--workdir", required=True, metavar="DIR", help="work folder")
    train.add_argument(
        "--attributes",
        default=None,
        metavar="JSON",
        help="item attributes: a JSON object item id -> list of attribute ids",
    )
    train.add_argument(
        "--verbose", type=int, choices=(0, 1, 2), default=1, help="Keras verbosity [1]"
    )
    _add_log_flags(train)
    add_config_flags(train)

    evaluate = commands.add_parser(
        "evaluate",
        help="full-ranking metrics of a folder's models",
        description="Reads the folder's data again and prints validation and "
        "test metrics (full ranking, history excluded) of SASRec and FAME.",
    )
    evaluate.add_argument("workdir", metavar="DIR", help="a `train` work folder")

    recommend = commands.add_parser(
        "recommend",
        help="top-k items after a history, in your item ids",
        description="Prints the top-k items after a history, in your ids.",
    )
    recommend.add_argument("workdir", metavar="DIR", help="a `train` work folder")
    recommend.add_argument(
        "--history",
        required=True,
        action="append",
        help='item ids separated by spaces, oldest first ("sku1 sku7"); '
        "repeat for more users",
    )
    recommend.add_argument("-k", type=int, default=10, help="list length [10]")
    recommend.add_argument(
        "--model", choices=_STAGES, default="fame", help="which model [fame]"
    )
    recommend.add_argument(
        "--explain", action="store_true", help="also each head's list and the gate"
    )
    recommend.add_argument("--json", action="store_true", help="print JSON")

    export = commands.add_parser(
        "export",
        help="write the folder's FAME for TF Serving",
        description="Writes the folder's model as BASE_DIR/NAME/VERSION, the "
        "layout TF Serving watches.",
    )
    export.add_argument("workdir", metavar="DIR", help="a `train` work folder")
    export.add_argument("base_dir", metavar="BASE_DIR", help="export base folder")
    export.add_argument("--name", default="fame", help="model name [fame]")
    export.add_argument(
        "--version", type=int, default=None, help="version [next free number]"
    )
    export.add_argument("--k", type=int, default=10, help="top-k list length [10]")
    export.add_argument(
        "--model", choices=_STAGES, default="fame", help="which model [fame]"
    )
    export.add_argument(
        "--overwrite", action="store_true", help="replace an existing version"
    )
    return parser


# ------------------------------------------------------------------ commands


def _log_options(args) -> dict:
    return {
        "user_col": args.user_col,
        "item_col": args.item_col,
        "time_col": None if args.no_time else args.time_col,
        "sep": args.sep,
        "file_format": args.file_format,
        "id_type": args.id_type,
        "min_count": args.min_count,
        "duplicates": args.duplicates,
    }


def _read_source(source: dict):
    """The dataset a `source.json` record describes."""
    from keras_fame import datasets

    if source.get("dataset"):
        return datasets.load(source["dataset"], data_dir=source.get("data_dir"))
    attributes = None
    if source.get("attributes"):
        attributes = datasets.read_item_attributes(source["attributes"])
    options = dict(source["options"])
    return datasets.from_interactions(
        source["log"],
        options.pop("user_col"),
        options.pop("item_col"),
        options.pop("time_col"),
        options.pop("min_count"),
        item_attributes=attributes,
        **options,
    )


def _describe(args) -> int:
    data = _read_source({"log": args.log, "options": _log_options(args)})
    print(data.report)
    stats = data.describe()
    print(
        f"kept: {stats['users']:,} users, {stats['items']:,} items, "
        f"{stats['actions']:,} actions; history length min {stats['min_length']}, "
        f"median {stats['median_length']:g}, mean {stats['avg_length']:.1f}, "
        f"max {stats['max_length']}; density {stats['density']:.2e}"
    )
    return 0


def _config(args, workdir: Path):
    from keras_fame.config import TrainConfig
    from keras_fame.config_records import config_from_record

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    config_path = workdir / "config.json"
    base = TrainConfig()
    if config_path.exists():
        # Resuming: start from the folder's configuration; flags given must
        # agree with it (two_stage refuses a different one, naming it).
        try:
            base = config_from_record(_read_json(config_path, workdir))
        except TypeError as error:
            raise CommandError(f"{config_path}: unreadable ({error})") from None
    try:
        return dataclasses.replace(base, **given)
    except ValueError as error:
        raise CommandError(str(error)) from None


def _print_table(results: dict) -> None:
    from keras_fame.training import METRICS

    print(f"{'':14s}" + "".join(f"{m:>9s}" for m in METRICS))
    for model, result in results.items():
        for split in ("valid", "test"):
            row = result[split]
            print(
                f"{model + ' ' + split:14s}"
                + "".join(f"{row[m]:9.4f}" for m in METRICS)
            )


def _train(args) -> int:
    from keras_fame.training import two_stage

    if (args.log is None) == (args.dataset is None):
        raise CommandError("give either LOG or --dataset NAME (not both)")
    workdir = Path(args.workdir)
    if args.dataset is not None:
        source = {"dataset": args.dataset, "data_dir": args.data_dir}
    else:
        log = Path(args.log)
        if not log.is_file():
            raise CommandError(f"LOG: no such file: {log}")
        source = {
            "log": str(log.resolve()),
            "options": _log_options(args),
            "attributes": str(Path(args.attributes).resolve())
            if args.attributes
            else None,
        }
    source_path = workdir / _SOURCE_FILE
    if source_path.exists():
        previous = _read_json(source_path, workdir)
        if previous != source:
            raise CommandError(
                f"{workdir} was made from {json.dumps(previous)}, not "
                f"{json.dumps(source)}; use another --workdir, or delete "
                f"{workdir} to start over."
            )
    config = _config(args, workdir)
    data = _read_source(source)
    print(f"{data!r}")
    if getattr(data, "report", None) is not None:
        print(data.report)
    workdir.mkdir(parents=True, exist_ok=True)
    if not source_path.exists():
        _write_json(source_path, source)
    runs = two_stage(
        data, config, workdir, verbose=args.verbose, vocabulary=args.log is not None
    )
    print("\nfull ranking, history excluded:")
    _print_table({name: runs[name][1] for name in _STAGES})
    return 0


def _finished_model(workdir: Path, stage: str):
    """A finished stage's model, with the folder's vocabulary attached."""
    from keras_fame.datasets import Vocabulary

    path = workdir / stage / "model.keras"
    if not (workdir / stage / "results.json").exists() or not path.exists():
        raise CommandError(
            f"{workdir}: stage {stage!r} has not finished (no {path}); run "
            f"`keras-fame train ... --workdir {workdir}` first."
        )
    model = _load_model(path, workdir / stage)
    vocabulary_path = workdir / "vocabulary.json"
    if model.vocabulary is None and vocabulary_path.exists():
        model.set_vocabulary(Vocabulary.load(vocabulary_path))
    return model


def _evaluate(args) -> int:
    from keras_fame.config_records import config_from_record
    from keras_fame.training import evaluate_splits

    workdir = Path(args.workdir)
    source_path = workdir / _SOURCE_FILE
    if not source_path.exists():
        raise CommandError(
            f"{workdir}: no {_SOURCE_FILE} (not a `keras-fame train` folder, or "
            "training has not started)"
        )
    data = _read_source(_read_json(source_path, workdir))
    recorded = _read_json(workdir / "data.json", workdir)
    if recorded != data.fingerprint():
        raise CommandError(
            f"{source_path} now reads other data than the folder was trained "
            f"on ({workdir / 'data.json'}): the log changed."
        )
    config = config_from_record(_read_json(workdir / "config.json", workdir))
    results = {}
    for stage in _STAGES:
        model = _finished_model(workdir, stage)
        results[stage] = evaluate_splits(model, data, config)
    _print_table(results)
    return 0


def _recommend(args) -> int:
    import numpy as np

    workdir = Path(args.workdir)
    model = _finished_model(workdir, args.model)
    if model.vocabulary is None:
        raise CommandError(f"{workdir}: no vocabulary.json and none in the model")
    histories = args.history
    _, unknown = model.encode_histories(histories)
    if args.explain:
        if args.model != "fame":
            raise CommandError("--explain needs --model fame")
        report = model.explain(histories, k=args.k)
        ids, scores = report["top_ids"], report["top_scores"]
    else:
        ids, scores = model.recommend(histories, k=args.k)
    answers = []
    for row, history in enumerate(histories):
        answer = {
            "history": history,
            "unknown": int(unknown[row]),
            "item_ids": [None if v is None else str(v) for v in ids[row].tolist()],
            "scores": [float(v) for v in np.asarray(scores[row], "float64")],
        }
        if args.explain:
            answer["gate"] = [float(v) for v in report["gate"][row]]
            answer["heads"] = [
                [str(v) for v in head.tolist()] for head in report["head_top_ids"][row]
            ]
        answers.append(answer)
    if args.json:
        print(json.dumps(answers, indent=2))
        return 0
    for answer in answers:
        print(
            f"history: {answer['history']}  ({answer['unknown']} unknown ids dropped)"
        )
        for rank, (item, score) in enumerate(
            zip(answer["item_ids"], answer["scores"], strict=True), start=1
        ):
            print(f"  {rank:3d}. {item}  {score:.4f}")
        if args.explain:
            for head, (weight, items) in enumerate(
                zip(answer["gate"], answer["heads"], strict=True)
            ):
                print(f"  head {head} (gate {weight:.3f}): {' '.join(items)}")
    return 0


def _export(args) -> int:
    from keras_fame.export import export_for_serving

    workdir = Path(args.workdir)
    model = _finished_model(workdir, args.model)
    path = export_for_serving(
        model,
        args.base_dir,
        name=args.name,
        version=args.version,
        k=args.k,
        overwrite=args.overwrite,
    )
    print(path)
    return 0


_COMMANDS = {
    "describe": _describe,
    "train": _train,
    "evaluate": _evaluate,
    "recommend": _recommend,
    "export": _export,
}


def main(argv=None) -> int:
    """Runs `keras-fame` with `argv` (default: `sys.argv[1:]`); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except CommandError as error:
        parser.exit(2, f"keras-fame {args.command}: error: {error}\n")
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        parser.exit(2, f"keras-fame {args.command}: error: {_as_flags(error)}\n")


def _as_flags(error: Exception) -> str:
    """The library's message with its argument names written as this CLI's flags."""
    text = str(error)
    for name in ("user_col", "item_col", "time_col", "min_count", "id_type", "sep"):
        flag = "--" + name.replace("_", "-")
        text = text.replace(f"argument `{name}`", f"flag {flag}")
        text = text.replace(f"`{name}`", f"`{flag}`")
    return text


if __name__ == "__main__":
    sys.exit(main())
