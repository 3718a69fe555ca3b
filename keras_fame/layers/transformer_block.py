"""The SASRec Transformer block."""

import keras
from keras import ops

from keras_fame.layers._block_base import AttentionBlockBase
from keras_fame.layers._utils import check_positive_int, clone_initializer


@keras.saving.register_keras_serializable(package="keras_fame")
class TransformerBlock(AttentionBlockBase):
    """One causal self-attention block of SASRec (post-LayerNorm).

    `y = LayerNorm(x + Dropout(MHA(x) W_O))`, then
    `out = LayerNorm(y + Dropout(FFN(y)))` with
    `FFN(y) = act(y W_1 + b_1) W_2 + b_2`, as in the S3-Rec/ICLRec SASRec that
    the paper compares with. The attention is a `MoEQueryAttention` with one
    expert (plain multi-head attention), so that FAME can take over its key
    and value matrices (`FAME.from_sasrec`).

    Args:
        num_heads: Number of attention heads.
        intermediate_dim: Inner size of the feed-forward network.
        dropout: Dropout rate of the residual branches.
        attention_dropout: Dropout rate of the attention probabilities.
        activation: Activation of the feed-forward network.
        layer_norm_epsilon: Epsilon of the LayerNorms.
        kernel_initializer: Initializer of every kernel.
        **kwargs: Base layer arguments.

    Call arguments:
        x: `(batch, length, hidden_dim)`.
        padding_mask: Boolean `(batch, length)`, True for real items.
        training: Whether dropout is active.
        last_position_only: Compute the last position's output only (equal
            to the last position of the full output, at a fraction of the
            cost).

    Returns:
        `(batch, length, hidden_dim)`; `(batch, 1, hidden_dim)` with
        `last_position_only=True`.
    """

    def __init__(
        self,
        num_heads: int,
        intermediate_dim: int,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        activation="gelu",
        layer_norm_epsilon: float = 1e-12,
        kernel_initializer="default",
        **kwargs,
    ):
        super().__init__(
            num_heads,
            dropout=dropout,
            attention_dropout=attention_dropout,
            activation=activation,
            layer_norm_epsilon=layer_norm_epsilon,
            kernel_initializer=kernel_initializer,
            **kwargs,
        )
        intermediate_dim = check_positive_int("intermediate_dim", intermediate_dim)
        self.intermediate_dim = intermediate_dim
        self.supports_masking = True

    def build(self, input_shape):
        hidden_dim = input_shape[-1]
        head_dim = self._head_dim(hidden_dim)
        self.attention = self._attention(input_shape, num_experts=1)
        self.output_kernel = self.add_weight(
            name="output_kernel",
            shape=(self.num_heads, head_dim, hidden_dim),
            initializer=clone_initializer(self.kernel_initializer),
            dtype=self.variable_dtype,
        )
        self.output_bias = self.add_weight(
            name="output_bias",
            shape=(hidden_dim,),
            initializer="zeros",
            dtype=self.variable_dtype,
        )
        self.attention_dropout_layer = self._dropout()
        self.attention_norm = self._norm(input_shape, "attention_norm")
        self.ffn_inner = self._dense(
            self.intermediate_dim, input_shape, "ffn_inner", self.activation
        )
        self.ffn_outer = self._dense(
            hidden_dim, (*input_shape[:-1], self.intermediate_dim), "ffn_outer"
        )
        self.ffn_dropout = self._dropout()
        self.ffn_norm = self._norm(input_shape, "ffn_norm")
        self.built = True

    def call(
        self, x, padding_mask=None, training=None, mask=None, last_position_only=False
    ):
        if padding_mask is None:
            padding_mask = mask
        heads = self.attention(
            x,
            padding_mask=padding_mask,
            training=training,
            last_position_only=last_position_only,
        )
        if last_position_only:
            x = x[:, -1:]
        attended = ops.einsum("blhk,hkd->bld", heads, self.output_kernel)
        attended = attended + self.output_bias
        attended = self.attention_dropout_layer(attended, training=training)
        x = self.attention_norm(x + attended)
        ffn = self.ffn_outer(self.ffn_inner(x))
        ffn = self.ffn_dropout(ffn, training=training)
        return self.ffn_norm(x + ffn)

    def compute_output_shape(self, input_shape, last_position_only=False):
        if last_position_only:
            return (input_shape[0], 1, *input_shape[2:])
        return input_shape

    def compute_mask(self, x, mask=None, **kwargs):
        return mask

    def get_config(self):
        config = super().get_config()
        config["intermediate_dim"] = self.intermediate_dim
        return config
