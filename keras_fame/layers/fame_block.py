"""FAME's last block: MoE query attention and the per-head FFN'."""

import keras
from keras import ops

from keras_fame.layers._utils import (
    check_positive_int,
    check_rate,
    clone_initializer,
    default_initializer,
)
from keras_fame.layers.moe_query_attention import MoEQueryAttention


@keras.saving.register_keras_serializable(package="keras_fame")
class FAMEBlock(keras.layers.Layer):
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
    heads, as in the paper. The paper's Figure 2 omits the attention
    sub-layer's residual and LayerNorm; we keep them, taking the per-head
    slice of the block input as the residual, which mirrors the SASRec block
    that FAME replaces and is what makes the warm start from SASRec stable.

    Args:
        num_heads: Number of heads (facets).
        num_experts: Number of query experts per head.
        dropout: Dropout rate of the residual branches.
        attention_dropout: Dropout rate of the attention probabilities.
        activation: Activation of FFN' (the paper uses ReLU).
        layer_norm_epsilon: Epsilon of the LayerNorms.
        kernel_initializer: Initializer of every kernel.
        **kwargs: Base layer arguments.

    Call arguments:
        x: `(batch, length, hidden_dim)`.
        padding_mask: Boolean `(batch, length)`, True for real items.
        training: Whether dropout is active.
        return_routing: Also return the expert routing weights.

    Returns:
        Head states `(batch, length, num_heads, head_dim)`, and with
        `return_routing=True` also `(batch, length, num_heads, num_experts)`.
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
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("num_heads", num_heads)
        check_positive_int("num_experts", num_experts)
        check_rate("dropout", dropout)
        check_rate("attention_dropout", attention_dropout)
        self.num_heads = num_heads
        self.num_experts = num_experts
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation = keras.activations.get(activation)
        self.layer_norm_epsilon = layer_norm_epsilon
        if kernel_initializer == "default":
            kernel_initializer = default_initializer()
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        hidden_dim = input_shape[-1]
        if hidden_dim % self.num_heads:
            raise ValueError(
                "`hidden_dim` must be divisible by `num_heads`. Received: "
                f"hidden_dim={hidden_dim}, num_heads={self.num_heads}"
            )
        self.head_dim = head_dim = hidden_dim // self.num_heads
        head_shape = (*input_shape[:-1], self.num_heads, head_dim)
        policy = self.dtype_policy
        init = self.kernel_initializer
        self.attention = MoEQueryAttention(
            self.num_heads,
            self.num_experts,
            dropout=self.attention_dropout,
            use_bias=True,
            kernel_initializer=clone_initializer(init),
            dtype=policy,
            name="attention",
        )
        self.attention.build(input_shape)
        self.attention_dropout_layer = keras.layers.Dropout(self.dropout, dtype=policy)
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="attention_norm"
        )
        self.attention_norm.build(head_shape)
        self.ffn_inner = keras.layers.Dense(
            head_dim,
            activation=self.activation,
            kernel_initializer=clone_initializer(init),
            dtype=policy,
            name="ffn_inner",
        )
        self.ffn_inner.build(head_shape)
        self.ffn_outer = keras.layers.Dense(
            head_dim,
            kernel_initializer=clone_initializer(init),
            dtype=policy,
            name="ffn_outer",
        )
        self.ffn_outer.build(head_shape)
        self.ffn_dropout = keras.layers.Dropout(self.dropout, dtype=policy)
        self.ffn_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="ffn_norm"
        )
        self.ffn_norm.build(head_shape)
        self.built = True

    def call(self, x, padding_mask=None, training=None, return_routing=False):
        heads, routing = self.attention(
            x, padding_mask=padding_mask, training=training, return_routing=True
        )
        residual = ops.reshape(x, (*ops.shape(x)[:-1], self.num_heads, self.head_dim))
        heads = self.attention_dropout_layer(heads, training=training)
        z = self.attention_norm(residual + heads)
        ffn = self.ffn_dropout(self.ffn_outer(self.ffn_inner(z)), training=training)
        states = self.ffn_norm(z + ffn)
        if return_routing:
            return states, routing
        return states

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.num_heads, input_shape[-1] // self.num_heads)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "num_experts": self.num_experts,
                "dropout": self.dropout,
                "attention_dropout": self.attention_dropout,
                "activation": keras.activations.serialize(self.activation),
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
            }
        )
        return config
