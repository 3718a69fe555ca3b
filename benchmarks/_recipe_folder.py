"""What the benchmarks that start from a recipe work folder share.

A recipe work folder is what `examples/train_sports.py --workdir W` leaves:
`W/config.json` (the run's `TrainConfig`) and `W/sasrec/model.keras` (the
finished SASRec stage), among the stages' other files.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def parser(description: str) -> argparse.ArgumentParser:
    """A command line with `--dataset`, `--data-dir`, `--workdir` and `--out`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--workdir", required=True, help="a recipe work folder with a finished SASRec"
    )
    parser.add_argument("--out", required=True, help="where to write the record")
    return parser


def files(workdir) -> tuple[Path, Path]:
    """`(config.json, sasrec/model.keras)` of `workdir`; `SystemExit` naming
    the first one missing."""
    workdir = Path(workdir)
    paths = (workdir / "config.json", workdir / "sasrec" / "model.keras")
    for path in paths:
        if not path.exists():
            raise SystemExit(
                f"--workdir {workdir}: {path} does not exist; run "
                "examples/train_sports.py with this --workdir first."
            )
    return paths


def save(out, record: dict, script: str, argv, commit: str) -> dict:
    """`record` with its provenance (`commit`, `machine`, the `command` that
    made it, `date`), written as JSON to `out` and returned."""
    import json
    import time

    from keras_fame.provenance import machine_description

    record = {
        **record,
        "commit": commit,
        "machine": machine_description(),
        "command": f"python benchmarks/{script} " + " ".join(argv),
        "date": time.strftime("%Y-%m-%d"),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"saved {out}")
    return record
