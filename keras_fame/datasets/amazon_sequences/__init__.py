"""TFDS builder for the Amazon 5-core sequence datasets (`amazon_sequences`).

Importing this package registers the builder with TensorFlow Datasets:

>>> import keras_fame.datasets.amazon_sequences  # doctest: +SKIP
>>> import tensorflow_datasets as tfds  # doctest: +SKIP
>>> ds = tfds.load("amazon_sequences/beauty", split="train")  # doctest: +SKIP
"""

from keras_fame.datasets.amazon_sequences.amazon_sequences import (
    AmazonSequences,
    from_tfds,
)

__all__ = ["AmazonSequences", "from_tfds"]
