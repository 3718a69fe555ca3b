"""Per-head (facet) item scoring mixed by a learned gate."""

import keras
from keras import ops

from keras_fame.layers._utils import (
    check_positive_int,
    clone_initializer,
    default_initializer,
    float32_softmax,
)


@keras.saving.register_keras_serializable(package="keras_fame")
class FacetGatedScorer(keras.layers.Layer):
    """Scores items per head (facet) and mixes the scores with a learned gate.

    FAME's facet-aware prediction (Eqs. 8-11 of the paper). Head `h` projects
    every item embedding into its own sub-space with `W_f^(h)`
    (`(hidden_dim, head_dim)`) and scores it against the head state `F^(h)`:
    `P^(h)(v) = (E[v] W_f^(h)) . F^(h)`. A gate reads the concatenated head
    states, `g = softmax([F^(1) | ... | F^(H)] W_g + b_g)`, and the final
    score is `P(v) = sum_h g_h P^(h)(v)`.

    Because `P(v) = E[v] . (sum_h g_h W_f^(h) F^(h))`, scoring all candidates
    costs one matrix product with the item table: the layer first builds the
    `hidden_dim`-vector in brackets (`query()`), then multiplies it with the
    candidates, exactly as SASRec scores items. Per-head scores, needed only
    for inspection, are available from `head_scores()`.

    Args:
        num_heads: Number of heads `H`.
        kernel_initializer: Initializer of `facet_kernel` and `gate_kernel`.
        bias_initializer: Initializer of `gate_bias`.
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        head_states: Float tensor `(..., num_heads, head_dim)`.
        item_embeddings: Float tensor `(num_candidates, hidden_dim)`.
        return_gate: Also return the gate.

    Returns:
        Scores `(..., num_candidates)`, and with `return_gate=True` also the
        gate `(..., num_heads)`, a distribution over heads.

    Example:
    >>> scorer = keras_fame.layers.FacetGatedScorer(num_heads=2)
    >>> states = np.random.rand(3, 2, 4).astype("float32")
    >>> items = np.random.rand(10, 8).astype("float32")
    >>> tuple(scorer(states, items).shape)
    (3, 10)

    References:
        - Liu, Zhang & Long, "Facet-Aware Multi-Head Mixture-of-Experts Model
          for Sequential Recommendation", WSDM 2025, Eqs. 8-11.
    """

    def __init__(
        self,
        num_heads: int,
        kernel_initializer="default",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        num_heads = check_positive_int("num_heads", num_heads)
        self.num_heads = num_heads
        if kernel_initializer == "default":
            kernel_initializer = default_initializer()
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.facet_kernel = None
        self.gate_kernel = None
        self.gate_bias = None

    def build(self, head_states_shape, item_embeddings_shape=None):
        if head_states_shape[-2] != self.num_heads:
            raise ValueError(
                "`head_states` must have shape (..., num_heads, head_dim) with "
                f"num_heads={self.num_heads}. Received shape: {head_states_shape}"
            )
        if item_embeddings_shape is None or item_embeddings_shape[-1] is None:
            raise ValueError(
                "FacetGatedScorer needs the item embedding size: build it with "
                "`build(head_states_shape, item_embeddings_shape)`. Received: "
                f"item_embeddings_shape={item_embeddings_shape}"
            )
        self.head_dim = head_states_shape[-1]
        self.hidden_dim = item_embeddings_shape[-1]
        h, k, d = self.num_heads, self.head_dim, self.hidden_dim
        self.facet_kernel = self.add_weight(
            name="facet_kernel",
            shape=(h, d, k),
            initializer=clone_initializer(self.kernel_initializer),
            dtype=self.variable_dtype,
        )
        self.gate_kernel = self.add_weight(
            name="gate_kernel",
            shape=(h * k, h),
            initializer=clone_initializer(self.kernel_initializer),
            dtype=self.variable_dtype,
        )
        self.gate_bias = self.add_weight(
            name="gate_bias",
            shape=(h,),
            initializer=clone_initializer(self.bias_initializer),
            dtype=self.variable_dtype,
        )
        self.built = True

    def gate(self, head_states):
        """The head gate `g` (Eq. 10): `(..., num_heads)`, a distribution."""
        h, k = self.num_heads, self.head_dim
        kernel = ops.reshape(self.gate_kernel, (h, k, h))
        logits = ops.einsum("...hk,hkg->...g", head_states, kernel) + self.gate_bias
        return ops.cast(float32_softmax(logits, axis=-1), self.compute_dtype)

    def query(self, head_states, return_gate=False):
        """The scoring vector `sum_h g_h W_f^(h) F^(h)`: `(..., hidden_dim)`.

        Its inner product with an item embedding is the item's final score.
        """
        gate = self.gate(head_states)
        weighted = head_states * ops.expand_dims(gate, -1)
        # sum over (h, k) of weighted[..., h, k] * W_f[h, :, k], as a tensordot
        # (one matmul; TensorFlow's gradient of the equivalent einsum
        # "...hk,hdk->...d" is many times slower).
        kernel = ops.transpose(self.facet_kernel, (0, 2, 1))  # (h, k, d)
        query = ops.tensordot(weighted, kernel, axes=2)
        if return_gate:
            return query, gate
        return query

    def head_scores(self, head_states, item_embeddings):
        """Per-head scores `P^(h)(v)` (Eq. 9): `(..., num_heads, num_candidates)`."""
        head_queries = ops.einsum("...hk,hdk->...hd", head_states, self.facet_kernel)
        return ops.einsum("...hd,cd->...hc", head_queries, item_embeddings)

    def call(self, head_states, item_embeddings, return_gate=False):
        query, gate = self.query(head_states, return_gate=True)
        scores = ops.einsum("...d,cd->...c", query, item_embeddings)
        if return_gate:
            return scores, gate
        return scores

    def compute_output_spec(self, head_states, item_embeddings, return_gate=False):
        scores = keras.KerasTensor(
            (*head_states.shape[:-2], item_embeddings.shape[0]),
            dtype=self.compute_dtype,
        )
        if return_gate:
            gate = keras.KerasTensor(
                (*head_states.shape[:-2], self.num_heads), dtype=self.compute_dtype
            )
            return scores, gate
        return scores

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
