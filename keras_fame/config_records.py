"""`TrainConfig` records: the `config.json` of work folders and result files.

A record is `TrainConfig` as a JSON object. Fields added after runs were
recorded are left out of a record while they hold the value those earlier
runs implicitly used (`LATER_FIELDS`), so that a work folder written before a
field existed still matches the same configuration today, and a record that
lacks a field is read back with that implied value, not today's default.
"""

from __future__ import annotations

import dataclasses

from keras_fame.config import TrainConfig

__all__ = ["LATER_FIELDS", "config_from_record", "config_record"]

# Fields added after runs were recorded, with the value those runs implicitly
# used: left out of comparisons and cache keys while they hold that value, so
# earlier work folders stay valid (and are not reused once a default changes).
LATER_FIELDS = {
    "softmax": "full",
    "num_negatives": 1024,
    "negatives": "uniform",
    "distribution": "none",
    "eval_item_chunk_size": None,
    "position_anchor": "end",
    "log_q_correction": True,
    "prefixes": False,
    "finetune_learning_rate": None,
    "empty_prefix": False,
    "finetune_dropout": None,
    "activation": "gelu",
    "ema_momentum": None,
    "label_smoothing": 0.0,
    "weight_decay": 0.0,
    "loss_excludes_history": False,
    "expert_noise": 0.02,
    "routing_loss_weight": 0.0,
    "attention_residual": True,
}


def config_from_record(record: dict) -> TrainConfig:
    """The `TrainConfig` of a recorded run (`config.json`, a results file).

    Fields the record lacks take the value the run implicitly used
    (`LATER_FIELDS`), not today's default; unknown keys are ignored.
    """
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {**LATER_FIELDS, **record}
    return TrainConfig(**{k: v for k, v in values.items() if k in fields})


def config_record(config: TrainConfig) -> dict:
    """`config` as a dict, without later fields that hold their implied value."""
    record = dataclasses.asdict(config)
    for name, implied in LATER_FIELDS.items():
        if record[name] == implied:
            del record[name]
    return record
