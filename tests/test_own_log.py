"""Your log in, your ids out: `keras-fame train` / `export` / `recommend` on a
CSV with string item ids, served in a process that cannot import keras_fame."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from keras_fame import cli
from keras_fame.datasets import Vocabulary

TINY = [
    "--hidden-dim", "16", "--num-blocks", "1", "--num-heads", "2",
    "--num-experts", "2", "--max-len", "8", "--batch-size", "32",
    "--pretrain-epochs", "1", "--finetune-epochs", "1", "--eval-batch-size", "64",
    "--backup-every", "5", "--verbose", "0",
]  # fmt: skip
K = 5


def _write_log(path):
    rng = np.random.default_rng(0)
    rows = []
    for user in range(60):
        items = rng.choice(30, size=rng.integers(6, 10), replace=False)
        rows += [
            (f"u{user}", f"sku-{i:02d}", 100 * user + t) for t, i in enumerate(items)
        ]
    rows.append(("u0", "sku-once", 99))  # an item seen once: under the 5-core
    rows += [("u1", "sku-03", 5000)] * 2  # exact duplicates: one is dropped
    rows += [("shy", "sku-01", 1), ("shy", "sku-02", 2)]  # a user under the 5-core
    with open(path, "w") as file:
        file.write("user,sku,ts\n")
        file.writelines(f"{u},{i},{t}\n" for u, i, t in rows)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("own_log")
    log, workdir, base = root / "log.csv", root / "run", root / "serving"
    _write_log(log)
    columns = ["--user-col", "user", "--item-col", "sku", "--time-col", "ts"]
    assert (
        cli.main(["train", str(log), "--workdir", str(workdir), *columns, *TINY]) == 0
    )
    assert cli.main(["export", str(workdir), str(base), "--k", str(K)]) == 0
    return {
        "log": log,
        "workdir": workdir,
        "export": base / "fame" / "1",
        "columns": columns,
    }


def test_describe_reports_what_preprocessing_drops(tmp_path, capsys):
    _write_log(tmp_path / "log.csv")
    code = cli.main(
        ["describe", str(tmp_path / "log.csv"), "--user-col", "user",
         "--item-col", "sku", "--time-col", "ts"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "duplicate" in out and "k-core" in out
    assert "kept: 60 users, 30 items" in out


def test_train_writes_only_its_folder_and_keeps_the_vocabulary(trained):
    workdir = trained["workdir"]
    vocabulary = Vocabulary.load(workdir / "vocabulary.json")
    assert sorted(vocabulary.texts) == [f"sku-{i:02d}" for i in range(30)]
    assert "sku-once" not in vocabulary.texts
    assert sorted(os.listdir(trained["log"].parent)) == ["log.csv", "run", "serving"]
    source = json.loads((workdir / "source.json").read_text())
    assert source["options"]["item_col"] == "sku"


FRESH = textwrap.dedent(
    """
    import importlib.abc, json, sys

    import tensorflow as tf

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("keras_fame", "keras"):
                raise ImportError(f"{name} must not be needed to serve")

    # TensorFlow itself peeks at keras while it is imported; serving may not.
    sys.meta_path.insert(0, Refuse())
    assert not [m for m in sys.modules if m.split(".")[0] == "keras_fame"]

    served = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
    out = served(history=tf.constant(json.loads(sys.argv[2])))
    print("OUT" + json.dumps({
        "item_ids": [[v.decode() for v in row] for row in out["item_ids"].numpy()],
        "scores": out["scores"].numpy().tolist(),
        "unknown": out["unknown"].numpy().tolist(),
        "dtypes": {k: v.dtype.name for k, v in out.items()},
    }))
    """
)


def test_served_model_speaks_the_users_ids_in_a_fresh_process(trained, tmp_path):
    vocabulary = Vocabulary.load(trained["workdir"] / "vocabulary.json")
    histories = [
        "sku-01 sku-02 sku-03 sku-04 sku-05 sku-06 sku-07 sku-08 sku-09 sku-10",
        "sku-07 not-an-item sku-11",
        "sku-12",
        "",
    ]
    script = tmp_path / "serve.py"
    script.write_text(FRESH)
    result = subprocess.run(
        [sys.executable, str(script), str(trained["export"]), json.dumps(histories)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.split("OUT", 1)[1])
    assert out["dtypes"] == {
        "item_ids": "string",
        "scores": "float32",
        "unknown": "int32",
    }
    assert out["unknown"] == [0, 1, 0, 0]
    for history, ids, scores in zip(
        histories, out["item_ids"], out["scores"], strict=True
    ):
        assert len(ids) == K and len(set(ids)) == K
        assert set(ids) <= set(vocabulary.texts)
        assert not set(ids) & set(history.split())
        assert scores == sorted(scores, reverse=True)

    # `keras-fame recommend` on the folder gives the same lists.
    import io
    from contextlib import redirect_stdout

    buffer = io.StringIO()
    args = ["recommend", str(trained["workdir"]), "-k", str(K), "--json"]
    for history in histories:
        args += ["--history", history]
    with redirect_stdout(buffer):
        assert cli.main(args) == 0
    answers = json.loads(buffer.getvalue())
    assert [a["item_ids"] for a in answers] == out["item_ids"]
    assert [a["unknown"] for a in answers] == out["unknown"]
    np.testing.assert_allclose(
        [a["scores"] for a in answers], out["scores"], rtol=1e-5, atol=1e-6
    )


def test_rest_row_and_columnar_forms(trained):
    from keras_fame.serving_rest import rest_predict

    rows = ["sku-01 sku-02 sku-03", "sku-04 nope"]
    by_row = rest_predict(str(trained["export"]), {"instances": rows})
    by_column = rest_predict(str(trained["export"]), {"inputs": rows})
    predictions = by_row["predictions"]
    assert [p["unknown"] for p in predictions] == [0, 1]
    assert [p["item_ids"] for p in predictions] == by_column["outputs"]["item_ids"]
    for prediction, history in zip(predictions, rows, strict=True):
        assert len(prediction["item_ids"]) == K
        assert not set(prediction["item_ids"]) & set(history.split())
    ids = rest_predict(
        str(trained["export"]),
        {"signature_name": "recommend_ids", "instances": [[0, 1, 2]]},
    )
    assert len(ids["predictions"][0]["top_k_ids"]) == K


def test_rerun_resumes_and_other_log_is_refused(trained, tmp_path, capsys):
    workdir = trained["workdir"]
    args = [
        "train",
        str(trained["log"]),
        "--workdir",
        str(workdir),
        *trained["columns"],
        *TINY,
    ]
    assert cli.main(args) == 0  # finished: reloads, trains nothing
    other = tmp_path / "other.csv"
    _write_log(other)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(
            ["train", str(other), "--workdir", str(workdir), *trained["columns"], *TINY]
        )
    assert exit_info.value.code == 2
    assert "was made from" in capsys.readouterr().err


def test_cli_errors_name_the_flag_or_file(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(
            ["train", str(tmp_path / "missing.csv"), "--workdir", str(tmp_path / "w")]
        )
    assert "missing.csv" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["recommend", str(tmp_path), "--history", "a"])
    assert "has not finished" in capsys.readouterr().err
    _write_log(tmp_path / "log.csv")
    with pytest.raises(SystemExit):
        cli.main(
            ["describe", str(tmp_path / "log.csv"), "--user-col", "user",
             "--item-col", "nope", "--time-col", "ts"]
        )  # fmt: skip
    err = capsys.readouterr().err
    assert "'nope'" in err and "--item-col" in err and "log.csv" in err


def test_evaluate_prints_the_folders_metrics(trained, capsys):
    capsys.readouterr()
    assert cli.main(["evaluate", str(trained["workdir"])]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    for stage in ("sasrec", "fame"):
        results = json.loads((trained["workdir"] / stage / "results.json").read_text())
        for split in ("valid", "test"):
            row = next(line for line in lines if line.startswith(f"{stage} {split}"))
            values = [float(v) for v in row.split()[2:]]
            expected = [results[split][metric] for metric in header]
            np.testing.assert_allclose(values, expected, atol=5e-5)


def test_the_own_log_example_serves_skus(tmp_path):
    from tests.reference import load_script

    root = Path(__file__).resolve().parents[1]
    example = load_script(root / "examples" / "own_log.py")
    _, out = example.main(["--workdir", str(tmp_path), "--epochs", "1"])
    names = [[v.decode() for v in row] for row in out["item_ids"].numpy()]
    assert all(len(row) == 5 and all(v.startswith("sku-") for v in row) for row in names)
    assert out["unknown"].numpy().tolist() == [0, 1]
