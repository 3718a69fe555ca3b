"""Small helpers shared by the layers (keras.ops only)."""

import math
import numbers

import keras
from keras import ops

# Finite "minus infinity" used before a softmax in float32. Softmaxes are always
# computed in float32 here, so this never overflows, whatever the layer dtype.
_MASK_VALUE = -1e9


def default_initializer(stddev: float = 0.02) -> keras.initializers.Initializer:
    """The SASRec/BERT initializer: truncated normal with a small stddev."""
    return keras.initializers.TruncatedNormal(stddev=stddev)


def clone_initializer(initializer):
    """Returns a fresh copy of `initializer` so that weights do not share seeds."""
    if isinstance(initializer, keras.initializers.Initializer):
        config = initializer.get_config()
        return initializer.__class__.from_config(config)
    return keras.initializers.get(initializer)


def check_positive_int(name: str, value, allow_none: bool = False) -> int | None:
    """Returns `value` as a Python int, or raises a ValueError naming `name`.

    Python and NumPy integers >= 1 pass (so `ids.max()` is a valid `num_items`);
    booleans, floats and strings do not. With `allow_none`, None passes too.
    """
    return _check_int(name, value, 1, "a positive integer", allow_none)


def check_non_negative_int(name: str, value, allow_none: bool = False) -> int | None:
    """Returns `value` as a Python int if it is an integer >= 0 (see above)."""
    return _check_int(name, value, 0, "a non-negative integer", allow_none)


def is_int(value) -> bool:
    """Whether `value` is a Python or NumPy integer (booleans are not)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_int(name: str, value, minimum: int, expected: str, allow_none: bool):
    if value is None and allow_none:
        return None
    if not is_int(value) or value < minimum:
        expected += " or None" if allow_none else ""
        raise ValueError(f"`{name}` must be {expected}. Received: {name}={value!r}")
    return int(value)


def check_choice(name: str, value, choices) -> str:
    """Returns the entry of the string `choices` equal to `value` (a Python
    str, also for a NumPy string), or raises a ValueError naming `name`."""
    if isinstance(value, str):
        for choice in choices:
            if value == choice:
                return choice
    raise ValueError(f"`{name}` must be one of {choices}. Received: {name}={value!r}")


def check_bool(name: str, value) -> bool:
    """Returns `value` if it is True or False, or raises a ValueError naming
    `name`."""
    if isinstance(value, bool):
        return value
    raise ValueError(f"`{name}` must be True or False. Received: {name}={value!r}")


def check_heads_divide(hidden_dim: int, num_heads: int) -> None:
    if hidden_dim % num_heads:
        raise ValueError(
            "`hidden_dim` must be divisible by `num_heads`. Received: "
            f"hidden_dim={hidden_dim}, num_heads={num_heads}"
        )


def check_rate(name: str, value) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (0.0 <= value < 1.0)
    ):
        raise ValueError(
            f"`{name}` must be a float in [0, 1). Received: {name}={value!r}"
        )


def check_epsilon(name: str, value) -> float:
    """Returns `value` as a Python float if it is a finite number > 0, or
    raises a ValueError naming `name`."""
    return _check_finite(name, value, allow_zero=False)


def check_non_negative_number(name: str, value) -> float:
    """Returns `value` as a Python float if it is a finite number >= 0, or
    raises a ValueError naming `name`."""
    return _check_finite(name, value, allow_zero=True)


def _check_finite(name: str, value, allow_zero: bool) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        expected = "a finite number >= 0" if allow_zero else "a positive finite number"
        raise ValueError(f"`{name}` must be {expected}. Received: {name}={value!r}")
    return float(value)


def float32_softmax(logits, axis: int = -1):
    """Softmax computed in float32 (finite under float16/bfloat16 policies).

    Over an axis of static size 1 (one head's gate, one expert's router) the
    softmax is exactly 1 with zero gradient, so that is computed directly
    (`1 + 0 * logits`, which keeps the weights behind `logits` connected to
    the loss), without Keras' size-1 softmax warning on every call.
    """
    logits = ops.cast(logits, "float32")
    if logits.shape[axis] == 1:
        return 1.0 + 0.0 * logits
    return ops.softmax(logits, axis=axis)


def id_mask(ids, num_columns):
    """Boolean `(rows, num_columns)`: True at column `j` of row `r` when `j`
    is one of `ids[r]`.

    Args:
        ids: int32 `(rows, n)`, every entry in `[0, num_columns)` (repeats
            allowed; the caller maps padding and out-of-range ids to a column
            it handles, e.g. 0).
        num_columns: width of the mask.

    The history masks of the training softmax (`loss_excludes_history`) and
    of full-ranking evaluation are both built here: one scatter of ones
    into a `(rows, num_columns)` count matrix.
    """
    rows = ops.shape(ids)[0]
    row_ids = ops.broadcast_to(
        ops.expand_dims(ops.arange(rows, dtype="int32"), 1), ops.shape(ids)
    )
    indices = ops.stack([ops.reshape(row_ids, (-1,)), ops.reshape(ids, (-1,))], axis=1)
    counts = ops.scatter(indices, ops.ones_like(indices[:, 0]), (rows, num_columns))
    return counts > 0
