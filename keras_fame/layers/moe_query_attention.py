"""Multi-head causal self-attention with a mixture-of-experts query per head."""

import math

import keras
from keras import ops

from keras_fame.layers._utils import (
    check_positive_int,
    check_rate,
    clone_initializer,
    default_initializer,
    masked_softmax,
)


@keras.saving.register_keras_serializable(package="keras_fame")
class MoEQueryAttention(keras.layers.Layer):
    """Multi-head self-attention whose query, per head, is a mixture of experts.

    This is FAME's mixture-of-experts self-attention (Eqs. 12-17 of the paper).
    For every head `h` there are `num_experts` query projections
    `W_Q(n)^(h)`, one key projection `W_K^(h)` and one value projection
    `W_V^(h)`, all of shape `(hidden_dim, head_dim)`. Each expert attends on its
    own with the head's shared keys and values:

    ```
    f_i(n)^(h) = sum_j softmax_j(q_i(n)^(h) . k_j^(h) / sqrt(head_dim)) v_j^(h)
    ```

    A router per head mixes the experts' outputs at every position:

    ```
    beta_i^(h) = softmax([f_i(1)^(h) | ... | f_i(N)^(h)] W_exp^(h))
    f_i^(h)    = sum_n beta_i(n)^(h) f_i(n)^(h)
    ```

    There is no output projection: heads stay separate (one facet each), and
    the layer returns `(batch, length, num_heads, head_dim)`. With
    `num_experts=1` the router is identically 1, no router weight is created,
    and the layer is ordinary multi-head attention before the output
    projection (this is how the package's SASRec block uses it).

    Masks: padding positions (False in `padding_mask`) never act as keys, and
    their own output is zero. With `use_causal_mask=True` position `i` only
    sees positions `j <= i`. Softmaxes (attention and router) run in float32,
    so mixed-precision policies stay finite.

    Args:
        num_heads: Number of heads `H`. The input's last dimension must be
            divisible by it; `head_dim = hidden_dim // num_heads`.
        num_experts: Number of query experts `N` per head.
        dropout: Dropout rate on the attention probabilities.
        use_bias: Whether the query, key and value projections have biases.
        kernel_initializer: Initializer of the projection kernels.
        bias_initializer: Initializer of the biases.
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        x: Float tensor `(batch, length, hidden_dim)`.
        padding_mask: Optional boolean `(batch, length)`, True for real items.
            When omitted, a Keras mask attached to `x` is used.
        use_causal_mask: Whether position `i` may only attend to `j <= i`.
        training: Whether dropout is active.
        return_routing: Also return the router weights.

    Returns:
        Head outputs `(batch, length, num_heads, head_dim)`, and with
        `return_routing=True` also the router weights
        `(batch, length, num_heads, num_experts)` (a distribution over experts
        at every position).

    Example:
    >>> layer = keras_fame.layers.MoEQueryAttention(num_heads=2, num_experts=4)
    >>> x = np.random.rand(3, 5, 8).astype("float32")
    >>> layer(x).shape
    (3, 5, 2, 4)

    References:
        - Liu, Zhang & Long, "Facet-Aware Multi-Head Mixture-of-Experts Model
          for Sequential Recommendation", WSDM 2025, Eqs. 12-17.
    """

    def __init__(
        self,
        num_heads: int,
        num_experts: int,
        dropout: float = 0.0,
        use_bias: bool = False,
        kernel_initializer="default",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("num_heads", num_heads)
        check_positive_int("num_experts", num_experts)
        check_rate("dropout", dropout)
        self.num_heads = num_heads
        self.num_experts = num_experts
        self.dropout = dropout
        self.use_bias = bool(use_bias)
        if kernel_initializer == "default":
            kernel_initializer = default_initializer()
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.supports_masking = True
        self.query_kernel = None
        self.key_kernel = None
        self.value_kernel = None
        self.router_kernel = None
        self.query_bias = self.key_bias = self.value_bias = None
        self._dropout_layer = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def build(self, input_shape):
        hidden_dim = input_shape[-1]
        if hidden_dim is None:
            raise ValueError(
                "MoEQueryAttention needs a known last input dimension. "
                f"Received: input_shape={input_shape}"
            )
        if hidden_dim % self.num_heads:
            raise ValueError(
                "The input's last dimension (hidden_dim) must be divisible by "
                f"`num_heads`. Received: hidden_dim={hidden_dim}, "
                f"num_heads={self.num_heads}"
            )
        self.hidden_dim = hidden_dim
        self.head_dim = hidden_dim // self.num_heads
        h, n, k = self.num_heads, self.num_experts, self.head_dim

        def kernel(name, shape):
            return self.add_weight(
                name=name,
                shape=shape,
                initializer=clone_initializer(self.kernel_initializer),
                dtype=self.variable_dtype,
            )

        def bias(name, shape):
            return self.add_weight(
                name=name,
                shape=shape,
                initializer=clone_initializer(self.bias_initializer),
                dtype=self.variable_dtype,
            )

        self.query_kernel = kernel("query_kernel", (hidden_dim, h, n, k))
        self.key_kernel = kernel("key_kernel", (hidden_dim, h, k))
        self.value_kernel = kernel("value_kernel", (hidden_dim, h, k))
        if self.use_bias:
            self.query_bias = bias("query_bias", (h, n, k))
            self.key_bias = bias("key_bias", (h, k))
            self.value_bias = bias("value_bias", (h, k))
        if n > 1:
            self.router_kernel = kernel("router_kernel", (h, n * k, n))
        self.built = True

    def _attention_mask(self, x, padding_mask, use_causal_mask):
        """Boolean mask broadcastable to (batch, heads, experts, query, key)."""
        mask = None
        if padding_mask is not None:
            padding_mask = ops.cast(padding_mask, "bool")
            keys = padding_mask[:, None, None, None, :]
            queries = padding_mask[:, None, None, :, None]
            mask = ops.logical_and(keys, queries)
        if use_causal_mask:
            length = ops.shape(x)[1]
            positions = ops.arange(length)
            causal = ops.greater_equal(positions[:, None], positions[None, :])
            causal = causal[None, None, None, :, :]
            mask = causal if mask is None else ops.logical_and(mask, causal)
        return mask

    def call(
        self,
        x,
        padding_mask=None,
        use_causal_mask=True,
        training=None,
        return_routing=False,
        mask=None,
    ):
        if padding_mask is None:
            padding_mask = mask
        queries = ops.einsum("bld,dhnk->blhnk", x, self.query_kernel)
        keys = ops.einsum("bld,dhk->blhk", x, self.key_kernel)
        values = ops.einsum("bld,dhk->blhk", x, self.value_kernel)
        if self.use_bias:
            queries = queries + self.query_bias
            keys = keys + self.key_bias
            values = values + self.value_bias
        queries = queries * ops.cast(1.0 / math.sqrt(self.head_dim), queries.dtype)

        # (batch, heads, experts, query, key)
        logits = ops.einsum("bqhnk,bshk->bhnqs", queries, keys)
        attention_mask = self._attention_mask(x, padding_mask, use_causal_mask)
        probs = masked_softmax(logits, attention_mask, axis=-1)
        probs = ops.cast(probs, self.compute_dtype)
        probs = self._dropout_layer(probs, training=training)
        # (batch, length, heads, experts, head_dim)
        expert_outputs = ops.einsum("bhnqs,bshk->bqhnk", probs, values)

        if self.num_experts == 1:
            outputs = expert_outputs[:, :, :, 0, :]
            routing = ops.ones_like(expert_outputs[..., 0])
        else:
            h, n, k = self.num_heads, self.num_experts, self.head_dim
            router_kernel = ops.reshape(self.router_kernel, (h, n, k, n))
            router_logits = ops.einsum(
                "blhnk,hnkm->blhm", expert_outputs, router_kernel
            )
            routing = ops.cast(
                masked_softmax(router_logits, None, axis=-1), self.compute_dtype
            )
            outputs = ops.einsum("blhn,blhnk->blhk", routing, expert_outputs)
        if return_routing:
            return outputs, routing
        return outputs

    def compute_output_shape(self, input_shape):
        head_dim = input_shape[-1] // self.num_heads
        return (*input_shape[:-1], self.num_heads, head_dim)

    def compute_output_spec(self, x, return_routing=False, **kwargs):
        shape = self.compute_output_shape(x.shape)
        out = keras.KerasTensor(shape, dtype=self.compute_dtype)
        if return_routing:
            routing = keras.KerasTensor(
                (*x.shape[:-1], self.num_heads, self.num_experts),
                dtype=self.compute_dtype,
            )
            return out, routing
        return out

    def compute_mask(self, x, mask=None, **kwargs):
        return mask

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "num_experts": self.num_experts,
                "dropout": self.dropout,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
