"""TF Serving REST `:predict` JSON, emulated in Python (a client/test helper).

TF Serving's model server converts a REST `:predict` body to tensors, runs a
signature and writes its outputs back as JSON. This module re-implements that
conversion (from TF Serving's documented behaviour, `api_rest.md`, and
`tensorflow_serving/util/json_tensor.cc`; it is not TF Serving code), so that
a client can build requests and read responses, and tests can check an
export's REST answers without a model server:

- `rest_request_to_inputs`: a request body to input arrays (`RestRequest`).
- `outputs_to_rest_response`: signature outputs to a response body.
- `rest_predict`: both around a signature of a SavedModel, as the server
  answers a request.

It is not needed to serve a model: `keras_fame.export.export_for_serving`
writes the SavedModel the stock server loads.

Example, against an export of a model with a vocabulary:

```python
from keras_fame.serving_rest import rest_predict

rest_predict("/srv/models/fame/1", {"instances": ["sku1 sku7", "sku3"]})
# {'predictions': [{'item_ids': [...], 'scores': [...], 'unknown': 0}, ...]}
```
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from keras_fame.export import SERVING_INPUT_NAME
from keras_fame.layers._utils import check_choice

__all__ = [
    "RestRequest",
    "outputs_to_rest_response",
    "rest_predict",
    "rest_request_to_inputs",
]


class RestRequest(NamedTuple):
    """A TF Serving REST `:predict` request converted to tensors.

    Attributes:
        signature_name: The requested signature (`"serving_default"` when the
            request names none).
        inputs: Input name -> NumPy array, batched as TF Serving batches them.
        format: `"row"` (`instances`) or `"columnar"` (`inputs`); the
            response uses the matching layout.
    """

    signature_name: str
    inputs: dict[str, np.ndarray]
    format: str


_JSON_DTYPES = {
    "int8": (np.int8, "int"),
    "int16": (np.int16, "int"),
    "int32": (np.int32, "int"),
    "uint8": (np.uint8, "int"),
    "int64": (np.int64, "int"),
    "float32": (np.float32, "float"),
    "float64": (np.float64, "float"),
    "bool": (np.bool_, "bool"),
    "string": (object, "string"),
}


def rest_request_to_inputs(
    request: str | bytes | Mapping[str, Any],
    input_dtypes: Mapping[str, str] | None = None,
) -> RestRequest:
    """Converts a TF Serving REST `:predict` body to input arrays (emulation).

    Mirrors TF Serving's documented JSON mapping (`api_rest.md`) and its
    `json_tensor.cc`, re-implemented in Python for tests and clients; it is
    not TF Serving code. Rules:

    - The body is an object with either `instances` (row format) or `inputs`
      (columnar format), not both, and an optional string `signature_name`.
    - Row format: a non-empty list with one element per example. With a
      single named input an element may be the value itself
      (`[[0, 12, 7]]`) or an object (`[{"item_ids": [0, 12, 7]}]`); objects
      must hold exactly the signature's input names. The elements are
      stacked along a new axis 0, so every element must have the same shape:
      ragged histories are rejected, pad them (with 0, on the left) to one
      length in the client.
    - Columnar format: the value itself (single named input) or an object
      mapping every input name to its full batched value.
    - Values must be dense nested lists at a uniform depth and match the
      input dtype: int inputs take JSON integers only (`1.0` or `true` is an
      error), int32 ones within the int32 range.

    Args:
        request: The JSON body, as text or already parsed.
        input_dtypes: The signature's input name -> dtype name. Defaults to
            the exported signatures' `{"item_ids": "int32"}`.

    Returns:
        A `RestRequest(signature_name, inputs, format)`.

    Raises:
        ValueError: The request is malformed (TF Serving answers HTTP 400 with
            `{"error": ...}` in these cases).

    Example:
    >>> parsed = keras_fame.serving_rest.rest_request_to_inputs(
    ...     '{"instances": [{"item_ids": [0, 0, 12, 7]}]}')
    >>> parsed.inputs["item_ids"]
    array([[ 0,  0, 12,  7]], dtype=int32)
    """
    if input_dtypes is None:
        input_dtypes = {SERVING_INPUT_NAME: "int32"}
    if not input_dtypes:
        raise ValueError("`input_dtypes` must name at least one input.")
    for key, dtype in input_dtypes.items():
        if str(dtype) not in _JSON_DTYPES:
            raise ValueError(
                f"Unsupported dtype {dtype!r} for input {key!r} in `input_dtypes`; "
                f"supported: {sorted(_JSON_DTYPES)}"
            )
    if isinstance(request, (str, bytes, bytearray)):
        if not request:
            raise ValueError("JSON Parse error: The document is empty")
        try:
            request = json.loads(request)
        except json.JSONDecodeError as error:
            raise ValueError(f"JSON Parse error: {error}") from error
    if not isinstance(request, Mapping):
        raise ValueError(f"JSON Value: {_short(request)} Is not object")
    signature_name = request.get("signature_name", "serving_default")
    if not isinstance(signature_name, str):
        raise ValueError(
            "'signature_name' key must be a string value. Received: "
            f"{_short(signature_name)}"
        )
    signature_name = signature_name or "serving_default"
    has_instances, has_inputs = "instances" in request, "inputs" in request
    if has_instances and has_inputs:
        raise ValueError(
            "Not formatted correctly expecting only one of 'inputs' or "
            "'instances' keys to exist"
        )
    names = sorted(input_dtypes)
    if has_instances:
        inputs = _rows_to_inputs(request["instances"], input_dtypes, names)
        return RestRequest(signature_name, inputs, "row")
    if has_inputs:
        value = request["inputs"]
        if isinstance(value, Mapping) and not _is_b64(value):
            missing = [key for key in names if key not in value]
            if missing:
                raise ValueError(
                    f"Missing named input: {missing[0]} in 'inputs' object."
                )
            inputs = {key: _to_array(value[key], input_dtypes[key]) for key in names}
        else:
            if len(names) > 1:
                raise ValueError(
                    "inputs is a plain value/list, but expecting an object as "
                    "multiple input tensors required as per tensorinfo_map"
                )
            inputs = {names[0]: _to_array(value, input_dtypes[names[0]])}
        return RestRequest(signature_name, inputs, "columnar")
    raise ValueError("Missing 'inputs' or 'instances' key")


def _rows_to_inputs(instances, input_dtypes, names) -> dict[str, np.ndarray]:
    if not isinstance(instances, list):
        raise ValueError("Excepting 'instances' to be an list/array")
    if not instances:
        raise ValueError("No values in 'instances' array")

    def is_object(value):
        return isinstance(value, Mapping) and not _is_b64(value)

    as_objects = is_object(instances[0])
    if not as_objects and len(names) > 1:
        raise ValueError(
            "instances is a plain list, but expecting list of objects as "
            "multiple input tensors required as per tensorinfo_map"
        )
    columns: dict[str, list[np.ndarray]] = {key: [] for key in names}
    for index, element in enumerate(instances):
        if as_objects != is_object(element):
            kind = "object but got list" if as_objects else "value/list but got object"
            raise ValueError(f"Expecting {kind} at item {index} of input list")
        items = element if as_objects else {names[0]: element}
        for key, value in items.items():
            if key not in input_dtypes:
                raise ValueError(
                    f"Failed to process element: {index} key: {key} of 'instances' "
                    f"list. Error: JSON object: does not have named input: {key}"
                )
            try:
                array = _to_array(value, input_dtypes[key])
            except ValueError as error:
                raise ValueError(
                    f"Failed to process element: {index} of 'instances' list. "
                    f"Error: {error}"
                ) from error
            if columns[key] and columns[key][0].shape != array.shape:
                raise ValueError(
                    f"Failed to process element: {index} key: {key} of 'instances' "
                    f"list. Error: Expecting shape {list(columns[key][0].shape)} but "
                    f"got: {list(array.shape)} (rows of one request must have the "
                    "same length: pad histories with 0 on the left)"
                )
            columns[key].append(array)
        if set(items) != set(names):
            raise ValueError(
                f"Failed to process element: {index} of 'instances' list. JSON "
                f"object keys must be equal to: {','.join(names)}"
            )
    return {key: np.stack(values) for key, values in columns.items()}


def _is_b64(value) -> bool:
    return (
        isinstance(value, Mapping)
        and len(value) == 1
        and isinstance(value.get("b64"), str)
    )


def _short(value, limit: int = 80) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _to_array(value, dtype: str) -> np.ndarray:
    """A dense nested JSON list to an array; shape is read from first items."""
    np_dtype, kind = _JSON_DTYPES[str(dtype)]
    shape = []
    probe = value
    while isinstance(probe, list):
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    flat: list = []

    def fill(node, level):
        if not isinstance(node, list):
            if level != len(shape):
                raise ValueError(
                    f"JSON Value: {_short(node)} found at incorrect level: "
                    f"{level + 1} in the JSON DOM. Expected at level: {len(shape)}"
                )
            flat.append(_check_value(node, dtype, kind))
            return
        if level >= len(shape):
            raise ValueError(
                f"Encountered list at unexpected level: {level} expected < {len(shape)}"
            )
        if len(node) != shape[level]:
            raise ValueError(
                f"Encountered list at unexpected size: {len(node)} at level: "
                f"{level} expected size: {shape[level]}"
            )
        for child in node:
            fill(child, level + 1)

    fill(value, 0)
    return np.array(flat, dtype=np_dtype).reshape(shape)


def _check_value(value, dtype: str, kind: str):
    def type_error():
        return ValueError(
            f"JSON Value: {_short(value)} Type: {type(value).__name__} is not of "
            f"expected type: {dtype}"
        )

    if kind == "bool":
        if not isinstance(value, bool):
            raise type_error()
        return value
    if kind == "string":
        if _is_b64(value):
            return base64.b64decode(value["b64"])
        if not isinstance(value, str):
            raise type_error()
        return value.encode("utf-8")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise type_error()
    if kind == "int":
        if not isinstance(value, int):
            raise type_error()
        info = np.iinfo(_JSON_DTYPES[dtype][0])
        # TF Serving reads 8/16-bit ints as int32 (as its proto stores them).
        low, high = (info.min, info.max) if dtype == "int64" else (-(2**31), 2**31 - 1)
        if not low <= value <= high:
            raise type_error()
        return value
    if isinstance(value, int):
        digits = np.finfo(_JSON_DTYPES[dtype][0]).nmant + 1
        if abs(value) > 2**digits - 1:
            raise ValueError(
                f"Cannot convert JSON value: {value} to {dtype} without loss of "
                "precision."
            )
        return value
    if math.isfinite(value):
        limit = np.finfo(_JSON_DTYPES[dtype][0]).max
        if abs(value) > limit:
            raise ValueError(
                f"Cannot convert JSON value: {value} to {dtype} without loss of "
                "precision."
            )
    return value


def _json_float(value: float, float32: bool):
    """A float as TF Serving writes it: shortest of %g / %.9g that round-trips."""
    if not math.isfinite(value):
        return float(value)
    cast = np.float32 if float32 else np.float64
    text = f"{value:g}"
    if cast(float(text)) != cast(value):
        text = f"{value:.{9 if float32 else 17}g}"
    return float(text)


def _to_json_value(array: np.ndarray):
    if array.dtype.kind == "f":
        float32 = array.dtype.itemsize <= 4
        flat = [_json_float(float(v), float32) for v in array.reshape(-1)]
        return np.array(flat, dtype=object).reshape(array.shape).tolist()
    if array.dtype.kind in "iub":
        return array.tolist()
    if array.dtype.kind in "SO":
        return np.vectorize(
            lambda v: v.decode() if isinstance(v, bytes) else v, otypes=[object]
        )(array).tolist()
    raise ValueError(f"Cannot write JSON for tensors of dtype {array.dtype}.")


def outputs_to_rest_response(
    outputs: Mapping[str, Any], format: str = "row"
) -> dict[str, Any]:
    """Converts signature outputs to TF Serving's REST response (emulation).

    Row format (`instances` requests): `{"predictions": [...]}`, one entry per
    example: an object `{output_name: value}` when the signature has several
    outputs, the bare value when it has one. Every output must share the
    batch size. Columnar format (`inputs` requests): `{"outputs": {name:
    value}}`, or `{"outputs": value}` for a single output. Floats are written
    as TF Serving writes them (six significant digits when that round-trips,
    nine otherwise; -inf as `-Infinity`, which Python's `json` reads and
    writes).

    Args:
        outputs: Output name -> tensor or array, as a signature returns them.
        format: `"row"` or `"columnar"` (`RestRequest.format`).

    Returns:
        The response body as a JSON-serialisable dict.

    Example:
    >>> keras_fame.serving_rest.outputs_to_rest_response(
    ...     {"top_k_ids": np.array([[3, 9]]), "top_k_scores": np.array([[0.5, 0.25]])})
    {'predictions': [{'top_k_ids': [3, 9], 'top_k_scores': [0.5, 0.25]}]}
    """
    format = check_choice("format", format, ("row", "columnar"))
    if not outputs:
        raise ValueError("Cannot convert empty tensor map to JSON")
    arrays = {key: np.asarray(value) for key, value in sorted(outputs.items())}
    single = len(arrays) == 1
    if format == "columnar":
        values = {key: _to_json_value(array) for key, array in arrays.items()}
        return {"outputs": next(iter(values.values())) if single else values}
    batch = None
    for key, array in arrays.items():
        if array.ndim == 0:
            raise ValueError(f"Tensor name: {key} has no shape information")
        if batch is not None and array.shape[0] != batch:
            raise ValueError(
                f"Tensor name: {key} has inconsistent batch size: {array.shape[0]} "
                f"expecting: {batch}"
            )
        batch = array.shape[0]
    values = {key: _to_json_value(array) for key, array in arrays.items()}
    if single:
        return {"predictions": next(iter(values.values()))}
    predictions = [{key: values[key][row] for key in values} for row in range(batch)]
    return {"predictions": predictions}


def rest_predict(
    saved_model: Any, request: str | bytes | Mapping[str, Any]
) -> dict[str, Any]:
    """Answers a REST `:predict` body the way TF Serving would (emulation).

    Converts the body with `rest_request_to_inputs` (input names and dtypes
    read from the requested signature), runs the signature and converts its
    outputs with `outputs_to_rest_response`.

    Args:
        saved_model: A SavedModel directory or the object returned by
            `tf.saved_model.load`.
        request: The JSON body, as text or already parsed.

    Returns:
        The response body as a dict (`json.dumps` it to get TF Serving's text,
        up to whitespace).

    Raises:
        ValueError: A malformed request or an unknown signature.

    Example:
    >>> keras_fame.serving_rest.rest_predict(
    ...     "/tmp/models/fame/1", {"instances": [{"item_ids": [0, 0, 12, 7]}]})
    {'predictions': [{'top_k_ids': [...], 'top_k_scores': [...]}]}
    """
    if isinstance(saved_model, (str, os.PathLike)):
        saved_model = tf.saved_model.load(os.fspath(saved_model))
    if isinstance(request, (str, bytes, bytearray)):
        try:
            request = json.loads(request) if request else request
        except json.JSONDecodeError as error:
            raise ValueError(f"JSON Parse error: {error}") from error
    signature_name = "serving_default"
    if isinstance(request, Mapping) and isinstance(request.get("signature_name"), str):
        signature_name = request["signature_name"] or "serving_default"
    if signature_name not in saved_model.signatures:
        raise ValueError(
            f'Serving signature name: "{signature_name}" not found in signature '
            f"def. Available: {sorted(saved_model.signatures)}"
        )
    function = saved_model.signatures[signature_name]
    specs = function.structured_input_signature[1]
    parsed = rest_request_to_inputs(
        request, {key: spec.dtype.name for key, spec in specs.items()}
    )
    for key, array in parsed.inputs.items():
        if not specs[key].shape.is_compatible_with(array.shape):
            raise ValueError(
                f"Input {key!r} has shape {list(array.shape)}, incompatible with the "
                f"signature's {specs[key].shape}"
            )
    outputs = function(**{key: tf.constant(v) for key, v in parsed.inputs.items()})
    return outputs_to_rest_response(
        {key: value.numpy() for key, value in outputs.items()}, parsed.format
    )
