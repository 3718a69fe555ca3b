"""`TrainConfig`, the hyper-parameters of the two-stage recipe, and its checks.

`keras_fame.training` runs the recipe from a `TrainConfig`; `config_help` and
`config_choices` give a command line each field's description and allowed
values (the `keras-fame train` command and `examples/train_sports.py` build
their options from them).
"""

from __future__ import annotations

import dataclasses
import numbers

from keras_fame.datasets.splits import check_row_options
from keras_fame.layers._utils import (
    check_bool,
    check_choice,
    check_heads_divide,
    check_non_negative_int,
    check_non_negative_number,
    check_positive_int,
    check_rate,
)
from keras_fame.models.base import (
    ANCHORS,
    NEGATIVES,
    SOFTMAXES,
    check_label_smoothing,
    check_loss_excludes_history,
)
from keras_fame.models.fame import EXPERT_INITS, FACET_INITS

__all__ = [
    "ACTIVATIONS",
    "EXPERIMENTAL_FIELDS",
    "TrainConfig",
    "check_learning_rate",
    "config_choices",
    "config_help",
    "parse_rate_or_none",
]

# FFN activations of the SASRec blocks that `TrainConfig` offers.
ACTIVATIONS = ("gelu", "relu")

EXPERIMENTAL_FIELDS = (
    "attention_dropout",
    "expert_noise",
    "routing_loss_weight",
    "ema_momentum",
    "label_smoothing",
    "loss_excludes_history",
    "weight_decay",
    "empty_prefix",
    "activation",
    "position_anchor",
)
"""`TrainConfig`'s experimental fields, in the order its docstring lists them.

Their defaults add nothing to the recipe; the command lines show them in a
group of their own. They may be removed in a later version.
"""


@dataclasses.dataclass
class TrainConfig:
    """Hyper-parameters of the two-stage recipe.

    The defaults are the paper's settings, except six choices of this
    implementation: FAME's warm start (`expert_init="pretrained"`,
    `facet_init="identity"`), prefix training rows (`prefixes=True`), a
    smaller fine-tuning rate (`finetune_learning_rate=1e-4`), a fine-tuning
    dropout of its own (`finetune_dropout=0.3`) and the residual around
    FAME's attention sub-layer (`attention_residual=True`). The paper's values
    are `"random"`, `"random"`, `False`, `None`, `None` and `False`.

    The fields listed in `EXPERIMENTAL_FIELDS` are experimental: their
    defaults add nothing to the recipe (no weight averaging, decay, label
    smoothing, routing loss or empty prefix; attention dropout as `dropout`;
    GELU; positions counted from the end), their descriptions start with
    "Experimental:", the command lines show them in a group of their own, and
    they may be removed in a later version.

    Attributes:
        hidden_dim: embedding and hidden size `d` (divisible by `num_heads`).
        num_blocks: Transformer blocks (FAME's is the last).
        num_heads: attention heads; FAME's facets.
        num_experts: FAME's experts per head.
        max_len: the most recent items of a history the model reads.
        dropout: dropout rate of the embeddings, residual branches and
            (unless `attention_dropout` is set) attention weights.
        expert_init: FAME's expert queries: `"pretrained"` (default; SASRec's
            last-block query plus Gaussian noise of stddev `expert_noise`) or
            `"random"` (the paper's); see `FAME.from_sasrec`.
        facet_init: FAME's per-head `W_f`: `"identity"` (default; with
            pretrained experts FAME starts close to SASRec's scores) or
            `"random"` (the paper's); see `FAME.from_sasrec`.
        attention_residual: whether FAME's block keeps the attention
            sub-layer's residual and LayerNorm (default True), which the
            paper's Eq. 7 omits; False: Eq. 7 as written (see `FAMEBlock`).
        learning_rate: Adam's rate for SASRec's pretraining (default 1e-3).
        finetune_learning_rate: Adam's rate for FAME's fine-tuning (default
            1e-4); `None`: `learning_rate`, the paper's single rate.
        finetune_dropout: dropout rate (residual branches and attention) of
            the whole FAME model during fine-tuning (default 0.3); `None`: the
            backbone's `dropout` and `attention_dropout`, as in the paper.
        batch_size: training rows per step (the global batch when
            distributed).
        pretrain_epochs: epoch budget of SASRec's pretraining.
        finetune_epochs: epoch budget of FAME's fine-tuning.
        patience: epochs without a better validation NDCG@20 before a stage
            stops; `None`: no early stopping.
        windows: cut histories longer than `max_len` into several training
            rows instead of dropping their oldest items (needs `prefixes`
            off).
        prefixes: one training row per target (each prefix of a history,
            loss on its last position; the ICSRec/BSARec code's sampling,
            default True) instead of one row per user with a target at every
            position (`False`: SASRec's original sampling, cheaper per
            epoch).
        bucket: length-bucketed training batches (same maths, less padding;
            default True).
        eval_batch_size: users per evaluation batch.
        backup_every: steps between mid-epoch backups (resuming after an
            interruption starts from the last one).
        seed: seeds weights, dropout and the shuffle.
        deterministic: make TensorFlow ops deterministic (same seed, same
            metrics).
        softmax: the loss (see `SequentialRecommender`): `"full"` softmax
            over all items (the paper) or `"sampled"` softmax.
        num_negatives: negatives per step of the sampled softmax.
        negatives: the sampled softmax's negatives: `"uniform"` over the
            catalogue, `"in_batch"` (the batch's targets) or `"mixed"` (both).
        log_q_correction: correct each sampled logit by the log of the
            item's expected count in the sample (log-Q), so that the sampled
            loss estimates the full softmax (in-batch popularity is set from
            the training targets).
        distribution: `"none"`, `"mirrored"` or `"multi_worker"` (see
            `keras_fame.distribute`).
        eval_item_chunk_size: rank against the item table this many items at
            a time (bounded memory for large catalogues); `None`: all at once.
        attention_dropout: Experimental: dropout rate of the attention
            weights; `None` (default): `dropout`.
        expert_noise: Experimental: stddev of the Gaussian noise added to
            each pretrained expert query (default 0.02); unused with
            `expert_init="random"`. The experts of a head start about this far
            apart.
        routing_loss_weight: Experimental: weight of FAME's auxiliary routing
            loss (default 0, none; not in the paper): minus the mutual
            information between position and expert over log N (over each
            batch's rows), which rewards each position for routing to few
            experts and the batch for using all of them; see
            `MoEQueryAttention`. Ignored with one expert.
        ema_momentum: Experimental: Polyak averaging in both stages: Adam
            keeps an exponential moving average of the weights with this
            momentum (`use_ema=True`), and the validation, early stopping, the
            saved model and its test metrics use the averaged weights while
            training goes on from the raw ones. `None` (default): no
            averaging. Not with `distribution`.
        label_smoothing: Experimental: share of each target's probability
            spread evenly over all items in the loss of both stages (see
            `SASRec`); 0 (default): plain cross-entropy. Full softmax only.
        loss_excludes_history: Experimental: leave the items each training
            position has read out of its softmax in both stages (see
            `SASRec`), as the evaluation leaves the history out of the
            candidates (a target read before stays in the loss, while the
            evaluation counts it a miss); False (default): every item is a
            negative, as in the paper. Full softmax only.
        weight_decay: Experimental: decoupled weight decay of Adam in both
            stages (each step multiplies a weight by `1 - learning_rate *
            weight_decay`, as AdamW does), on every kernel and embedding table
            but not on biases or LayerNorm parameters; 0 (default): none.
        empty_prefix: Experimental: with `prefixes`, also one row per user
            (of at least 3 items) with an empty input and the user's first
            item as target (the BSARec/FMLP-Rec code's shortest prefix);
            False (default): none.
        activation: Experimental: FFN activation of the SASRec blocks (all of
            SASRec's, FAME's lower ones): `"gelu"` (default, the
            S3-Rec/ICLRec code's) or `"relu"` (the original SASRec's).
        position_anchor: Experimental: `"end"` (default; positions count back
            from the most recent item, SASRec's convention) or `"start"`
            (they count from each sequence's first item, so every training
            prefix is embedded as evaluation embeds a history); see
            `PositionEmbedding`.
    """

    hidden_dim: int = 64
    num_blocks: int = 2
    num_heads: int = 2
    num_experts: int = 4
    max_len: int = 50
    dropout: float = 0.5
    attention_dropout: float | None = None
    expert_init: str = "pretrained"
    expert_noise: float = 0.02
    routing_loss_weight: float = 0.0
    facet_init: str = "identity"
    attention_residual: bool = True
    learning_rate: float = 1e-3
    finetune_learning_rate: float | None = 1e-4
    finetune_dropout: float | None = 0.3
    ema_momentum: float | None = None
    label_smoothing: float = 0.0
    loss_excludes_history: bool = False
    weight_decay: float = 0.0
    batch_size: int = 256
    pretrain_epochs: int = 200
    finetune_epochs: int = 200
    patience: int | None = 10
    windows: bool = False
    bucket: bool = True
    eval_batch_size: int = 1024
    backup_every: int = 200
    seed: int = 0
    deterministic: bool = True
    softmax: str = "full"
    num_negatives: int = 1024
    negatives: str = "uniform"
    distribution: str = "none"
    eval_item_chunk_size: int | None = None
    position_anchor: str = "end"
    log_q_correction: bool = True
    prefixes: bool = True
    empty_prefix: bool = False
    activation: str = "gelu"

    def __post_init__(self):
        # Every field is checked here, so that a typo fails at once with the
        # field's name, not when the stage that reads it starts (FAME's
        # fields only after SASRec's pretraining).
        # Integers are stored as Python ints (NumPy ones are accepted), so
        # that the config is always JSON-serializable.
        for name in _POSITIVE_INT_FIELDS:
            setattr(self, name, check_positive_int(name, getattr(self, name)))
        self.eval_item_chunk_size = check_positive_int(
            "eval_item_chunk_size", self.eval_item_chunk_size, allow_none=True
        )
        check_heads_divide(self.hidden_dim, self.num_heads)
        self.patience = check_non_negative_int(
            "patience", self.patience, allow_none=True
        )
        self.seed = check_non_negative_int("seed", self.seed)
        check_rate("dropout", self.dropout)
        for name in ("weight_decay", "expert_noise", "routing_loss_weight"):
            setattr(self, name, check_non_negative_number(name, getattr(self, name)))
        for name in ("attention_dropout", "finetune_dropout", "ema_momentum"):
            if getattr(self, name) is not None:
                check_rate(name, getattr(self, name))
        check_learning_rate("learning_rate", self.learning_rate)
        check_learning_rate(
            "finetune_learning_rate", self.finetune_learning_rate, allow_none=True
        )
        for name, choices in config_choices().items():
            setattr(self, name, check_choice(name, getattr(self, name), choices))
        for field in dataclasses.fields(self):
            if field.type == "bool":
                check_bool(field.name, getattr(self, field.name))
        check_row_options(self.windows, self.prefixes, self.empty_prefix)
        check_label_smoothing(self.label_smoothing, self.softmax)
        check_loss_excludes_history(self.loss_excludes_history, self.softmax)
        if self.ema_momentum is not None and self.distribution != "none":
            raise ValueError(
                "`ema_momentum` (weight averaging) is not supported with "
                f"distribution={self.distribution!r}; use distribution='none' "
                "or ema_momentum=None."
            )

    def finetune_config(self) -> TrainConfig:
        """This config for FAME's fine-tuning stage: `learning_rate` is
        `finetune_learning_rate` and `dropout` (attention too) is
        `finetune_dropout` where those are set."""
        changes = {}
        if self.finetune_learning_rate is not None:
            changes["learning_rate"] = self.finetune_learning_rate
        if self.finetune_dropout is not None:
            changes.update(dropout=self.finetune_dropout, attention_dropout=None)
        return dataclasses.replace(self, **changes) if changes else self

    def fame_kwargs(self) -> dict:
        """FAME's own architecture arguments (beside `model_kwargs`)."""
        return dict(
            num_experts=self.num_experts,
            routing_loss_weight=self.routing_loss_weight,
            attention_residual=self.attention_residual,
        )

    def model_kwargs(self) -> dict:
        return dict(
            max_len=self.max_len,
            hidden_dim=self.hidden_dim,
            num_blocks=self.num_blocks,
            num_heads=self.num_heads,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            softmax=self.softmax,
            num_negatives=self.num_negatives,
            negatives=self.negatives,
            sampler_seed=self.seed,
            position_anchor=self.position_anchor,
            log_q_correction=self.log_q_correction,
            activation=self.activation,
            label_smoothing=self.label_smoothing,
            loss_excludes_history=self.loss_excludes_history,
        )


_POSITIVE_INT_FIELDS = (
    "hidden_dim",
    "num_blocks",
    "num_heads",
    "num_experts",
    "max_len",
    "batch_size",
    "pretrain_epochs",
    "finetune_epochs",
    "eval_batch_size",
    "backup_every",
    "num_negatives",
)


def config_choices() -> dict[str, tuple[str, ...]]:
    """The allowed values of `TrainConfig`'s string fields."""
    from keras_fame.distribute import DISTRIBUTIONS  # TensorFlow-specific

    return {
        "expert_init": EXPERT_INITS,
        "facet_init": FACET_INITS,
        "softmax": SOFTMAXES,
        "negatives": NEGATIVES,
        "distribution": DISTRIBUTIONS,
        "position_anchor": ANCHORS,
        "activation": ACTIVATIONS,
    }


def config_help() -> dict[str, str]:
    """Each `TrainConfig` field's description, read from its docstring's
    `Attributes:` section (an entry may describe several fields)."""
    lines = TrainConfig.__doc__.split("Attributes:", 1)[1].splitlines()
    entries = []  # [names, text lines]
    for line in lines:
        text = line.strip()
        if not text:
            continue
        indent = len(line) - len(line.lstrip())
        head, sep, rest = text.partition(": ")
        names = [n.strip() for n in head.split(",")]
        if sep and indent == 8 and all(n.isidentifier() for n in names):
            entries.append((names, [rest]))
        elif entries:
            entries[-1][1].append(text)
    return {n: " ".join(words) for names, words in entries for n in names}


def check_learning_rate(name: str, value, allow_none: bool = False) -> None:
    """Raises a `ValueError` naming `name` unless `value` is a positive number
    (or, with `allow_none`, `None`)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        expected = "a positive number or None" if allow_none else "a positive number"
        raise ValueError(f"`{name}` must be {expected}. Received: {name}={value!r}")


def parse_rate_or_none(text: str) -> float | None:
    """A command line's dropout rate: a float in [0, 1), or `None` for "none".

    Raises a `ValueError` saying what was expected.
    """
    if text.strip().lower() == "none":
        return None
    try:
        rate = float(text)
    except ValueError:
        rate = None
    if rate is None or not 0 <= rate < 1:
        raise ValueError(f"must be a rate in [0, 1) or none. Received: {text!r}")
    return rate
