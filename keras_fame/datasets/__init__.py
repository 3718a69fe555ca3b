"""Datasets for sequential recommendation: readers, preprocessing, splits, tf.data.

Entry points:

- `load(name, data_dir=None)`: the paper's datasets (`"beauty"`, `"sports"`,
  `"toys"`, `"ml-20m"`), `"ml-1m"` and the built-in `"synthetic"` data.
- `from_interactions(source, user_col=..., item_col=..., time_col=...,
  min_count=5)`: your own CSV/TSV/Parquet log or DataFrame.
- `make_synthetic(...)`: the planted-facet generator with its ground truth.

All return a `SequenceDataset`, whose `train_dataset()` and `eval_dataset()`
build the leave-one-out `tf.data` pipelines.

The TFDS builder lives in `keras_fame.datasets.amazon_sequences` (imported on
demand, so that importing this package does not import TFDS).
"""

from keras_fame.datasets.named import (
    AMAZON_DATASETS,
    BASE_URL,
    DATA_DIR_ENV,
    DatasetNotAvailableError,
    available_datasets,
    load,
)
from keras_fame.datasets.preprocessing import (
    DUPLICATE_POLICIES,
    DropRecord,
    PreprocessReport,
    PreprocessResult,
    Vocabulary,
    k_core_mask,
    preprocess_interactions,
)
from keras_fame.datasets.readers import (
    parse_item_attributes,
    parse_sequence_lines,
    read_interactions,
    read_item_attributes,
    read_movielens_csv,
    read_movielens_dat,
    read_movielens_tfds,
    read_sequence_file,
)
from keras_fame.datasets.sequence_dataset import (
    LeaveOneOutSplit,
    SequenceDataset,
    from_interactions,
    from_sequence_file,
)
from keras_fame.datasets.synthetic import SyntheticGroundTruth, make_synthetic

__all__ = [
    "AMAZON_DATASETS",
    "BASE_URL",
    "DATA_DIR_ENV",
    "DUPLICATE_POLICIES",
    "DatasetNotAvailableError",
    "DropRecord",
    "LeaveOneOutSplit",
    "PreprocessReport",
    "PreprocessResult",
    "SequenceDataset",
    "SyntheticGroundTruth",
    "Vocabulary",
    "available_datasets",
    "from_interactions",
    "from_sequence_file",
    "k_core_mask",
    "load",
    "make_synthetic",
    "parse_item_attributes",
    "parse_sequence_lines",
    "preprocess_interactions",
    "read_interactions",
    "read_item_attributes",
    "read_movielens_csv",
    "read_movielens_dat",
    "read_movielens_tfds",
    "read_sequence_file",
]
