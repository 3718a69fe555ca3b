"""SASRec: self-attentive sequential recommendation."""

import keras

from keras_fame.models.base import SequentialRecommender


@keras.saving.register_keras_serializable(package="keras_fame")
class SASRec(SequentialRecommender):
    """SASRec (Kang & McAuley, 2018) trained with full-softmax cross-entropy.

    Item plus learned position embedding, LayerNorm and dropout, then
    `num_blocks` causal `TransformerBlock`s (post-LayerNorm, GELU FFN of size
    `intermediate_dim`, as in the S3-Rec/ICLRec code the FAME paper compares
    with). The score of item `v` after position `t` is `E[v] . F_t` (Eq. 6).

    Args:
        num_items: Number of items; ids are `1..num_items`, 0 is padding.
        max_len: Longest history the model reads (its context window).
        hidden_dim: Embedding and hidden size `d`.
        num_blocks: Number of Transformer blocks `L`.
        num_heads: Attention heads per block.
        dropout: Dropout of the embeddings and residual branches.
        attention_dropout: Dropout of the attention probabilities (defaults to
            `dropout`).
        intermediate_dim: FFN inner size (defaults to `4 * hidden_dim`).
        activation: FFN activation.
        position_anchor: Where positions are counted from: `"end"` (the
            most recent item, SASRec's convention) or `"start"` (each
            sequence's first item); see `PositionEmbedding`.
        layer_norm_epsilon: Epsilon of every LayerNorm (1e-12, as in the
            S3-Rec/ICLRec code). A LayerNorm of an exactly constant vector
            multiplies its (centred) input gradient by
            `1 / sqrt(layer_norm_epsilon)`, 1e6. With a tiny `hidden_dim` (8)
            and dropout 0.5, the embedding dropout now and then zeroes the
            whole embedding of a sequence's first item, which attends only to
            itself; at initialisation (zero biases) every LayerNorm above it
            then sees a zero vector, and the gradient overflows Adam. Use a
            larger `hidden_dim`, a lower rate, or an epsilon such as 1e-6.
        label_smoothing: Share `e` in [0, 1) of the training target's
            probability spread evenly over all items: the loss is the
            cross-entropy against `(1 - e)` on the target plus `e / num_items`
            on every item (`e` spread over the candidates, with
            `loss_excludes_history`). 0 (default): plain cross-entropy. Full
            softmax only.
        loss_excludes_history: Leave the items a position has read out of
            its training softmax, as the evaluation leaves a user's history
            out of the candidates; label smoothing then spreads over the
            remaining items. A target the position has read before stays in
            and is trained on (the evaluation counts such a target as a
            miss). A row's history is what it feeds the model: items
            before its `max_len` inputs stay in. False (default): every item
            is a negative, as in the paper. Full softmax only.
        **kwargs: `keras.Model` arguments (`name`, `dtype`).

    Example:
    >>> model = keras_fame.models.SASRec(num_items=100, max_len=20, hidden_dim=16)
    >>> model.compile(optimizer="adam")
    >>> ids, scores = model.recommend(np.array([[0, 0, 3, 7, 9]]), k=5)

    References:
        - Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018.
    """

    def __init__(self, num_items: int, **kwargs):
        super().__init__(num_items, **kwargs)
        self.build()

    def _build_encoder(self, shape):
        self.blocks = self._transformer_blocks(self.num_blocks, shape)

    def _encode(
        self, x, padding_mask, training=None, details=False, last_position_only=False
    ):
        for block in self.blocks[:-1]:
            x = block(x, padding_mask=padding_mask, training=training)
        return self.blocks[-1](
            x,
            padding_mask=padding_mask,
            training=training,
            last_position_only=last_position_only,
        )
