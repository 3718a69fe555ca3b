"""What the SASRec block and the FAME block share (keras.ops only)."""

import keras

from keras_fame.layers._utils import (
    check_epsilon,
    check_heads_divide,
    check_positive_int,
    check_rate,
    clone_initializer,
    default_initializer,
)
from keras_fame.layers.moe_query_attention import MoEQueryAttention


class AttentionBlockBase(keras.layers.Layer):
    """Arguments, checks, sub-layer factories and config of the blocks."""

    def __init__(
        self,
        num_heads: int,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        activation="gelu",
        layer_norm_epsilon: float = 1e-12,
        kernel_initializer="default",
        **kwargs,
    ):
        super().__init__(**kwargs)
        num_heads = check_positive_int("num_heads", num_heads)
        check_rate("dropout", dropout)
        check_rate("attention_dropout", attention_dropout)
        layer_norm_epsilon = check_epsilon("layer_norm_epsilon", layer_norm_epsilon)
        self.num_heads = num_heads
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation = keras.activations.get(activation)
        self.layer_norm_epsilon = layer_norm_epsilon
        if kernel_initializer == "default":
            kernel_initializer = default_initializer()
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def _head_dim(self, hidden_dim: int) -> int:
        check_heads_divide(hidden_dim, self.num_heads)
        return hidden_dim // self.num_heads

    def _attention(
        self, input_shape, num_experts: int, routing_loss_weight: float = 0.0
    ) -> MoEQueryAttention:
        layer = MoEQueryAttention(
            self.num_heads,
            num_experts,
            dropout=self.attention_dropout,
            use_bias=True,
            routing_loss_weight=routing_loss_weight,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            dtype=self.dtype_policy,
            name="attention",
        )
        layer.build(input_shape)
        return layer

    def _dense(self, units: int, input_shape, name: str, activation=None):
        layer = keras.layers.Dense(
            units,
            activation=activation,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            dtype=self.dtype_policy,
            name=name,
        )
        layer.build(input_shape)
        return layer

    def _norm(self, input_shape, name: str):
        layer = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name=name
        )
        layer.build(input_shape)
        return layer

    def _dropout(self):
        return keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
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
