"""SavedModel export of SASRec/FAME for TensorFlow Serving (TensorFlow only).

`export_for_serving` writes a trained model as a versioned SavedModel,
`<base_dir>/<name>/<version>/`, the layout TF Serving's model server watches.
The export holds plain TensorFlow variables and functions built from core
TensorFlow ops: loading it needs neither `keras_fame` nor Keras, so the stock
`tensorflow/serving` binary can serve it.

Signatures of a model WITH a vocabulary (`model.set_vocabulary`; models
trained by `keras_fame.training.two_stage` on your own log have one):

- `serving_default`: input `history`, string `(batch,)`: each element is one
  user's item ids as written in the log (integers as their decimal text),
  separated by spaces, oldest first; rows have any length (TF Serving's
  REST form: `{"instances": ["sku1 sku7 sku9", "sku3"]}`). Outputs
  `item_ids` string `(batch, k)`, your ids, best first, the row's history
  excluded, never padding (`""` only where fewer than `k` unseen items
  exist); `scores` float32 `(batch, k)` (-inf in such slots); `unknown` int32
  `(batch,)`, how many ids of the row the vocabulary did not hold (they are
  dropped, never an error).
- `recommend_ids`: the model-id form of `serving_default` below.

Signatures that take model ids (`item_ids`, int32 `(batch, length)`, any
length, left-padded with 0):

- `serving_default` (`recommend_ids` with a vocabulary): `top_k_ids` int32
  `(batch, k)` and `top_k_scores` float32 `(batch, k)`, best first, with the
  whole history excluded. The padding id 0 is never returned; when fewer than
  `k` unseen items exist, the missing slots hold id -1 and score -inf.
- `score`: `scores` float32 `(batch, num_items + 1)`, the model's score of
  every item id after the history (column 0, padding, holds -1e9), as
  `model.score`.
- `facets` (FAME only): `gate` float32 `(batch, num_heads)` and `routing`
  float32 `(batch, num_heads, num_experts)` at the last position, as
  `model.facet_weights`.

How a request's histories are read, in every signature:

1. Ids outside `1..num_items` (unknown, negative, and also 0s inside a
   history) are padding: they are dropped and the remaining ids, in their
   order, are shifted right (left-padded again). A history with an unknown id
   therefore scores exactly like the same history without it.
2. The most recent `max_len` of the remaining ids are the model's context;
   `serving_default` still excludes the whole history from the top-k.
3. An empty (`length == 0`) or all-padding history is valid: it gets the
   model's answer for "no history".

To try REST `:predict` requests against an export without the model
server, see `keras_fame.serving_rest`, a Python emulation of TF Serving's
JSON conversion.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import uuid

import keras
import numpy as np
import tensorflow as tf

from keras_fame.layers._utils import check_positive_int
from keras_fame.models.base import SequentialRecommender
from keras_fame.models.fame import FAME

__all__ = [
    "HISTORY_INPUT_NAME",
    "SERVING_INPUT_NAME",
    "export_for_serving",
    "saved_model_op_types",
]

SERVING_INPUT_NAME = "item_ids"
"""Name of the input of the signatures that take model ids."""

HISTORY_INPUT_NAME = "history"
"""Name of the string input of `serving_default` for a model with a vocabulary."""

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_METADATA_PATH = os.path.join("assets.extra", "keras_fame_export.json")
# Ops that are registered in core TensorFlow but only run with Python
# (tf.py_function / tf.numpy_function): the model server has no Python.
_PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})
_INPUT_SIGNATURE = (tf.TensorSpec([None, None], tf.int32, name=SERVING_INPUT_NAME),)
_HISTORY_SIGNATURE = (tf.TensorSpec([None], tf.string, name=HISTORY_INPUT_NAME),)


# ---------------------------------------------------------------------- export


def export_for_serving(
    model: SequentialRecommender,
    base_dir: str | os.PathLike,
    name: str = "fame",
    version: int | None = None,
    k: int = 10,
    overwrite: bool = False,
    verify: bool = True,
) -> str:
    """Writes a SASRec or FAME model as a SavedModel for TensorFlow Serving.

    The export lands in `<base_dir>/<name>/<version>/`, TF Serving's layout
    (point `--model_base_path` or the docker mount at `<base_dir>/<name>`).
    It is written atomically: the SavedModel is saved into a hidden temporary
    directory beside the target (`.tmp-...`, which TF Serving ignores as it is
    not a number), checked, and only then renamed to the version directory,
    so a half-written export never appears as a version. An existing version
    is never replaced unless `overwrite=True`.

    See the module docstring for the signatures (`serving_default`, `score`
    and, for FAME, `facets`) and for how ids outside the vocabulary are
    handled. A small JSON description of the export (model class, sizes, `k`,
    signatures) is written to `assets.extra/keras_fame_export.json`; loaders
    ignore it.

    Args:
        model: A built `keras_fame.models.SASRec` or `keras_fame.models.FAME`
            on the TensorFlow backend.
        base_dir: Directory holding the exported models (created if needed).
        name: Model name, the directory under `base_dir` (TF Serving's
            `MODEL_NAME`). Letters, digits, `_`, `-` and `.`.
        version: Positive integer version. `None` picks the next one: one
            more than the largest existing version, or 1.
        k: Length of the top-k list of `serving_default`, fixed in the
            export, `1 <= k <= model.num_items`.
        overwrite: Replace `version` if it already exists. The old version is
            renamed away and the new one renamed in, so there is a brief
            instant without that version; prefer a new version number for a
            live server.
        verify: Before publishing, check that the graph uses only core
            TensorFlow ops (no custom, XLA-only or Python ops), load the
            temporary export with TensorFlow's session loader (the one TF
            Serving uses) and check that `serving_default` and `score` agree
            with `model.recommend` / `model.score` on a few probe histories.

    Returns:
        The path of the version directory, as a string.

    Raises:
        TypeError: `model` is not a SASRec/FAME model.
        ValueError: Invalid `name`, `version` or `k`.
        FileExistsError: `version` exists and `overwrite` is False.
        RuntimeError: Not the TensorFlow backend, or `verify` found a problem
            (nothing is published then).

    Example:
    >>> model = keras_fame.models.FAME(num_items=100, max_len=20, hidden_dim=16)
    >>> path = keras_fame.export.export_for_serving(model, "/tmp/models", k=5)
    >>> served = tf.saved_model.load(path).signatures["serving_default"]
    >>> served(item_ids=tf.constant([[0, 0, 3, 7, 9]]))["top_k_ids"].shape
    TensorShape([1, 5])
    """
    if not isinstance(model, SequentialRecommender):
        raise TypeError(
            "`model` must be a keras_fame.models.SASRec or "
            f"keras_fame.models.FAME. Received: model of type {type(model)}"
        )
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "export_for_serving writes a TensorFlow SavedModel and needs the "
            "TensorFlow backend (KERAS_BACKEND=tensorflow). Received backend: "
            f"{keras.backend.backend()!r}"
        )
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise ValueError(
            "`name` must be a non-empty directory name of letters, digits, '_', "
            f"'-' and '.', not starting with '.'. Received: name={name!r}"
        )
    version = check_positive_int("version", version, allow_none=True)
    k = check_positive_int("k", k)
    if k > model.num_items:
        raise ValueError(
            f"`k` must be at most the model's num_items={model.num_items}. "
            f"Received: k={k}"
        )

    if model.vocabulary is not None:
        _check_servable_ids(model.vocabulary.texts)

    model_dir = os.path.join(os.fspath(base_dir), name)
    os.makedirs(model_dir, exist_ok=True)
    if version is None:
        version = max(_existing_versions(model_dir), default=0) + 1
    target = os.path.join(model_dir, str(version))
    if os.path.lexists(target) and not overwrite:
        raise FileExistsError(
            f"Version {version} of model {name!r} already exists at {target}. "
            "Pass overwrite=True to replace it, or version=None for the next "
            "version."
        )

    module, signatures = _serving_module(model, k)
    tmp = os.path.join(model_dir, f".tmp-{version}-{uuid.uuid4().hex}")
    try:
        tf.saved_model.save(module, tmp, signatures=signatures)
        _write_metadata(tmp, model, k, signatures)
        if verify:
            _verify_export(tmp, model, k)
        _publish(tmp, target, overwrite)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _existing_versions(model_dir: str) -> list[int]:
    return [int(entry) for entry in os.listdir(model_dir) if entry.isdigit()]


def _publish(tmp: str, target: str, overwrite: bool) -> None:
    """Renames the finished export into place (atomic on one filesystem)."""
    if not os.path.lexists(target):
        try:
            os.rename(tmp, target)
        except OSError as error:
            if os.path.lexists(target):
                raise FileExistsError(
                    f"{target} appeared while exporting (another export?); "
                    "nothing was overwritten."
                ) from error
            raise
        return
    if not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite=True.")
    parent, version = os.path.split(target)
    old = os.path.join(parent, f".old-{version}-{uuid.uuid4().hex}")
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except OSError:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _check_servable_ids(texts: list[str]) -> None:
    """Refuses item ids that the space-separated `history` input cannot carry."""
    for model_id, text in enumerate(texts, start=1):
        if not text or any(c.isspace() for c in text):
            raise ValueError(
                f"item id {text!r} (model id {model_id}) "
                + ("is empty" if not text else "contains whitespace")
                + ": the served `history` input separates ids by spaces, so "
                "ids must be non-empty and free of whitespace. Rename such ids "
                "in the log before training."
            )


def left_pad_ragged(ids):
    """A ragged int `(batch, None)` tensor as a dense one, left-padded with 0.

    The width is the longest row, at least 1.
    """
    lengths = tf.cast(ids.row_lengths(), tf.int32)
    width = tf.maximum(tf.reduce_max(tf.concat([lengths, [1]], axis=0)), 1)
    right = ids.to_tensor(default_value=0)
    right = tf.pad(right, [[0, 0], [0, width - tf.shape(right)[1]]])
    source = tf.range(width)[None, :] - (width - lengths)[:, None]
    values = tf.gather(right, tf.maximum(source, 0), batch_dims=1)
    return tf.where(source >= 0, values, tf.zeros_like(values))


def _serving_module(model: SequentialRecommender, k: int):
    """The tf.Module (variables + tf.functions) and its signatures."""
    num_items, max_len = model.num_items, model.max_len

    def prepare(item_ids):
        # Ids outside 1..num_items become padding and are dropped: a stable
        # sort moves padding to the left and keeps the real ids in order.
        valid = tf.logical_and(item_ids > 0, item_ids <= num_items)
        item_ids = tf.where(valid, item_ids, tf.zeros_like(item_ids))
        order = tf.argsort(tf.cast(valid, tf.int32), axis=1, stable=True)
        history = tf.gather(item_ids, order, batch_dims=1)
        # An empty history still needs one (padding) position to read from.
        pad = tf.maximum(1 - tf.shape(history)[1], 0)
        history = tf.pad(history, [[0, 0], [pad, 0]])
        return history, history[:, -max_len:]

    def last_vectors(context):
        return model(context, training=False, last_position_only=True)[:, -1, :]

    @tf.function(input_signature=_INPUT_SIGNATURE, autograph=False)
    def recommend(item_ids):
        history, context = prepare(item_ids)
        scores = tf.cast(model.logits(last_vectors(context)), tf.float32)
        shape = tf.shape(history)
        rows = tf.broadcast_to(tf.range(shape[0])[:, None], shape)
        seen = tf.reshape(tf.stack([rows, history], axis=-1), [-1, 2])
        minus_inf = tf.constant(-np.inf, tf.float32)
        scores = tf.tensor_scatter_nd_update(
            scores, seen, tf.fill([shape[0] * shape[1]], minus_inf)
        )
        is_padding = tf.equal(tf.range(num_items + 1), 0)[None, :]
        scores = tf.where(is_padding, minus_inf, scores)
        top_scores, top_ids = tf.math.top_k(scores, k=k)
        top_ids = tf.where(tf.equal(top_scores, minus_inf), -1, top_ids)
        return {
            "top_k_ids": tf.cast(top_ids, tf.int32),
            "top_k_scores": top_scores,
        }

    @tf.function(input_signature=_INPUT_SIGNATURE, autograph=False)
    def score(item_ids):
        _, context = prepare(item_ids)
        return {"scores": tf.cast(model.logits(last_vectors(context)), tf.float32)}

    module = tf.Module(name="keras_fame_serving")
    module.recommend = recommend
    module.score = score
    signatures = {
        "serving_default": recommend.get_concrete_function(),
        "score": score.get_concrete_function(),
    }
    if model.vocabulary is not None:
        texts = model.vocabulary.texts
        module.item_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(texts, tf.string),
                tf.range(1, len(texts) + 1, dtype=tf.int32),
            ),
            default_value=0,
        )
        item_texts = tf.constant(["", *texts], tf.string)

        @tf.function(input_signature=_HISTORY_SIGNATURE, autograph=False)
        def recommend_history(history):
            ids = module.item_table.lookup(tf.strings.split(history))
            unknown = tf.reduce_sum(tf.cast(tf.equal(ids, 0), tf.int32), axis=1)
            known = tf.ragged.boolean_mask(ids, ids > 0)
            top = recommend(left_pad_ragged(known))
            top_ids = top["top_k_ids"]
            return {
                "item_ids": tf.gather(item_texts, tf.maximum(top_ids, 0)),
                "scores": top["top_k_scores"],
                "unknown": unknown,
            }

        module.recommend_history = recommend_history
        signatures["recommend_ids"] = signatures["serving_default"]
        signatures["serving_default"] = recommend_history.get_concrete_function()
    if isinstance(model, FAME):

        @tf.function(input_signature=_INPUT_SIGNATURE, autograph=False)
        def facets(item_ids):
            _, context = prepare(item_ids)
            out = model.facets(context, last_position_only=True)
            return {
                "gate": tf.cast(out["gate"][:, -1], tf.float32),
                "routing": tf.cast(out["routing"][:, -1], tf.float32),
            }

        module.facets = facets
        signatures["facets"] = facets.get_concrete_function()
    # Track the tf.Variables the functions capture (not the Keras model nor its
    # keras.Variable wrappers): the SavedModel then holds plain variables that
    # both the TF2 loader and TF Serving's session loader restore. Tracking the
    # keras.Variables instead saves a graph that tf.saved_model.load runs but
    # the session loader does not ("Resource ... does not exist").
    captured = {}
    for function in signatures.values():
        for variable in function.variables:
            captured.setdefault(id(variable), variable)
    module.model_variables = list(captured.values())
    return module, signatures


def _write_metadata(export_dir: str, model, k: int, signatures) -> None:
    from keras_fame import __version__

    def describe(specs):
        return {
            key: {"dtype": spec.dtype.name, "shape": spec.shape.as_list()}
            for key, spec in specs.items()
        }

    metadata = {
        "model": type(model).__name__,
        "num_items": model.num_items,
        "max_len": model.max_len,
        "hidden_dim": model.hidden_dim,
        "num_heads": model.num_heads,
        "num_experts": getattr(model, "num_experts", None),
        "k": k,
        "signatures": {
            key: {
                "inputs": describe(
                    {
                        spec.name: spec
                        for spec in tf.nest.flatten(fn.structured_input_signature)
                    }
                ),
                "outputs": describe(fn.structured_outputs),
            }
            for key, fn in signatures.items()
        },
        "keras_fame_version": __version__,
        "tensorflow_version": tf.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }
    path = os.path.join(export_dir, _METADATA_PATH)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as file:
        json.dump(metadata, file, indent=2)


def _verify_export(export_dir: str, model: SequentialRecommender, k: int) -> None:
    """Loads an export and checks ops and answers against the model."""
    problems = _op_problems(saved_model_op_types(export_dir, with_attrs=True))
    if problems:
        raise RuntimeError(
            "The export would not run on the stock TF Serving binary: "
            + "; ".join(problems)
        )
    rng = np.random.default_rng(0)
    length = model.max_len + 3
    probes = rng.integers(1, model.num_items + 1, size=(4, length)).astype("int32")
    probes[0, :-2] = 0  # short history
    probes[1, :] = 0  # all padding
    ids_signature = "serving_default" if model.vocabulary is None else "recommend_ids"
    feeds = {
        ids_signature: {SERVING_INPUT_NAME: probes},
        "score": {SERVING_INPUT_NAME: probes},
    }
    if model.vocabulary is not None:
        texts = np.asarray(model.vocabulary.texts, dtype=object)
        rows = [" ".join(texts[row[row > 0] - 1]) for row in probes]
        rows[2] = "\x00unknown " + rows[2]  # never an item id: tabs/spaces refused
        feeds["serving_default"] = {HISTORY_INPUT_NAME: np.asarray(rows, dtype=object)}
    try:
        served = _run_in_session(export_dir, feeds)
    except Exception as error:  # any failure blocks publishing
        raise RuntimeError(
            "Verification failed: TensorFlow's session loader (the one TF "
            f"Serving uses) cannot run the export: {error}"
        ) from error
    scores = served["score"]["scores"]
    expected_scores = keras.ops.convert_to_numpy(model.score(probes))
    expected_ids, _ = model._recommend_ids(probes, k)
    if not np.allclose(scores, expected_scores, rtol=1e-4, atol=1e-4):
        raise RuntimeError(
            "Verification failed: the exported `score` signature disagrees with "
            "model.score; nothing was published."
        )
    answers = {ids_signature: served[ids_signature]["top_k_ids"]}
    if model.vocabulary is not None:
        out = served["serving_default"]
        words = [w.decode("utf-8") for w in out["item_ids"].reshape(-1)]
        ids = model.vocabulary.encode_texts(words)
        ids[np.asarray(words) == ""] = -1  # the slots without a candidate
        answers["serving_default"] = ids.reshape(out["item_ids"].shape)
        if out["unknown"].tolist() != [0, 0, 1, 0]:
            raise RuntimeError(
                "Verification failed: `serving_default` miscounted unknown ids "
                f"({out['unknown'].tolist()}, expected [0, 0, 1, 0]); nothing "
                "was published."
            )
    expected_top = np.take_along_axis(
        expected_scores, np.maximum(expected_ids, 0), axis=1
    )
    for signature, ids in answers.items():
        if (
            ids.shape != expected_ids.shape
            or (ids == 0).any()
            or ((ids < 0) != (expected_ids < 0)).any()
        ):
            raise RuntimeError(
                f"Verification failed: `{signature}` returned padding, an unknown "
                f"id or a wrong shape {ids.shape}; nothing was published."
            )
        top = np.take_along_axis(expected_scores, np.maximum(ids, 0), axis=1)
        if not np.allclose(top, expected_top, rtol=1e-4, atol=1e-4):
            raise RuntimeError(
                f"Verification failed: `{signature}` disagrees with "
                "model.recommend; nothing was published."
            )


def _run_in_session(
    export_dir: str, feeds: dict[str, dict[str, np.ndarray]]
) -> dict[str, dict[str, np.ndarray]]:
    """Runs signatures the way TF Serving does: TF1 loader, feeds by name.

    TF Serving loads a SavedModel into a session (`LoadSavedModel`), restores
    the variables with the saver in the MetaGraph and runs each SignatureDef
    by its tensor names; this is the same path in Python. `feeds` maps a
    signature name to its inputs by input name.
    """
    from tensorflow.python.util import deprecation

    results = {}
    with tf.Graph().as_default() as graph:
        with tf.compat.v1.Session(graph=graph) as session, deprecation.silence():
            meta_graph = tf.compat.v1.saved_model.loader.load(
                session, [tf.saved_model.SERVING], export_dir
            )
            for name, inputs in feeds.items():
                signature = meta_graph.signature_def[name]
                feed = {
                    signature.inputs[key].name: value for key, value in inputs.items()
                }
                fetch = {key: info.name for key, info in signature.outputs.items()}
                results[name] = session.run(fetch, feed)
    return results


# ------------------------------------------------------------------ op check


def saved_model_op_types(
    export_dir: str | os.PathLike, with_attrs: bool = False
) -> set[str] | tuple[set[str], set[str]]:
    """The op types a SavedModel's graph uses, read from `saved_model.pb`.

    Calls of the SavedModel's own functions are not counted as op types.

    Args:
        export_dir: A SavedModel directory.
        with_attrs: Also return the names of functions or nodes asking for XLA
            compilation (`_XlaMustCompile`), which TF Serving cannot honour
            on a CPU-only build.

    Returns:
        The set of op type names, or `(op_types, xla_compiled)` with
        `with_attrs=True`.

    Example:
    >>> ops = keras_fame.export.saved_model_op_types("/tmp/models/fame/1")
    >>> "MatMul" in ops
    True
    """
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(os.fspath(export_dir), "saved_model.pb"), "rb") as file:
        saved_model.ParseFromString(file.read())
    op_types, xla = set(), set()
    for meta_graph in saved_model.meta_graphs:
        graph = meta_graph.graph_def
        functions = {f.signature.name for f in graph.library.function}
        nodes = list(graph.node)
        for function in graph.library.function:
            nodes.extend(function.node_def)
            attr = function.attr.get("_XlaMustCompile")
            if attr is not None and attr.b:
                xla.add(function.signature.name)
        for node in nodes:
            if node.op not in functions:
                op_types.add(node.op)
            attr = node.attr.get("_XlaMustCompile")
            if attr is not None and attr.b:
                xla.add(node.name)
    return (op_types, xla) if with_attrs else op_types


def _op_problems(op_types_and_xla) -> list[str]:
    from tensorflow.python.framework import op_def_registry

    op_types, xla = op_types_and_xla
    problems = []
    unknown = sorted(op for op in op_types if op_def_registry.get(op) is None)
    if unknown:
        problems.append(f"ops not registered in core TensorFlow: {unknown}")
    xla_ops = sorted(op for op in op_types if op.lstrip("_").startswith("Xla"))
    if xla_ops:
        problems.append(f"XLA-only ops: {xla_ops}")
    python_ops = sorted(op_types & _PYTHON_OPS)
    if python_ops:
        problems.append(f"Python ops: {python_ops}")
    if xla:
        problems.append(f"functions marked for XLA compilation: {sorted(xla)}")
    return problems
