"""Helpers shared by the recipe's test files: a small configuration and a
simulated crash."""

import keras

from keras_fame.training import TrainConfig


def recipe_config(**overrides):
    base = dict(
        hidden_dim=16,
        num_heads=2,
        num_experts=2,
        max_len=16,
        dropout=0.1,
        batch_size=32,
        pretrain_epochs=3,
        finetune_epochs=2,
        patience=5,
        backup_every=2,
        eval_batch_size=128,
        seed=7,
        prefixes=False,  # one row per user: fewer steps; prefixes tested below
    )
    base.update(overrides)
    return TrainConfig(**base)


class Interrupt(keras.callbacks.Callback):
    """Simulates a crash in the middle of epoch `epoch` (0-based)."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at = (epoch, batch)
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise KeyboardInterrupt("simulated interruption")
