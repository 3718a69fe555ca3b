"""FAME's last block: MoE query attention and the per-head FFN'."""

import keras
from keras import ops

from keras_fame.layers._block_base import AttentionBlockBase
from keras_fame.layers._utils import (
    check_bool,
    check_non_negative_number,
    check_positive_int,
)


@keras.saving.register_keras_serializable(package="keras_fame")
class FAMEBlock(AttentionBlockBase):
    """FAME's last block: per-head MoE attention and a shared per-head FFN'.

    For every head `h` (one facet), with `x^(h)` the head's slice of the block
    input (`x` reshaped to `(..., num_heads, head_dim)`):

    ```
    f^(h) = MoEQueryAttention(x)^(h)                     (Eqs. 12-17)
    z^(h) = LayerNorm(x^(h) + Dropout(f^(h)))            (attention residual)
    F^(h) = LayerNorm(z^(h) + Dropout(FFN'(z^(h))))      (Eq. 7)
    FFN'(z) = ReLU(z W1' + b1') W2' + b2'                (W1', W2': head_dim^2)
    ```

    One FFN' and one pair of LayerNorms (over `head_dim`) are shared by all
    heads, as in the paper. The paper's Figure 2 and Eq. 7 omit the attention
    sub-layer's residual and LayerNorm; by default we keep them, taking the
    per-head slice of the block input as the residual, which mirrors the
    SASRec block that FAME replaces and is what makes the warm start from
    SASRec stable. With `attention_residual=False` the block is Eq. 7 as
    written: `z^(h) = f^(h)` (no residual, dropout or LayerNorm there).

    Args:
        num_heads: Number of heads (facets).
        num_experts: Number of query experts per head.
        dropout: Dropout rate of the residual branches.
        attention_dropout: Dropout rate of the attention probabilities.
        activation: Activation of FFN' (the paper uses ReLU).
        layer_norm_epsilon: Epsilon of the LayerNorms.
        kernel_initializer: Initializer of every kernel.
        routing_loss_weight: Weight of the attention's routing loss (see
            `MoEQueryAttention`; 0: none, the paper's model).
        attention_residual: Whether the attention sub-layer has its residual
            and LayerNorm (default True; False: Eq. 7 as written).
        **kwargs: Base layer arguments.

    Call arguments:
        x: `(batch, length, hidden_dim)`.
        padding_mask: Boolean `(batch, length)`, True for real items.
        training: Whether dropout is active and the routing loss is added.
        return_routing: Also return the expert routing weights.
        last_position_only: Compute the last position only (equal to the
            last position of the full output, at a fraction of the cost).

    Returns:
        Head states `(batch, length, num_heads, head_dim)`, and with
        `return_routing=True` also `(batch, length, num_heads, num_experts)`;
        with `last_position_only=True` the length axis has size 1.
    """

    def __init__(
        self,
        num_heads: int,
        num_experts: int,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        activation="relu",
        layer_norm_epsilon: float = 1e-12,
        kernel_initializer="default",
        routing_loss_weight: float = 0.0,
        attention_residual: bool = True,
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
        num_experts = check_positive_int("num_experts", num_experts)
        self.num_experts = num_experts
        self.routing_loss_weight = check_non_negative_number(
            "routing_loss_weight", routing_loss_weight
        )
        self.attention_residual = check_bool("attention_residual", attention_residual)

    def build(self, input_shape):
        self.head_dim = head_dim = self._head_dim(input_shape[-1])
        head_shape = (*input_shape[:-1], self.num_heads, head_dim)
        self.attention = self._attention(
            input_shape, self.num_experts, self.routing_loss_weight
        )
        if self.attention_residual:
            self.attention_dropout_layer = self._dropout()
            self.attention_norm = self._norm(head_shape, "attention_norm")
        self.ffn_inner = self._dense(head_dim, head_shape, "ffn_inner", self.activation)
        self.ffn_outer = self._dense(head_dim, head_shape, "ffn_outer")
        self.ffn_dropout = self._dropout()
        self.ffn_norm = self._norm(head_shape, "ffn_norm")
        self.built = True

    def call(
        self,
        x,
        padding_mask=None,
        training=None,
        return_routing=False,
        last_position_only=False,
    ):
        heads, routing = self.attention(
            x,
            padding_mask=padding_mask,
            training=training,
            return_routing=True,
            last_position_only=last_position_only,
        )
        z = heads
        if self.attention_residual:
            if last_position_only:
                x = x[:, -1:]
            shape = (*ops.shape(x)[:-1], self.num_heads, self.head_dim)
            heads = self.attention_dropout_layer(heads, training=training)
            z = self.attention_norm(ops.reshape(x, shape) + heads)
        ffn = self.ffn_dropout(self.ffn_outer(self.ffn_inner(z)), training=training)
        states = self.ffn_norm(z + ffn)
        if return_routing:
            return states, routing
        return states

    def compute_output_shape(self, input_shape, last_position_only=False):
        length = 1 if last_position_only else input_shape[1]
        return (
            input_shape[0],
            length,
            self.num_heads,
            input_shape[-1] // self.num_heads,
        )

    def get_config(self):
        config = super().get_config()
        config["num_experts"] = self.num_experts
        config["routing_loss_weight"] = self.routing_loss_weight
        config["attention_residual"] = self.attention_residual
        return config
