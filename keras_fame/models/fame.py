"""FAME: Facet-Aware Multi-Head Mixture-of-Experts sequential recommender."""

import keras
import numpy as np
from keras import ops

from keras_fame.layers._utils import (
    check_bool,
    check_choice,
    check_non_negative_number,
    check_positive_int,
)
from keras_fame.layers.facet_gated_scorer import FacetGatedScorer
from keras_fame.layers.fame_block import FAMEBlock
from keras_fame.models.base import SequentialRecommender, top_k_items
from keras_fame.models.sasrec import SASRec

EXPERT_INITS = ("random", "pretrained")
FACET_INITS = ("random", "identity")


@keras.saving.register_keras_serializable(package="keras_fame")
class FAME(SequentialRecommender):
    """FAME: SASRec whose last block is facet-aware and mixture-of-experts.

    The first `num_blocks - 1` blocks are SASRec's `TransformerBlock`s. The
    last block is a `FAMEBlock` (per-head mixture-of-experts query attention,
    Eqs. 12-17, and the shared per-head FFN', Eq. 7) without output
    projection, and items are scored by a `FacetGatedScorer` (Eqs. 8-11): each
    head scores items in its own sub-space and a gate mixes the head scores.
    Scoring all items still costs one product with the item table.

    Args:
        num_items: Number of items; ids are `1..num_items`, 0 is padding.
        num_experts: Query experts per head in the last block (`N`).
        max_len: Longest history the model reads.
        hidden_dim: Embedding and hidden size `d` (divisible by `num_heads`).
        num_blocks: Number of blocks `L`, the last one FAME's.
        num_heads: Heads (facets) `H`, in every block.
        dropout: Dropout of the embeddings and residual branches.
        attention_dropout: Dropout of attention probabilities (default
            `dropout`).
        intermediate_dim: FFN inner size of the lower blocks (default `4 d`).
        activation: FFN activation of the lower blocks.
        facet_activation: Activation of FFN' in the FAME block (paper: ReLU).
        routing_loss_weight: Weight of an auxiliary loss that rewards each
            position for routing to few experts and the batch for using all
            of them (not in the paper; 0: none). See `MoEQueryAttention`.
        attention_residual: Whether FAME's block keeps the attention
            sub-layer's residual and LayerNorm, which the paper's Eq. 7 omits
            (default True; False: Eq. 7 as written); see `FAMEBlock`.
        position_anchor: Where positions are counted from: `"end"` (the
            most recent item, SASRec's convention) or `"start"` (each
            sequence's first item); see `PositionEmbedding`.
        layer_norm_epsilon: Epsilon of every LayerNorm (1e-12, as in the
            S3-Rec/ICLRec code); `SASRec`'s docstring says when to raise it
            (tiny `hidden_dim` with high dropout).
        label_smoothing: Share of the target's probability spread evenly
            over all items (the candidates, with `loss_excludes_history`) in
            the loss (see `SASRec`; 0: none).
        loss_excludes_history: Leave the items a position has read out of
            its training softmax (see `SASRec`; False: none).
        **kwargs: `keras.Model` arguments (`name`, `dtype`).

    Example:
    >>> model = keras_fame.models.FAME(num_items=100, num_experts=4, max_len=20,
    ...                                hidden_dim=16, num_heads=2)
    >>> facets = model.facet_weights(np.array([[0, 0, 3, 7, 9]]))
    >>> facets["gate"].shape, facets["routing"].shape
    ((1, 2), (1, 2, 4))

    References:
        - Liu, Zhang & Long, "Facet-Aware Multi-Head Mixture-of-Experts Model
          for Sequential Recommendation", WSDM 2025.
    """

    def __init__(
        self,
        num_items: int,
        num_experts: int = 4,
        max_len: int = 50,
        hidden_dim: int = 64,
        num_blocks: int = 2,
        num_heads: int = 2,
        dropout: float = 0.5,
        attention_dropout: float | None = None,
        intermediate_dim: int | None = None,
        activation: str = "gelu",
        facet_activation: str = "relu",
        routing_loss_weight: float = 0.0,
        attention_residual: bool = True,
        **kwargs,
    ):
        num_experts = check_positive_int("num_experts", num_experts)
        routing_loss_weight = check_non_negative_number(
            "routing_loss_weight", routing_loss_weight
        )
        attention_residual = check_bool("attention_residual", attention_residual)
        super().__init__(
            num_items=num_items,
            max_len=max_len,
            hidden_dim=hidden_dim,
            num_blocks=num_blocks,
            num_heads=num_heads,
            dropout=dropout,
            attention_dropout=attention_dropout,
            intermediate_dim=intermediate_dim,
            activation=activation,
            **kwargs,
        )
        self.num_experts = num_experts
        self.facet_activation = facet_activation
        self.routing_loss_weight = routing_loss_weight
        self.attention_residual = attention_residual
        self.head_dim = hidden_dim // num_heads
        self.build()

    def _build_encoder(self, shape):
        policy = self.dtype_policy
        self.blocks = self._transformer_blocks(self.num_blocks - 1, shape)
        self.fame_block = FAMEBlock(
            self.num_heads,
            self.num_experts,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            activation=self.facet_activation,
            layer_norm_epsilon=self.layer_norm_epsilon,
            routing_loss_weight=self.routing_loss_weight,
            attention_residual=self.attention_residual,
            dtype=policy,
            name=f"block_{self.num_blocks - 1}",
        )
        self.fame_block.build(shape)
        self.scorer = FacetGatedScorer(self.num_heads, dtype=policy, name="scorer")
        self.scorer.build(
            (*shape[:-1], self.num_heads, self.head_dim),
            (self.num_items + 1, self.hidden_dim),
        )

    def _encode(
        self, x, padding_mask, training=None, details=False, last_position_only=False
    ):
        for block in self.blocks:
            x = block(x, padding_mask=padding_mask, training=training)
        states, routing = self.fame_block(
            x,
            padding_mask=padding_mask,
            training=training,
            return_routing=True,
            last_position_only=last_position_only,
        )
        vectors, gate = self.scorer.query(states, return_gate=True)
        if details:
            return {
                "vectors": vectors,
                "states": states,
                "gate": gate,
                "routing": routing,
            }
        return vectors

    # ------------------------------------------------------------ inspection

    def facets(self, item_ids, last_position_only: bool = False):
        """Traceable head gate and expert routing at every position.

        Args:
            item_ids: int tensor `(batch, length)`, left-padded with 0, at most
                `max_len` long (used as is; no validation, so it can run inside
                a `tf.function` or a serving signature).
            last_position_only: Compute the last position only (length 1).

        Returns:
            A dict of tensors: `gate` `(batch, length, num_heads)` and
            `routing` `(batch, length, num_heads, num_experts)`.
        """
        x, padding_mask = self._embed(item_ids, training=False)
        out = self._encode(
            x,
            padding_mask,
            training=False,
            details=True,
            last_position_only=last_position_only,
        )
        return {"gate": out["gate"], "routing": out["routing"]}

    def facet_weights(self, item_ids, all_positions: bool = False):
        """The head gate and expert routing weights for a batch of histories.

        Args:
            item_ids: int `(batch, length)`, left-padded with 0.
            all_positions: Return every position instead of the last one.

        Returns:
            A dict of NumPy arrays: `gate` `(batch, num_heads)` (how much each
            head/facet contributes to the final score, Eq. 10) and `routing`
            `(batch, num_heads, num_experts)` (each head's expert mixture,
            Eq. 16), at the last position; with `all_positions=True` they have
            an extra length axis after the batch axis (padding rows are
            meaningless).
        """
        item_ids = self._context(self._histories(item_ids))
        out = self.facets(item_ids, last_position_only=not all_positions)
        result = {
            "gate": ops.convert_to_numpy(ops.cast(out["gate"], "float32")),
            "routing": ops.convert_to_numpy(ops.cast(out["routing"], "float32")),
        }
        if not all_positions:
            result = {key: value[:, -1] for key, value in result.items()}
        return result

    def expert_outputs(self, item_ids):
        """Every expert's output and the routing at the last position.

        Args:
            item_ids: int `(batch, length)`, left-padded with 0.

        Returns:
            A dict of float32 NumPy arrays: `expert_outputs`
            `(batch, num_heads, num_experts, head_dim)` (Eq. 15's `f(n)` of
            each head's experts, before the router mixes them) and `routing`
            `(batch, num_heads, num_experts)` (Eq. 16).
        """
        item_ids = self._context(self._histories(item_ids))
        x, padding_mask = self._embed(item_ids, training=False)
        for block in self.blocks:
            x = block(x, padding_mask=padding_mask, training=False)
        out = self.fame_block.attention.experts(
            x, padding_mask=padding_mask, last_position_only=True
        )
        return {
            key: ops.convert_to_numpy(ops.cast(out[key][:, -1], "float32"))
            for key in ("expert_outputs", "routing")
        }

    def explain(self, item_ids, k: int = 10, exclude_seen: bool = True):
        """Each head's top-`k` list, the gate and the final list (paper Fig. 7).

        Args:
            item_ids: Histories as for `recommend`: model ids `(batch,
                length)` left-padded with 0, or, with a vocabulary, rows in
                your item ids.
            k: Length of each list, `1 <= k <= num_items`.
            exclude_seen: Leave the history's items out of every list.

        Returns:
            A dict of NumPy arrays: `head_top_ids` / `head_top_scores`
            `(batch, num_heads, k)`, `gate` `(batch, num_heads)`, `routing`
            `(batch, num_heads, num_experts)`, and `top_ids` / `top_scores`
            `(batch, k)`, the final gated list (as `recommend`). Ids are your
            item ids when the model has a vocabulary.
        """
        k = self._check_k(k)
        report = self._explain_ids(self._histories(item_ids), k, exclude_seen)
        if self.vocabulary is not None:
            for key in ("head_top_ids", "top_ids"):
                report[key] = self._decode(report[key])
        return report

    def _explain_ids(self, item_ids, k: int, exclude_seen: bool = True):
        """`explain` on checked model ids `(batch, length >= 1)`."""
        context = self._context(item_ids)
        x, padding_mask = self._embed(context, training=False)
        out = self._encode(
            x, padding_mask, training=False, details=True, last_position_only=True
        )
        head_scores = self.scorer.head_scores(out["states"][:, -1], self.item_table())
        head_ids, head_top_scores = top_k_items(
            ops.convert_to_numpy(ops.cast(head_scores, "float32")),
            item_ids,
            k,
            exclude_seen,
        )
        final = ops.convert_to_numpy(self.logits(out["vectors"][:, -1]))
        top_ids, top_scores = top_k_items(final, item_ids, k, exclude_seen)
        return {
            "head_top_ids": head_ids,
            "head_top_scores": head_top_scores,
            "gate": ops.convert_to_numpy(ops.cast(out["gate"][:, -1], "float32")),
            "routing": ops.convert_to_numpy(ops.cast(out["routing"][:, -1], "float32")),
            "top_ids": top_ids,
            "top_scores": top_scores,
        }

    # ------------------------------------------------------------ warm start

    @classmethod
    def from_sasrec(
        cls,
        sasrec: SASRec,
        num_experts: int,
        expert_init: str = "pretrained",
        expert_noise: float = 0.02,
        seed: int | None = None,
        facet_init: str = "identity",
        **overrides,
    ) -> "FAME":
        """Builds FAME warm-started from a trained SASRec (paper Sec. 4.4.2).

        The item and position embeddings, the embedding LayerNorm, the lower
        `num_blocks - 1` blocks and the last block's key and value projections
        are copied from `sasrec`; the expert queries, router, FFN', facet
        projections and gate start fresh.

        Args:
            sasrec: A built `SASRec`.
            num_experts: Experts per head.
            expert_init: `"pretrained"` (default, as
                `keras_fame.config.TrainConfig`): every expert starts from
                SASRec's last-block query projection plus Gaussian noise of
                stddev `expert_noise`, so that FAME starts from SASRec's
                attention pattern; or `"random"` (the paper's).
            expert_noise: Noise stddev for `expert_init="pretrained"`.
            seed: Seed of that noise.
            facet_init: `"identity"` (default, as `TrainConfig`): head
                `h`'s `W_f^(h)` starts as `num_heads` times the identity on
                the `h`-th slice of the embedding, so that with a uniform gate
                the scoring vector starts as the concatenated head states, as
                in SASRec, instead of a random projection; or `"random"` (the
                paper's).
            **overrides: Other FAME arguments (e.g. `dropout`); the
                architecture arguments must match SASRec's. With
                `attention_residual=False` FAME's block has no attention
                residual, so the warm start no longer starts at SASRec's
                scores, whatever `expert_init` and `facet_init`. SASRec's config
                holds its resolved `attention_dropout`, so a new `dropout`
                leaves the attention's rate as it was unless
                `attention_dropout` is given too (`None`: the new `dropout`).

        Returns:
            A new `FAME`.
        """
        if not isinstance(sasrec, SASRec):
            raise TypeError(
                f"`sasrec` must be a keras_fame.models.SASRec. Received: {type(sasrec)}"
            )
        facet_init = check_choice("facet_init", facet_init, FACET_INITS)
        expert_init = check_choice("expert_init", expert_init, EXPERT_INITS)
        expert_noise = check_non_negative_number("expert_noise", expert_noise)
        config = sasrec.get_config()
        config = {
            key: config[key]
            for key in (
                "num_items",
                "max_len",
                "hidden_dim",
                "num_blocks",
                "num_heads",
                "dropout",
                "attention_dropout",
                "intermediate_dim",
                "activation",
                "softmax",
                "num_negatives",
                "negatives",
                "sampler_seed",
                "position_anchor",
                "log_q_correction",
                "layer_norm_epsilon",
                "label_smoothing",
                "loss_excludes_history",
            )
        }
        for key in ("num_items", "max_len", "hidden_dim", "num_blocks", "num_heads"):
            if key in overrides and overrides[key] != config[key]:
                raise ValueError(
                    f"`{key}` must match the SASRec's ({config[key]}) for a warm "
                    f"start. Received: {key}={overrides[key]}"
                )
        config.update(overrides)
        fame = cls(num_experts=num_experts, dtype=sasrec.dtype_policy, **config)
        fame.item_embedding.set_weights(sasrec.item_embedding.get_weights())
        fame.position_embedding.set_weights(sasrec.position_embedding.get_weights())
        fame.embedding_norm.set_weights(sasrec.embedding_norm.get_weights())
        if fame._uses_frequencies and sasrec._uses_frequencies:
            fame.item_log_prior.assign(sasrec.item_log_prior)
        for source, target in zip(sasrec.blocks[:-1], fame.blocks, strict=True):
            target.set_weights(source.get_weights())
        source = sasrec.blocks[-1].attention
        target = fame.fame_block.attention
        for name in ("key_kernel", "value_kernel", "key_bias", "value_bias"):
            getattr(target, name).assign(getattr(source, name))
        if expert_init == "pretrained":
            rng = np.random.default_rng(seed)
            query = ops.convert_to_numpy(source.query_kernel)  # (d, H, 1, d')
            query_bias = ops.convert_to_numpy(source.query_bias)  # (H, 1, d')
            shape = tuple(target.query_kernel.shape)
            noise = rng.normal(0.0, expert_noise, size=shape)
            target.query_kernel.assign((query + noise).astype("float32"))
            bias_shape = tuple(target.query_bias.shape)
            target.query_bias.assign(
                np.broadcast_to(query_bias, bias_shape).astype("float32")
            )
        if facet_init == "identity":
            h, d, k = fame.num_heads, fame.hidden_dim, fame.head_dim
            eye = np.eye(d, dtype="float32").reshape(d, h, k).transpose(1, 0, 2)
            fame.scorer.facet_kernel.assign(h * eye)
        fame.set_vocabulary(sasrec.vocabulary)
        return fame

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_experts": self.num_experts,
                "facet_activation": self.facet_activation,
                "routing_loss_weight": self.routing_loss_weight,
                "attention_residual": self.attention_residual,
            }
        )
        return config
