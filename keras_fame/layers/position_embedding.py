"""Learned position embedding of left-padded item sequences (keras.ops only)."""

import keras
from keras import ops

from keras_fame.layers._utils import check_choice, default_initializer

ANCHORS = ("end", "start")
"""The values of `PositionEmbedding`'s `anchor`."""


@keras.saving.register_keras_serializable(package="keras_fame")
class PositionEmbedding(keras.layers.Layer):
    """Learned position embedding of left-padded sequences.

    With `anchor="end"` (SASRec's convention) positions count back from the
    last column: the most recent item always gets embedding `max_len - 1`, the
    one before it `max_len - 2`, and so on. With `anchor="start"` they count
    forward from each row's first item (the first non-padding column gets
    embedding 0), as in RecBole's right-padded SASRec: an item's position is
    then the same whether it is read as part of a training sequence or of a
    shorter prefix of it, so next-item training at every position sees each
    prefix exactly as evaluation will.

    Either way a history padded to `T` and the same history padded to
    `max_len` produce identical outputs.

    Args:
        max_len: Number of positions.
        hidden_dim: Embedding size.
        anchor: `"end"` or `"start"` (see above).
    """

    def __init__(
        self,
        max_len: int,
        hidden_dim: int,
        initializer="default",
        anchor: str = "end",
        **kwargs,
    ):
        super().__init__(**kwargs)
        anchor = check_choice("anchor", anchor, ANCHORS)
        self.max_len = max_len
        self.hidden_dim = hidden_dim
        self.anchor = anchor
        if initializer == "default":
            initializer = default_initializer()
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.max_len, self.hidden_dim),
            initializer=self.initializer,
            dtype=self.variable_dtype,
        )
        self.built = True

    def call(self, item_ids):
        length = item_ids.shape[1]
        if length is not None and length > self.max_len:
            raise ValueError(
                f"Sequences may hold at most max_len={self.max_len} items. "
                f"Received item_ids of shape {tuple(item_ids.shape)}; keep the "
                "most recent max_len items (model.score and model.recommend "
                "do this for you)."
            )
        length = ops.shape(item_ids)[1]
        embeddings = ops.cast(self.embeddings, self.compute_dtype)
        if self.anchor == "end":
            return embeddings[self.max_len - length :][None, :, :]
        # Column of each row's first item (0 for an all-padding row).
        is_item = ops.cast(ops.not_equal(item_ids, 0), "int32")
        first = ops.argmax(is_item, axis=1)
        positions = (
            ops.arange(length, dtype="int32")[None, :]
            - ops.cast(first, "int32")[:, None]
        )
        positions = ops.clip(positions, 0, self.max_len - 1)
        return ops.take(embeddings, positions, axis=0)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "max_len": self.max_len,
                "hidden_dim": self.hidden_dim,
                "initializer": keras.initializers.serialize(self.initializer),
                "anchor": self.anchor,
            }
        )
        return config
