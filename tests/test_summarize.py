"""`benchmarks/summarize.py`: the seed table over committed records."""

import importlib.util
import json
from pathlib import Path

from keras_fame.training import METRICS

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "summarize.py"


def _summarize():
    spec = importlib.util.spec_from_file_location("summarize", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record(folder, name, seed, value):
    folder.mkdir(parents=True, exist_ok=True)
    dataset, model = name.split("-")[:2]
    record = {
        "dataset": dataset,
        "model": model,
        "seed": seed,
        "test": {m: value for m in METRICS},
        "valid": {m: value / 2 for m in METRICS},
    }
    (folder / f"{name}.json").write_text(json.dumps(record))


def test_seed_table_averages_the_canonical_and_other_seeds(tmp_path):
    _record(tmp_path, "toys-fame", 0, 0.1)
    _record(tmp_path / "seeds" / "seed2", "toys-fame", 2, 0.4)
    _record(tmp_path / "seeds" / "seed1", "toys-fame", 1, 0.1)
    _record(tmp_path, "toys-fame-tuned", 0, 0.9)  # not a seed of the recipe
    _record(tmp_path, "beauty-sasrec", 0, 0.3)  # one seed only: no row
    rows = _summarize().seed_table(tmp_path).splitlines()
    assert len(rows) == 3
    # (0.1 + 0.1 + 0.4) / 3 = 0.2; validation is half of it.
    assert rows[2] == (
        "| toys | fame | 0,1,2 | "
        + " | ".join(["0.2000 (0.1000-0.4000)"] * 6)
        + " | 0.1000 (0.0500-0.2000) |"
    )
