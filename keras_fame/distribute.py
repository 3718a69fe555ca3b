"""`tf.distribute` strategies for training on several devices or machines.

The models need nothing special under a strategy: build and compile them in
`strategy.scope()` and feed a training pipeline made with
`count_targets=True` (`SequenceDataset.train_dataset`), whose features carry
the real-target count of the whole global batch. Each replica then divides
its summed cross-entropy by that global count, the gradients that
`tf.distribute` sums across replicas are exactly those of the global-batch
mean, and N replicas follow the same trajectory as one device given the same
data and seed (up to float summation order; tested with two logical CPUs).
Dropout draws differ per replica, so with dropout the runs agree in
distribution, not bit for bit.

`keras_fame.training` does all of this when `TrainConfig.distribution` is
set:

- `"none"`: TensorFlow's default strategy (one device);
- `"mirrored"`: `tf.distribute.MirroredStrategy` over every local GPU (or
  the devices given);
- `"multi_worker"`: `tf.distribute.MultiWorkerMirroredStrategy`; each
  machine runs the same command with its own `TF_CONFIG` (see the user guide, "Scale").

Same seed, same numbers, with or without a strategy: the models skip the
batch that Keras's TensorFlow trainer otherwise reads ahead under a strategy
(which would start the seeded shuffle one reshuffle late), and their
training logs are shaped so that Keras can average them across workers under
`MultiWorkerMirroredStrategy` (Keras 3.15 fails there for any model
otherwise). Tested: two logical CPUs (`"mirrored"`) and two local worker
processes with `TF_CONFIG` (`"multi_worker"`) reproduce the single-device
run.

Full-ranking evaluation runs on one replica per worker (the strategy's
variables are read where they live): the metrics are the single-device
metrics, and every worker computes the same ones, so early stopping stops
all workers at the same epoch. Only the chief (worker 0) writes a stage's
results into the work directory; other workers keep theirs under
`workdir/worker-<index>/`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import tensorflow as tf

from keras_fame.layers._utils import check_choice

DISTRIBUTIONS = ("none", "mirrored", "multi_worker")


def make_strategy(
    distribution: str = "none", devices: Sequence[str] | None = None
) -> tf.distribute.Strategy:
    """Returns the `tf.distribute.Strategy` named by `distribution`.

    Args:
        distribution: `"none"`, `"mirrored"` or `"multi_worker"`.
        devices: For `"mirrored"`, the devices to mirror over (e.g.
            `["/gpu:0", "/gpu:1"]`); default every local GPU, else every
            logical CPU device (one, unless configured with
            `tf.config.set_logical_device_configuration`).

    Returns:
        The strategy; build models inside its `scope()`.
    """
    distribution = check_choice("distribution", distribution, DISTRIBUTIONS)
    if distribution == "none":
        if devices:
            raise ValueError("`devices` is only used with distribution='mirrored'.")
        return tf.distribute.get_strategy()
    if distribution == "mirrored":
        if not devices:
            devices = [d.name for d in tf.config.list_logical_devices("GPU")] or [
                d.name for d in tf.config.list_logical_devices("CPU")
            ]
        return tf.distribute.MirroredStrategy(devices=list(devices))
    if devices:
        raise ValueError("`devices` is only used with distribution='mirrored'.")
    config = os.environ.get("TF_CONFIG")
    if not config:
        raise ValueError(
            "distribution='multi_worker' needs the TF_CONFIG environment variable "
            '(e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}) on every machine.'
        )
    try:
        json.loads(config)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON: {e}") from e
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes results (worker 0, or a single machine)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "cluster_spec", None):
        return True
    if not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in (None, "chief") or (
        resolver.task_type == "worker"
        and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict()
    )
