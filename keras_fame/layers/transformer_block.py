"""The SASRec Transformer block."""

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
class TransformerBlock(keras.layers.Layer):
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

    Returns:
        `(batch, length, hidden_dim)`.
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
        super().__init__(**kwargs)
        check_positive_int("num_heads", num_heads)
        check_positive_int("intermediate_dim", intermediate_dim)
        check_rate("dropout", dropout)
        check_rate("attention_dropout", attention_dropout)
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation = keras.activations.get(activation)
        self.layer_norm_epsilon = layer_norm_epsilon
        if kernel_initializer == "default":
            kernel_initializer = default_initializer()
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.supports_masking = True

    def build(self, input_shape):
        hidden_dim = input_shape[-1]
        if hidden_dim % self.num_heads:
            raise ValueError(
                "`hidden_dim` must be divisible by `num_heads`. Received: "
                f"hidden_dim={hidden_dim}, num_heads={self.num_heads}"
            )
        head_dim = hidden_dim // self.num_heads
        policy = self.dtype_policy
        init = self.kernel_initializer
        self.attention = MoEQueryAttention(
            self.num_heads,
            num_experts=1,
            dropout=self.attention_dropout,
            use_bias=True,
            kernel_initializer=clone_initializer(init),
            dtype=policy,
            name="attention",
        )
        self.attention.build(input_shape)
        self.output_kernel = self.add_weight(
            name="output_kernel",
            shape=(self.num_heads, head_dim, hidden_dim),
            initializer=clone_initializer(init),
            dtype=self.variable_dtype,
        )
        self.output_bias = self.add_weight(
            name="output_bias",
            shape=(hidden_dim,),
            initializer="zeros",
            dtype=self.variable_dtype,
        )
        self.attention_dropout_layer = keras.layers.Dropout(self.dropout, dtype=policy)
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="attention_norm"
        )
        self.attention_norm.build(input_shape)
        self.ffn_inner = keras.layers.Dense(
            self.intermediate_dim,
            activation=self.activation,
            kernel_initializer=clone_initializer(init),
            dtype=policy,
            name="ffn_inner",
        )
        self.ffn_inner.build(input_shape)
        self.ffn_outer = keras.layers.Dense(
            hidden_dim,
            kernel_initializer=clone_initializer(init),
            dtype=policy,
            name="ffn_outer",
        )
        self.ffn_outer.build((*input_shape[:-1], self.intermediate_dim))
        self.ffn_dropout = keras.layers.Dropout(self.dropout, dtype=policy)
        self.ffn_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="ffn_norm"
        )
        self.ffn_norm.build(input_shape)
        self.built = True

    def call(self, x, padding_mask=None, training=None, mask=None):
        if padding_mask is None:
            padding_mask = mask
        heads = self.attention(x, padding_mask=padding_mask, training=training)
        attended = ops.einsum("blhk,hkd->bld", heads, self.output_kernel)
        attended = attended + self.output_bias
        attended = self.attention_dropout_layer(attended, training=training)
        x = self.attention_norm(x + attended)
        ffn = self.ffn_outer(self.ffn_inner(x))
        ffn = self.ffn_dropout(ffn, training=training)
        return self.ffn_norm(x + ffn)

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_mask(self, x, mask=None, **kwargs):
        return mask

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
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
