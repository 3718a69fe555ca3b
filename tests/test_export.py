"""SavedModel export for TF Serving: layout, signatures, robustness, REST."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from keras_fame import export
from keras_fame.export import export_for_serving, saved_model_op_types
from keras_fame.models import FAME, SASRec
from keras_fame.serving_rest import (
    outputs_to_rest_response,
    rest_predict,
    rest_request_to_inputs,
)

NUM_ITEMS = 30
MAX_LEN = 8
K = 5
KWARGS = dict(
    num_items=NUM_ITEMS, max_len=MAX_LEN, hidden_dim=16, num_heads=2, dropout=0.0
)


def _histories():
    """Left-padded histories shorter than, equal to and longer than max_len."""
    rng = np.random.default_rng(7)
    ids = rng.integers(1, NUM_ITEMS + 1, size=(5, 2 * MAX_LEN)).astype("int32")
    for row, length in enumerate([1, 3, MAX_LEN, MAX_LEN + 2, 2 * MAX_LEN]):
        ids[row, : 2 * MAX_LEN - length] = 0
    return ids


@pytest.fixture(scope="module")
def models():
    keras.utils.set_random_seed(1234)
    return {
        "sasrec": SASRec(**KWARGS),
        "fame": FAME(num_experts=3, **KWARGS),
    }


@pytest.fixture(scope="module")
def tiny():
    """A one-block SASRec: the fastest model to export."""
    keras.utils.set_random_seed(1)
    return SASRec(NUM_ITEMS, max_len=4, hidden_dim=8, num_heads=1, num_blocks=1)


@pytest.fixture(scope="module")
def exported(models, tmp_path_factory):
    base = tmp_path_factory.mktemp("exports")
    paths = {
        key: export_for_serving(model, base, name=key, k=K)
        for key, model in models.items()
    }
    loaded = {key: tf.saved_model.load(path) for key, path in paths.items()}
    return base, paths, loaded


def _serve(loaded, item_ids, signature="serving_default"):
    function = loaded.signatures[signature]
    outputs = function(item_ids=tf.constant(np.asarray(item_ids, "int32")))
    return {key: value.numpy() for key, value in outputs.items()}


# ---------------------------------------------------------------- layout


def test_layout_metadata_and_no_leftovers(exported):
    base, paths, _ = exported
    for key, path in paths.items():
        assert path == os.path.join(str(base), key, "1")
        assert sorted(os.listdir(os.path.dirname(path))) == ["1"]
        assert os.path.isfile(os.path.join(path, "saved_model.pb"))
        assert os.path.isdir(os.path.join(path, "variables"))
        with open(os.path.join(path, "assets.extra", "keras_fame_export.json")) as f:
            metadata = json.load(f)
        assert metadata["k"] == K
        assert metadata["num_items"] == NUM_ITEMS
        assert metadata["model"] == {"sasrec": "SASRec", "fame": "FAME"}[key]
        default = metadata["signatures"]["serving_default"]
        assert default["inputs"] == {
            "item_ids": {"dtype": "int32", "shape": [None, None]}
        }
        assert default["outputs"]["top_k_ids"] == {"dtype": "int32", "shape": [None, K]}


def test_versions_are_never_overwritten_unless_asked(tiny, tmp_path):
    model = tiny
    first = export_for_serving(model, tmp_path, name="m", k=3, verify=False)
    second = export_for_serving(model, tmp_path, name="m", k=4, verify=False)
    assert (Path(first).name, Path(second).name) == ("1", "2")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_for_serving(model, tmp_path, name="m", version=1, verify=False)
    third = export_for_serving(model, tmp_path, name="m", version=7, verify=False)
    assert Path(third).name == "7"
    assert Path(export_for_serving(model, tmp_path, name="m", verify=False)).name == "8"
    export_for_serving(model, tmp_path, name="m", version=1, k=6, overwrite=True)
    metadata = json.loads(
        (Path(first) / "assets.extra" / "keras_fame_export.json").read_text()
    )
    assert metadata["k"] == 6
    assert sorted(os.listdir(tmp_path / "m")) == ["1", "2", "7", "8"]


def test_failed_export_publishes_nothing(tiny, tmp_path, monkeypatch):
    model = tiny
    export_for_serving(model, tmp_path, name="m", verify=False)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    # The SavedModel is fully written, the metadata fails: no version appears.
    monkeypatch.setattr(export, "_write_metadata", fail)
    with pytest.raises(OSError, match="disk full"):
        export_for_serving(model, tmp_path, name="m")
    assert sorted(os.listdir(tmp_path / "m")) == ["1"]

    def disagree(*args, **kwargs):
        raise RuntimeError("Verification failed")

    # A failed verification keeps the old version in place, even with overwrite.
    monkeypatch.undo()
    monkeypatch.setattr(export, "_verify_export", disagree)
    with pytest.raises(RuntimeError, match="Verification failed"):
        export_for_serving(model, tmp_path, name="m", version=1, overwrite=True)
    assert sorted(os.listdir(tmp_path / "m")) == ["1"]
    assert os.path.isfile(tmp_path / "m" / "1" / "saved_model.pb")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(k=0), ValueError, "`k` must be a positive integer"),
        (dict(k=NUM_ITEMS + 1), ValueError, "`k` must be at most"),
        (dict(version=0), ValueError, "`version`"),
        (dict(version="2"), ValueError, "`version`"),
        (dict(name="../up"), ValueError, "`name`"),
        (dict(name=""), ValueError, "`name`"),
    ],
)
def test_argument_errors(tiny, tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        export_for_serving(tiny, tmp_path, **kwargs)
    assert os.listdir(tmp_path) == []


def test_rejects_non_model(tmp_path):
    with pytest.raises(TypeError, match="`model` must be"):
        export_for_serving(keras.Sequential([keras.layers.Dense(2)]), tmp_path)


# ------------------------------------------------------------ signatures


def test_signature_names_dtypes_and_shapes(exported):
    _, _, loaded = exported
    assert set(loaded["sasrec"].signatures) == {"serving_default", "score"}
    assert set(loaded["fame"].signatures) == {"serving_default", "score", "facets"}
    expected = {
        "serving_default": {
            "top_k_ids": (tf.int32, [None, K]),
            "top_k_scores": (tf.float32, [None, K]),
        },
        "score": {"scores": (tf.float32, [None, NUM_ITEMS + 1])},
        "facets": {
            "gate": (tf.float32, [None, 2]),
            "routing": (tf.float32, [None, 2, 3]),
        },
    }
    for name, function in loaded["fame"].signatures.items():
        (spec,) = function.structured_input_signature[1].values()
        assert function.structured_input_signature[1] == {"item_ids": spec}
        assert spec.dtype == tf.int32 and spec.shape.as_list() == [None, None]
        outputs = {
            key: (value.dtype, value.shape.as_list())
            for key, value in function.structured_outputs.items()
        }
        assert outputs == expected[name]


@pytest.mark.parametrize("key", ["sasrec", "fame"])
def test_signatures_match_the_model(models, exported, key):
    model, loaded = models[key], exported[2][key]
    histories = _histories()
    served = _serve(loaded, histories)
    ids, scores = model.recommend(histories, k=K)
    np.testing.assert_array_equal(served["top_k_ids"], ids)
    np.testing.assert_allclose(served["top_k_scores"], scores, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        _serve(loaded, histories, "score")["scores"],
        ops.convert_to_numpy(model.score(histories)),
        rtol=1e-5,
        atol=1e-5,
    )
    if key == "fame":
        facets = _serve(loaded, histories, "facets")
        expected = model.facet_weights(histories)
        for name in ("gate", "routing"):
            np.testing.assert_allclose(facets[name], expected[name], atol=1e-5)


def test_long_history_is_excluded_whole(models, exported):
    # 25 distinct items in a history 6 * max_len long: only 5 items are unseen,
    # and the context holds the last 8. Every seen item is excluded, the 5 unseen ones
    # fill the list, and the empty slots say -1 / -inf (never the padding id).
    model, loaded = models["fame"], exported[2]["fame"]
    rng = np.random.default_rng(3)
    seen = rng.permutation(NUM_ITEMS)[:25] + 1
    history = np.concatenate([seen[:-1], seen[:-1][:-1], seen[-1:]])[None]
    served = _serve(loaded, history)
    ids = served["top_k_ids"][0]
    assert set(ids) == set(range(1, NUM_ITEMS + 1)) - set(seen.tolist())
    single = _serve(loaded, history[:, :1])["top_k_ids"][0]
    assert 0 not in single and history[0, 0] not in single
    np.testing.assert_array_equal(served["top_k_ids"], model.recommend(history, k=K)[0])

    seen = np.arange(1, NUM_ITEMS - 1)[None].astype("int32")  # 2 unseen items
    served = _serve(loaded, seen)
    np.testing.assert_array_equal(
        np.sort(served["top_k_ids"][0, :2]), [NUM_ITEMS - 1, NUM_ITEMS]
    )
    np.testing.assert_array_equal(served["top_k_ids"][0, 2:], [-1, -1, -1])
    assert np.isneginf(served["top_k_scores"][0, 2:]).all()


@pytest.mark.parametrize("key", ["sasrec", "fame"])
def test_unknown_and_negative_ids_are_dropped(models, exported, key):
    loaded = exported[2][key]
    clean = np.array([[0, 0, 0, 0, 12, 7, 3, 9]], "int32")
    # The same history with unknown, negative and stray 0 ids mixed in.
    dirty = np.array([[0, 12, -4, 7, 10**6, 3, 0, 9]], "int32")
    for signature in loaded.signatures:
        a, b = _serve(loaded, clean, signature), _serve(loaded, dirty, signature)
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
    # Shorter and longer than max_len: still the clean history's answer.
    longer = np.array([[12, -1, 40, 7, 31, 0, -9, 3, 99, 9]], "int32")
    for other in (np.array([[12, 7, 3, 9]], "int32"), longer):
        result = _serve(loaded, other)
        np.testing.assert_array_equal(
            result["top_k_ids"], _serve(loaded, clean)["top_k_ids"]
        )
    # Other histories of the batch are not affected.
    rows = np.concatenate([_histories()[:, -MAX_LEN:], dirty])
    batch = _serve(loaded, rows)
    alone = _serve(loaded, _histories()[:, -MAX_LEN:])
    np.testing.assert_array_equal(batch["top_k_ids"][:-1], alone["top_k_ids"])
    np.testing.assert_array_equal(
        batch["top_k_ids"][-1:], _serve(loaded, clean)["top_k_ids"]
    )
    # model.recommend on the clean history agrees.
    np.testing.assert_array_equal(
        batch["top_k_ids"][-1:], models[key].recommend(clean, k=K)[0]
    )


@pytest.mark.parametrize("key", ["sasrec", "fame"])
def test_empty_and_all_padding_histories(models, exported, key):
    loaded = exported[2][key]
    empty = _serve(loaded, np.zeros((2, 0), "int32"))
    padding = _serve(loaded, np.zeros((2, 6), "int32"))
    garbage = _serve(loaded, np.array([[-1, 0, 99], [31, 0, -7]], "int32"))
    for result in (empty, padding, garbage):
        assert result["top_k_ids"].shape == (2, K)
        assert ((result["top_k_ids"] >= 1) & (result["top_k_ids"] <= NUM_ITEMS)).all()
        np.testing.assert_array_equal(result["top_k_ids"], empty["top_k_ids"])
    np.testing.assert_array_equal(
        padding["top_k_ids"], models[key].recommend(np.zeros((2, 6), "int32"), k=K)[0]
    )
    assert _serve(loaded, np.zeros((2, 0), "int32"), "score")["scores"].shape == (
        2,
        NUM_ITEMS + 1,
    )
    assert _serve(loaded, np.zeros((0, 4), "int32"))["top_k_ids"].shape == (0, K)


def test_core_tensorflow_ops_only(exported):
    from tensorflow.python.framework import op_def_registry

    for path in exported[1].values():
        op_types, xla = saved_model_op_types(path, with_attrs=True)
        assert {"MatMul", "TopKV2", "ReadVariableOp"} <= op_types
        assert [op for op in op_types if op_def_registry.get(op) is None] == []
        assert not [op for op in op_types if "Xla" in op or "PyFunc" in op]
        assert not xla


# ------------------------------------------------------- fresh processes

FRESH_PROCESS = textwrap.dedent(
    """
    import importlib.abc, json, sys
    import numpy as np

    class Hide(importlib.abc.MetaPathFinder):
        # Makes keras and keras_fame look not installed, as on a server.
        def __init__(self, finders):
            self.finders, self.asked = finders, []

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("keras", "keras_fame"):
                self.asked.append(name)
                return None
            for finder in self.finders:
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    return spec
            return None

    hide = Hide(list(sys.meta_path))
    sys.meta_path[:] = [hide]
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.framework import op_def_registry

    asked_by_tensorflow = len(hide.asked)  # tf's own probe for tf.keras
    paths, cases, out = sys.argv[1], sys.argv[2], sys.argv[3]
    paths = json.loads(paths)
    cases = dict(np.load(cases))
    results, report = {}, {}
    for key, path in paths.items():
        sm = saved_model_pb2.SavedModel()
        sm.ParseFromString(open(path + "/saved_model.pb", "rb").read())
        ops = set()
        for graph in (m.graph_def for m in sm.meta_graphs):
            functions = {f.signature.name for f in graph.library.function}
            nodes = list(graph.node) + [
                n for f in graph.library.function for n in f.node_def]
            ops |= {n.op for n in nodes if n.op not in functions}
        report[key] = {
            "unregistered": sorted(o for o in ops if op_def_registry.get(o) is None),
            "xla": sorted(o for o in ops if "Xla" in o),
        }
        loaded = tf.saved_model.load(path)
        report[key]["signatures"] = sorted(loaded.signatures)
        for signature, function in loaded.signatures.items():
            for case, ids in cases.items():
                outputs = function(item_ids=tf.constant(ids))
                for name, value in outputs.items():
                    results[f"{key}/{signature}/{case}/{name}"] = value.numpy()
    report["modules"] = sorted(
        m for m in sys.modules if m.split(".")[0] in ("keras", "keras_fame"))
    report["asked_while_serving"] = hide.asked[asked_by_tensorflow:]
    np.savez(out, **results)
    print("REPORT" + json.dumps(report))
    """
)


def _run(args, **kwargs):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        args, capture_output=True, text=True, timeout=240, env=env, **kwargs
    )


def test_fresh_process_without_keras_gives_the_same_answers(models, exported, tmp_path):
    _, paths, _ = exported
    clean = np.array([[0, 0, 0, 0, 12, 7, 3, 9]], "int32")
    cases = {
        "histories": _histories(),
        "dirty": np.array([[0, 12, -4, 7, 10**6, 3, 0, 9]], "int32"),
        "empty": np.zeros((1, 0), "int32"),
    }
    np.savez(tmp_path / "cases.npz", **cases)
    script = tmp_path / "serve.py"
    script.write_text(FRESH_PROCESS)
    # Run outside the repository so that keras_fame is not even on the path.
    result = _run(
        [
            sys.executable,
            str(script),
            json.dumps(paths),
            str(tmp_path / "cases.npz"),
            str(tmp_path / "out.npz"),
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.split("REPORT", 1)[1])
    assert report["modules"] == [] and report["asked_while_serving"] == []
    assert report["fame"]["signatures"] == ["facets", "score", "serving_default"]
    for key in paths:
        assert report[key]["unregistered"] == [] and report[key]["xla"] == []
    out = np.load(tmp_path / "out.npz")
    for key, model in models.items():
        for case, ids in [("histories", cases["histories"]), ("dirty", clean)]:
            ids_expected, scores_expected = model.recommend(ids, k=K)
            prefix = f"{key}/serving_default/{case}"
            np.testing.assert_array_equal(out[f"{prefix}/top_k_ids"], ids_expected)
            np.testing.assert_allclose(
                out[f"{prefix}/top_k_scores"], scores_expected, rtol=1e-5, atol=1e-5
            )
            np.testing.assert_allclose(
                out[f"{key}/score/{case}/scores"],
                ops.convert_to_numpy(model.score(ids)),
                rtol=1e-5,
                atol=1e-5,
            )
        empty = out[f"{key}/serving_default/empty/top_k_ids"]
        np.testing.assert_array_equal(
            empty, model.recommend(np.zeros((1, 2), "int32"), k=K)[0]
        )
    facets = models["fame"].facet_weights(cases["histories"])
    for name in ("gate", "routing"):
        np.testing.assert_allclose(
            out[f"fame/facets/histories/{name}"], facets[name], atol=1e-5
        )


def test_saved_model_cli_show_and_run(models, exported, tmp_path):
    path = exported[1]["fame"]
    ids = np.array([[0, 0, 12, 7], [5, 6, 7, 8]], "int32")
    np.save(tmp_path / "ids.npy", ids)
    cli = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    # One shell, two CLI calls: `show` then `run` (the TF1 session loader,
    # feeding tensors by the SignatureDef's names, as the model server does).
    command = (
        f"{' '.join(cli)} show --dir {path} --tag_set serve --signature_def "
        f"serving_default && echo '=== RUN ===' && {' '.join(cli)} run --dir {path} "
        f"--tag_set serve --signature_def serving_default "
        f"--inputs item_ids={tmp_path / 'ids.npy'} --outdir {tmp_path / 'out'}"
    )
    result = _run(["bash", "-c", command], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    show = result.stdout.split("=== RUN ===")[0]
    assert "inputs['item_ids'] tensor_info:" in show
    assert "outputs['top_k_ids'] tensor_info:" in show
    assert "outputs['top_k_scores'] tensor_info:" in show
    blocks = show.split("inputs['")[1:] + show.split("outputs['")[1:]
    dtypes = {b.split("'")[0]: b.split("dtype: ")[1].split()[0] for b in blocks}
    shapes = {b.split("'")[0]: b.split("shape: ")[1].split("\n")[0] for b in blocks}
    assert dtypes["item_ids"] == "DT_INT32" and shapes["item_ids"] == "(-1, -1)"
    assert dtypes["top_k_ids"] == "DT_INT32" and shapes["top_k_ids"] == f"(-1, {K})"
    assert dtypes["top_k_scores"] == "DT_FLOAT"
    assert "serving_default" in show
    expected_ids, expected_scores = models["fame"].recommend(ids, k=K)
    np.testing.assert_array_equal(
        np.load(tmp_path / "out" / "top_k_ids.npy"), expected_ids
    )
    np.testing.assert_allclose(
        np.load(tmp_path / "out" / "top_k_scores.npy"), expected_scores, atol=1e-5
    )


# ------------------------------------------------------------------ REST


def test_rest_row_and_columnar_formats_agree(exported):
    loaded = exported[2]["fame"]
    ids = [[0, 0, 12, 7], [5, 6, 7, 8]]
    direct = _serve(loaded, ids)
    # The row format, built by hand: one JSON object per history, each
    # output's row as a list.
    assert set(direct) == {"top_k_ids", "top_k_scores"}

    # Floats as TF Serving writes a float32: six significant digits when
    # they read back as the same float32, nine otherwise.
    def tf_serving_float(value):
        short = float(f"{value:.6g}")
        return short if np.float32(short) == value else float(f"{value:.9g}")

    expected = {
        "top_k_ids": [int(v) for v in np.asarray(direct["top_k_ids"])[0]],
        "top_k_scores": [
            tf_serving_float(v) for v in np.asarray(direct["top_k_scores"])[0]
        ],
    }
    requests = [
        {"instances": [{"item_ids": row} for row in ids]},
        {"instances": ids},
        json.dumps({"signature_name": "serving_default", "instances": ids}),
    ]
    for request in requests:
        response = json.loads(json.dumps(rest_predict(loaded, request)))
        assert len(response["predictions"]) == 2
        assert response["predictions"][0] == expected
        assert (
            response["predictions"][1]["top_k_ids"] == direct["top_k_ids"][1].tolist()
        )
    for request in ({"inputs": {"item_ids": ids}}, {"inputs": ids}):
        response = rest_predict(loaded, request)
        assert response["outputs"]["top_k_ids"] == direct["top_k_ids"].tolist()
        np.testing.assert_allclose(
            response["outputs"]["top_k_scores"], direct["top_k_scores"], rtol=1e-6
        )
    # A single named output: predictions / outputs hold the bare values.
    score = rest_predict(loaded, {"signature_name": "score", "instances": ids})
    assert np.shape(score["predictions"]) == (2, NUM_ITEMS + 1)
    score = rest_predict(loaded, {"signature_name": "score", "inputs": ids})
    assert np.shape(score["outputs"]) == (2, NUM_ITEMS + 1)
    facets = rest_predict(loaded, {"signature_name": "facets", "instances": ids})
    assert np.shape(facets["predictions"][1]["routing"]) == (2, 3)
    # The curl example, empty and all-padding histories.
    curl = rest_predict(loaded, '{"instances": [{"item_ids": [0,0,12,7]}]}')
    assert curl["predictions"][0]["top_k_ids"] == expected["top_k_ids"]
    np.testing.assert_allclose(
        curl["predictions"][0]["top_k_scores"], expected["top_k_scores"], rtol=1e-5
    )
    for empty in ([[]], [[0, 0, 0]]):
        response = rest_predict(loaded, {"instances": empty})
        assert 0 not in response["predictions"][0]["top_k_ids"]


def test_rest_request_conversion():
    parsed = rest_request_to_inputs(
        {"instances": [{"item_ids": [0, 3]}, {"item_ids": [4, 5]}]}
    )
    assert parsed.signature_name == "serving_default" and parsed.format == "row"
    assert parsed.inputs["item_ids"].dtype == np.int32
    np.testing.assert_array_equal(parsed.inputs["item_ids"], [[0, 3], [4, 5]])
    parsed = rest_request_to_inputs('{"signature_name": "score", "inputs": [[1, 2]]}')
    assert (parsed.signature_name, parsed.format) == ("score", "columnar")
    assert rest_request_to_inputs({"instances": [[]]}).inputs["item_ids"].shape == (
        1,
        0,
    )
    two = {"a": "int64", "b": "float32"}
    parsed = rest_request_to_inputs(
        {"instances": [{"a": 1, "b": 2.5}, {"a": 2, "b": 1}]}, two
    )
    assert parsed.inputs["a"].dtype == np.int64 and parsed.inputs["b"].shape == (2,)
    parsed = rest_request_to_inputs({"inputs": {"a": [1], "b": [[1.0, 2.0]]}}, two)
    assert parsed.inputs["b"].shape == (1, 2)


@pytest.mark.parametrize(
    "request_body, match",
    [
        ({"instances": [[0, 1, 2], [3, 4]]}, "same length"),
        ({"instances": [[1], [2]], "inputs": [[1]]}, "only one of"),
        ({"signature_name": "score"}, "Missing 'inputs' or 'instances'"),
        ({"instances": []}, "No values"),
        ({"instances": [[1.5, 2]]}, "not of expected type"),
        ({"instances": [[1.0, 2]]}, "not of expected type"),
        ({"instances": [[True, 2]]}, "not of expected type"),
        ({"instances": [[2**31, 2]]}, "not of expected type"),
        ({"instances": [{"item_ids": [1], "extra": [2]}]}, "does not have named input"),
        ({"instances": [{"ids": [1]}]}, "does not have named input"),
        ({"instances": [[[1, 2], [3]]]}, "unexpected size"),
        ({"instances": [[1, [2]]]}, "unexpected level"),
        ({"instances": [{"item_ids": [1]}, [2]]}, "Expecting object"),
        ({"inputs": {"ids": [[1]]}}, "Missing named input: item_ids"),
        ({"signature_name": 3, "instances": [[1]]}, "signature_name"),
        ([1, 2], "Is not object"),
        ("{not json", "JSON Parse error"),
        ("", "empty"),
    ],
)
def test_rest_request_errors(request_body, match):
    with pytest.raises(ValueError, match=match):
        rest_request_to_inputs(request_body)


def test_rest_unknown_signature(exported):
    with pytest.raises(ValueError, match="not found in signature def"):
        rest_predict(
            exported[2]["sasrec"], {"signature_name": "facets", "instances": [[1]]}
        )


def test_rest_response_format():
    outputs = {
        "top_k_ids": np.array([[3, -1]], "int32"),
        "top_k_scores": np.array([[1 / 3, -np.inf]], "float32"),
    }
    row = outputs_to_rest_response(outputs)
    # float32 written as TF Serving writes it: 9 digits when 6 do not round-trip.
    assert row == {
        "predictions": [{"top_k_ids": [3, -1], "top_k_scores": [0.333333343, -np.inf]}]
    }
    assert "-Infinity" in json.dumps(row)
    columnar = outputs_to_rest_response(outputs, "columnar")
    assert columnar["outputs"]["top_k_ids"] == [[3, -1]]
    single = outputs_to_rest_response({"x": np.array([0.2, 3.0], "float32")})
    assert single == {"predictions": [0.2, 3.0]}
    with pytest.raises(ValueError, match="inconsistent batch size"):
        outputs_to_rest_response({"a": np.zeros((2, 1)), "b": np.zeros((3, 1))})
    with pytest.raises(ValueError, match="`format`"):
        outputs_to_rest_response(outputs, "rows")


def test_verification_blocks_an_export_tf_serving_cannot_run(
    tiny, tmp_path, monkeypatch
):
    build = export._serving_module

    def track_keras_variables(model, k):
        # Tracking keras.Variables instead of the captured tf.Variables gives a
        # SavedModel that tf.saved_model.load runs but the session loader (TF
        # Serving's) cannot: the export must refuse to publish it.
        module, signatures = build(model, k)
        module.model_variables = list(model.variables)
        return module, signatures

    monkeypatch.setattr(export, "_serving_module", track_keras_variables)
    with pytest.raises(RuntimeError, match="session loader"):
        export_for_serving(tiny, tmp_path, name="m")
    assert os.listdir(tmp_path / "m") == []
