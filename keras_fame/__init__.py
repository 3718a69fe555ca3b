"""keras-fame: FAME sequential recommendation for Keras 3."""

from keras_fame import layers, models

__version__ = "0.1.0"

__all__ = ["layers", "models", "__version__"]
