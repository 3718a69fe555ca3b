"""`benchmarks/summarize.py`: the seed table over committed records."""

import json
from pathlib import Path

from keras_fame.training import METRICS
from tests.reference import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "summarize.py"


def _summarize():
    return load_script(SCRIPT)


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


def test_versus_paper_averages_seeds_and_divides_by_the_paper_row(tmp_path):
    paper = {m: 0.5 for m in METRICS}
    for name, seed, value in (("a", 0, 0.2), ("b", 1, 0.4), ("c", 0, 0.6)):
        record = {
            "seed": seed,
            "test": {m: value for m in METRICS},
            "paper_test": paper,
        }
        record["test"]["NDCG@20"] = value / 2
        (tmp_path / f"{name}.json").write_text(json.dumps(record))
    groups = (("toys", "default", ("b.json", "a.json")), ("toys", "x", ("c.json",)))
    rows = _summarize().versus_paper(tmp_path, groups).splitlines()
    # Mean of 0.2 and 0.4 is 0.3 (60% of 0.5); NDCG@20's is 0.15 (30%).
    assert rows[2] == (
        "| toys | default | 0, 1 | " + ".3000 | " * 5 + ".1500 | 30.0-60.0 |"
    )
    assert rows[3] == "| toys | x | 0 | " + ".6000 | " * 5 + ".3000 | 60.0-120.0 |"
    # One paper row per dataset, after its last group.
    assert rows[4] == "| toys | paper | | " + ".5000 | " * 6 + "|"
    assert len(rows) == 5


def test_versus_paper_reads_the_committed_records():
    module = _summarize()
    rows = module.versus_paper().splitlines()
    datasets = {group[0] for group in module.VERSUS_PAPER}
    assert len(rows) == 2 + len(module.VERSUS_PAPER) + len(datasets)
