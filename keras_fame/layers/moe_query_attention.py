"""Multi-head causal self-attention with a mixture-of-experts query per head."""

import math

import keras
from keras import ops

from keras_fame.layers._utils import (
    _MASK_VALUE,
    check_non_negative_number,
    check_positive_int,
    check_rate,
    clone_initializer,
    default_initializer,
    float32_softmax,
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

    Routing loss (optional, not in the paper): with `routing_loss_weight > 0`
    and `num_experts > 1`, a training call adds (`add_loss`) the weight times

    ```
    mean_h [ mean_i H(beta_i^(h)) - H(mean_i beta_i^(h)) ] / log N
    ```

    over the real query positions `i` of the batch (of each replica's batch
    under a distribution strategy; the last positions only with
    `last_position_only`), `H` the entropy. This is minus the mutual
    information between position and expert, normalised to [-1, 0] (up to
    float32 round-off): it rewards each position for choosing few experts
    and the batch for using all of them alike. Experts that compute the same
    thing give the router no gradient from the recommendation loss, and a
    router that weighs them evenly gives them the same gradient
    (`keras_fame.inspection.expert_usage` measures both); this loss is meant
    to break that symmetry.

    Masks: padding positions (False in `padding_mask`) never act as keys, and
    their own output is zero (their router weights are meaningless). With
    `use_causal_mask=True` position `i` only sees positions `j <= i`. The
    masks become one float32 additive bias; softmaxes (attention and router)
    run in float32, so mixed-precision policies stay finite.

    Args:
        num_heads: Number of heads `H`. The input's last dimension must be
            divisible by it; `head_dim = hidden_dim // num_heads`.
        num_experts: Number of query experts `N` per head.
        dropout: Dropout rate on the attention probabilities.
        use_bias: Whether the query, key and value projections have biases.
        kernel_initializer: Initializer of the projection kernels.
        bias_initializer: Initializer of the biases.
        routing_loss_weight: Weight of the routing loss above (0: none, the
            paper's model; ignored with one expert).
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        x: Float tensor `(batch, length, hidden_dim)`.
        padding_mask: Optional boolean `(batch, length)`, True for real items.
            When omitted, a Keras mask attached to `x` is used.
        use_causal_mask: Whether position `i` may only attend to `j <= i`.
        training: Whether dropout is active and the routing loss is added.
        return_routing: Also return the router weights.
        last_position_only: Compute the output of the last position only
            (its queries attend to every position's keys and values as
            usual). The result equals the last position of the full output,
            at a fraction of the cost: what next-item scoring and one-target
            training rows need.

    Returns:
        Head outputs `(batch, length, num_heads, head_dim)`, and with
        `return_routing=True` also the router weights
        `(batch, length, num_heads, num_experts)` (a distribution over experts
        at every position). With `last_position_only=True` the length axis
        of both has size 1.

    Example:
    >>> layer = keras_fame.layers.MoEQueryAttention(num_heads=2, num_experts=4)
    >>> x = np.random.rand(3, 5, 8).astype("float32")
    >>> tuple(layer(x).shape)
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
        routing_loss_weight: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        num_heads = check_positive_int("num_heads", num_heads)
        num_experts = check_positive_int("num_experts", num_experts)
        check_rate("dropout", dropout)
        self.num_heads = num_heads
        self.num_experts = num_experts
        self.dropout = dropout
        self.use_bias = bool(use_bias)
        self.routing_loss_weight = check_non_negative_number(
            "routing_loss_weight", routing_loss_weight
        )
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

    def _attention_bias(self, x, padding_mask, use_causal_mask, last_position_only):
        """Additive float32 bias `(batch or 1, 1, 1, query, key)`: 0 or -1e9."""
        allowed = None
        if padding_mask is not None:
            allowed = ops.cast(padding_mask, "bool")[:, None, None, None, :]
        # The last position may see every position: no causal mask needed.
        if use_causal_mask and not last_position_only:
            positions = ops.arange(ops.shape(x)[1])
            causal = ops.greater_equal(positions[:, None], positions[None, :])
            causal = causal[None, None, None, :, :]
            allowed = causal if allowed is None else ops.logical_and(allowed, causal)
        if allowed is None:
            return None
        return ops.where(allowed, 0.0, _MASK_VALUE)

    def call(
        self,
        x,
        padding_mask=None,
        use_causal_mask=True,
        training=None,
        return_routing=False,
        mask=None,
        last_position_only=False,
    ):
        if padding_mask is None:
            padding_mask = mask
        outputs, routing, _, routing32 = self._forward(
            x, padding_mask, use_causal_mask, training, last_position_only
        )
        if training and self.routing_loss_weight and self.num_experts > 1:
            query_mask = padding_mask
            if last_position_only and padding_mask is not None:
                query_mask = padding_mask[:, -1:]
            # From the float32 router softmax: near-even routing (where it
            # starts) rounded to half precision would distort the loss.
            loss = routing_loss(routing32, query_mask)
            self.add_loss(self.routing_loss_weight * loss)
        if return_routing:
            return outputs, routing
        return outputs

    def experts(
        self, x, padding_mask=None, use_causal_mask=True, last_position_only=False
    ):
        """Every expert's own output, beside the mixture (inference, no dropout).

        What the router mixes: `f_i(n)^(h)` of Eq. 15 for every expert `n`.
        Experts whose outputs agree (and a router that weighs them evenly)
        make the mixture no more than one attention per head; see
        `keras_fame.inspection.expert_usage`.

        Args:
            x, padding_mask, use_causal_mask, last_position_only: as in `call`.

        Returns:
            A dict of tensors: `outputs` `(batch, length, num_heads, head_dim)`
            and `routing` `(batch, length, num_heads, num_experts)` (as `call`
            with `return_routing=True`), and `expert_outputs`
            `(batch, length, num_heads, num_experts, head_dim)` (zero at
            padding positions).
        """
        x = ops.convert_to_tensor(x, dtype=self.compute_dtype)
        if not self.built:
            self.build(x.shape)
        outputs, routing, expert_outputs, _ = self._forward(
            x, padding_mask, use_causal_mask, False, last_position_only
        )
        expert_outputs = ops.transpose(expert_outputs, (0, 3, 1, 2, 4))
        if padding_mask is not None:
            is_real = padding_mask[:, -1:] if last_position_only else padding_mask
            is_real = ops.cast(is_real, expert_outputs.dtype)[:, :, None, None, None]
            expert_outputs = expert_outputs * is_real
        return {
            "outputs": outputs,
            "routing": routing,
            "expert_outputs": expert_outputs,
        }

    def _forward(self, x, padding_mask, use_causal_mask, training, last_position_only):
        """`(outputs, routing, expert_outputs, routing32)`: `expert_outputs`
        is `(b, h, n, l, k)`, `routing32` the router's float32 softmax (None
        with one expert)."""
        h, n, k = self.num_heads, self.num_experts, self.head_dim
        length = ops.shape(x)[1]
        query_input = x[:, -1:] if last_position_only else x
        if last_position_only and padding_mask is not None:
            query_mask = padding_mask[:, -1:]
        else:
            query_mask = padding_mask
        queries_length = ops.shape(query_input)[1]
        # Layouts are chosen so that both attention products are plain batched
        # matmuls over (batch, head), the experts' queries stacked along rows.
        queries = ops.einsum("bld,dhnk->bhnlk", query_input, self.query_kernel)
        keys = ops.einsum("bld,dhk->bhlk", x, self.key_kernel)
        values = ops.einsum("bld,dhk->bhlk", x, self.value_kernel)
        if self.use_bias:
            queries = queries + self.query_bias[None, :, :, None, :]
            keys = keys + self.key_bias[None, :, None, :]
            values = values + self.value_bias[None, :, None, :]
        queries = queries * ops.cast(1.0 / math.sqrt(k), queries.dtype)
        queries = ops.reshape(queries, (-1, h, n * queries_length, k))

        logits = ops.matmul(queries, ops.swapaxes(keys, -1, -2))
        logits = ops.reshape(logits, (-1, h, n, queries_length, length))
        logits = ops.cast(logits, "float32")
        bias = self._attention_bias(
            x, padding_mask, use_causal_mask, last_position_only
        )
        if bias is not None:
            logits = logits + bias
        probs = ops.cast(float32_softmax(logits, axis=-1), self.compute_dtype)
        probs = self._dropout_layer(probs, training=training)
        probs = ops.reshape(probs, (-1, h, n * queries_length, length))
        # (batch, heads, experts, query length, head_dim)
        expert_outputs = ops.reshape(
            ops.matmul(probs, values), (-1, h, n, queries_length, k)
        )

        if n == 1:
            outputs = ops.transpose(expert_outputs[:, :, 0], (0, 2, 1, 3))
            routing = ops.ones_like(outputs[..., :1])
            routing32 = None
        else:
            router_kernel = ops.reshape(self.router_kernel, (h, n, k, n))
            router_logits = ops.einsum(
                "bhnlk,hnkm->blhm", expert_outputs, router_kernel
            )
            routing32 = float32_softmax(router_logits, axis=-1)
            routing = ops.cast(routing32, self.compute_dtype)
            outputs = ops.einsum("blhn,bhnlk->blhk", routing, expert_outputs)
        if query_mask is not None:
            # Padding positions attend to nothing: their output is zero.
            is_real = ops.cast(query_mask, outputs.dtype)[:, :, None, None]
            outputs = outputs * is_real
        return outputs, routing, expert_outputs, routing32

    def compute_output_shape(self, input_shape):
        head_dim = input_shape[-1] // self.num_heads
        return (*input_shape[:-1], self.num_heads, head_dim)

    def compute_output_spec(
        self, x, return_routing=False, last_position_only=False, **kwargs
    ):
        shape = self.compute_output_shape(x.shape)
        if last_position_only:
            shape = (shape[0], 1, *shape[2:])
        out = keras.KerasTensor(shape, dtype=self.compute_dtype)
        if return_routing:
            routing = keras.KerasTensor(
                (*shape[:2], self.num_heads, self.num_experts),
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
                "routing_loss_weight": self.routing_loss_weight,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config


def routing_loss(routing, padding_mask=None):
    """Minus the position/expert mutual information of a routing, over log N.

    Args:
        routing: Router weights `(batch, length, num_heads, num_experts)`, a
            distribution over the experts at every position
            (`num_experts > 1`).
        padding_mask: Optional boolean `(batch, length)`, True for the
            positions that count.

    Returns:
        A float32 scalar in [-1, 0] (up to round-off): the mean over heads of
        `(mean_i H(beta_i) - H(mean_i beta_i)) / log N`. 0 when every
        position routes alike; -1 when each position picks one expert and
        every expert is picked equally often.
    """
    routing = ops.cast(routing, "float32")
    num_experts = routing.shape[-1]
    if num_experts is None or num_experts < 2:
        raise ValueError(
            "`routing` must have a known last axis of at least 2 experts. "
            f"Received: shape={routing.shape}"
        )
    if padding_mask is None:
        weights = ops.ones_like(routing[..., :1, :1])
    else:
        weights = ops.cast(padding_mask, "float32")[:, :, None, None]
    count = ops.maximum(ops.sum(weights), 1.0)

    def entropy(p):
        return -ops.sum(p * ops.log(p + 1e-9), axis=-1)

    mean_routing = ops.sum(routing * weights, axis=(0, 1)) / count  # (h, n)
    each = ops.sum(entropy(routing) * weights[..., 0], axis=(0, 1)) / count  # (h,)
    return ops.mean(each - entropy(mean_routing)) / math.log(num_experts)
