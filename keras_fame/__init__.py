"""keras-fame: FAME sequential recommendation for Keras 3.

`keras_fame.layers` and `keras_fame.models` use `keras.ops` only and run on
any Keras backend. The TensorFlow-side modules (`config`, `config_records`,
`datasets`, `evaluation`, `training`, `inspection`, `export`, `serving_rest`)
are imported on first use.
"""

import importlib

from keras_fame import layers, models

__version__ = "0.1.0"

_LAZY = (
    "config",
    "config_records",
    "datasets",
    "evaluation",
    "export",
    "inspection",
    "serving_rest",
    "training",
)

__all__ = ["layers", "models", *_LAZY, "__version__"]


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f"keras_fame.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'keras_fame' has no attribute {name!r}")
