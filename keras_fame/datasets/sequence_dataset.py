"""`SequenceDataset`: per-user item sequences, splits and `tf.data` pipelines."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from keras_fame.datasets import splits as _splits
from keras_fame.datasets.preprocessing import (
    PreprocessReport,
    Vocabulary,
    check_min_counts,
    preprocess_interactions,
)
from keras_fame.datasets.readers import (
    read_interactions,
    read_item_attributes,
    read_sequence_file,
)


@dataclasses.dataclass(frozen=True)
class LeaveOneOutSplit:
    """The leave-one-out split of a dataset, as unpadded NumPy arrays.

    Attributes:
        train: per user, the training part `s_1..s_{n-2}` (inputs
            `s_1..s_{n-3}`, next-item targets `s_2..s_{n-2}`).
        valid_history: per evaluated user, `s_1..s_{n-2}`.
        valid_target: int32, per evaluated user, `s_{n-1}`.
        test_history: per evaluated user, `s_1..s_{n-1}`.
        test_target: int32, per evaluated user, `s_n`.
        eval_users: row indices of the evaluated users (those with n >= 3).
    """

    train: list[np.ndarray]
    valid_history: list[np.ndarray]
    valid_target: np.ndarray
    test_history: list[np.ndarray]
    test_target: np.ndarray
    eval_users: np.ndarray


class SequenceDataset:
    """Time-ordered item sequences of users, ready for leave-one-out training.

    Item ids are integers in `1..num_items`; 0 is reserved for padding. The
    dataset builds NumPy split arrays and `tf.data` pipelines that follow the
    S3-Rec / ICLRec leave-one-out protocol used by FAME: for a user with items
    `s_1..s_n`, training uses inputs `s_1..s_{n-3}` with targets
    `s_2..s_{n-2}`, validation predicts `s_{n-1}` from `s_1..s_{n-2}`, and
    test predicts `s_n` from `s_1..s_{n-1}`.

    Args:
        sequences: one array (or list) of item ids per user, in time order.
        num_items: the number of items; defaults to the largest item id.
        user_ids: the users' original ids (default `1..num_users`).
        item_attributes: optional dict `item id -> list of attribute ids`.
        vocabulary: the `Vocabulary` from original to model ids (default:
            identity).
        report: the `PreprocessReport` that produced the sequences.
        name: a short name used in `describe()` and `repr`.

    Example:
    >>> ds = SequenceDataset([[1, 2, 3, 4, 5], [2, 3, 4]], name="toy")
    >>> ds.describe()["actions"]
    8
    >>> inputs, targets = ds.train_arrays(max_len=3)
    >>> inputs.tolist(), targets.tolist()
    ([[0, 1, 2]], [[0, 2, 3]])
    """

    def __init__(
        self,
        sequences: Sequence[Sequence[int]],
        num_items: int | None = None,
        *,
        user_ids: Sequence | None = None,
        item_attributes: dict[int, list[int]] | None = None,
        vocabulary: Vocabulary | None = None,
        report: PreprocessReport | None = None,
        name: str = "custom",
    ):
        arrays = [np.asarray(s) if len(s) else np.zeros(0, np.int64) for s in sequences]
        lengths = np.asarray([len(a) for a in arrays], dtype=np.int64)
        offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        items = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
        self._init(
            items,
            offsets,
            num_items,
            user_ids,
            item_attributes,
            vocabulary,
            report,
            name,
        )

    @classmethod
    def from_flat(
        cls,
        items: np.ndarray,
        offsets: np.ndarray,
        num_items: int | None = None,
        **kwargs,
    ) -> SequenceDataset:
        """Builds a dataset from a flat item array and user offsets.

        Args:
            items: all users' items, user after user.
            offsets: int array of length `num_users + 1`; user `u` owns
                `items[offsets[u]:offsets[u + 1]]`.
            num_items: as in the constructor.
            **kwargs: the constructor's keyword arguments.

        Returns:
            A `SequenceDataset`.
        """
        self = cls.__new__(cls)
        self._init(
            np.asarray(items),
            np.asarray(offsets, dtype=np.int64),
            num_items,
            kwargs.pop("user_ids", None),
            kwargs.pop("item_attributes", None),
            kwargs.pop("vocabulary", None),
            kwargs.pop("report", None),
            kwargs.pop("name", "custom"),
        )
        if kwargs:
            raise TypeError(f"unexpected keyword arguments: {sorted(kwargs)}")
        return self

    def _init(
        self,
        items,
        offsets,
        num_items,
        user_ids,
        item_attributes,
        vocabulary,
        report,
        name,
    ):
        if items.size and items.dtype.kind not in "iu":
            raise ValueError(f"item ids must be integers, got dtype {items.dtype}")
        if len(offsets) < 2:
            raise ValueError("a SequenceDataset needs at least one user")
        lengths = np.diff(offsets)
        if (lengths < 1).any():
            raise ValueError(
                f"user at index {int(np.argmin(lengths))} has an empty sequence; "
                "every user needs at least one item"
            )
        max_id = int(items.max())
        if num_items is None:
            num_items = vocabulary.num_items if vocabulary is not None else max_id
        num_items = int(num_items)
        if items.min() < 1 or max_id > num_items:
            bad = int(np.flatnonzero((items < 1) | (items > num_items))[0])
            user = int(np.searchsorted(offsets, bad, side="right") - 1)
            raise ValueError(
                f"user at index {user} has item id {int(items[bad])}; expected ids "
                f"in [1, num_items={num_items}] (0 is reserved for padding)"
            )
        num_users = len(offsets) - 1
        if user_ids is None:
            user_ids = (
                vocabulary.user_ids
                if vocabulary is not None and vocabulary.user_ids is not None
                else np.arange(1, num_users + 1)
            )
        if len(user_ids) != num_users:
            raise ValueError(
                f"`user_ids` has {len(user_ids)} entries for {num_users} users"
            )
        if vocabulary is None:
            vocabulary = Vocabulary.identity(num_items, user_ids)
        if vocabulary.num_items != num_items:
            raise ValueError(
                f"the vocabulary has {vocabulary.num_items} items but num_items="
                f"{num_items}"
            )
        self._items = items.astype(np.int32)
        self._offsets = offsets
        self.num_items = num_items
        self.name = name
        self.user_ids = np.asarray(user_ids)
        self.item_attributes = item_attributes
        self.vocabulary = vocabulary
        if report is None:
            report = PreprocessReport(
                input_interactions=len(items),
                input_users=num_users,
                input_items=len(np.unique(items)),
                output_interactions=len(items),
                output_users=num_users,
                output_items=len(np.unique(items)),
            )
        self.report = report
        short = int((lengths < 3).sum())
        if short:
            note = (
                f"{short} user(s) have fewer than 3 items: no validation/test row "
                "and no training row for them"
            )
            if note not in report.notes:
                report.notes.append(note)
            warnings.warn(f"{name}: {note}", stacklevel=3)
        self._sequences: list[np.ndarray] | None = None

    # ------------------------------------------------------------------ data

    @property
    def num_users(self) -> int:
        """Number of users (sequences)."""
        return len(self._offsets) - 1

    @property
    def num_actions(self) -> int:
        """Total number of interactions."""
        return len(self._items)

    @property
    def max_item_id(self) -> int:
        """The largest item id that occurs (always <= `num_items`)."""
        return int(self._items.max())

    @property
    def lengths(self) -> np.ndarray:
        """int64 array: the sequence length of each user."""
        return np.diff(self._offsets)

    @property
    def items(self) -> np.ndarray:
        """int32 flat array of all items, user after user (read-only view)."""
        view = self._items.view()
        view.flags.writeable = False
        return view

    @property
    def offsets(self) -> np.ndarray:
        """int64 user offsets into `items` (length `num_users + 1`)."""
        view = self._offsets.view()
        view.flags.writeable = False
        return view

    @property
    def sequences(self) -> list[np.ndarray]:
        """One int32 array of item ids per user, in time order."""
        if self._sequences is None:
            self._sequences = np.split(self.items, self._offsets[1:-1])
        return self._sequences

    def describe(self) -> dict:
        """Table 1 statistics of the paper, plus a few more.

        Returns:
            A dict with `name`, `users`, `items` (= `num_items`), `actions`,
            `avg_length` (actions per user), `density` (actions / (users *
            items), a fraction: multiply by 100 for the paper's percent),
            `min_length`, `median_length` and `max_length`.
        """
        lengths = self.lengths
        return {
            "name": self.name,
            "users": self.num_users,
            "items": self.num_items,
            "actions": self.num_actions,
            "avg_length": float(lengths.mean()),
            "density": self.num_actions / (self.num_users * self.num_items),
            "min_length": int(lengths.min()),
            "median_length": float(np.median(lengths)),
            "max_length": int(lengths.max()),
        }

    def fingerprint(self) -> dict:
        """What identifies this data: counts and SHA-256 hashes.

        A work folder records it and refuses other data (see
        `keras_fame.training`).

        Returns:
            A dict: `users`, `items`, `actions`, `sequences` (a hash of every
            user's model-id sequence, in order) and `vocabulary` (a hash of
            the original item ids, as text, in model-id order).

        Example:
        >>> a = SequenceDataset([[1, 2, 3], [2, 3]]).fingerprint()
        >>> b = SequenceDataset([[1, 2, 3], [3, 2]]).fingerprint()
        >>> a["actions"], a["sequences"] == b["sequences"]
        (5, False)
        """
        sequences = hashlib.sha256()
        sequences.update(np.ascontiguousarray(self._offsets, dtype="<i8").tobytes())
        sequences.update(np.ascontiguousarray(self._items, dtype="<i4").tobytes())
        vocabulary = hashlib.sha256()
        for original in self.vocabulary.item_ids.tolist():
            vocabulary.update(str(original).encode("utf-8") + b"\n")
        return {
            "users": self.num_users,
            "items": self.num_items,
            "actions": self.num_actions,
            "sequences": sequences.hexdigest(),
            "vocabulary": vocabulary.hexdigest(),
        }

    def save_vocabulary(self, path: str | os.PathLike) -> None:
        """Writes `vocabulary` as JSON; reload with `Vocabulary.load(path)`."""
        self.vocabulary.save(path)

    # ---------------------------------------------------------------- splits

    def splits(self) -> LeaveOneOutSplit:
        """The leave-one-out split as unpadded per-user arrays.

        Returns:
            A `LeaveOneOutSplit`.
        """
        seqs = self.sequences
        lengths = self.lengths
        eval_users = np.flatnonzero(lengths >= 3)
        return LeaveOneOutSplit(
            train=[s[:-2] for s in seqs],
            valid_history=[seqs[u][:-2] for u in eval_users],
            valid_target=np.asarray([seqs[u][-2] for u in eval_users], dtype=np.int32),
            test_history=[seqs[u][:-1] for u in eval_users],
            test_target=np.asarray([seqs[u][-1] for u in eval_users], dtype=np.int32),
            eval_users=eval_users,
        )

    def train_arrays(
        self,
        max_len: int = 50,
        windows: bool = False,
        stride: int | None = None,
        prefixes: bool = False,
        empty_prefix: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Padded training rows `(inputs, targets)`.

        Args:
            max_len: row width; longer histories keep their most recent
                items (or are cut into windows).
            windows: cut long training histories into several rows instead of
                dropping their oldest items.
            stride: distance between window ends (default `max_len`,
                non-overlapping). With overlapping windows every target is
                still used once: repeated positions get target 0.
            prefixes: one row per training target (the history up to it,
                only the last position has a target), as the prefix-augmented
                training of the ICSRec/BSARec code; about `n - 3` rows per
                user instead of one. Excludes `windows`.
            empty_prefix: with `prefixes`, also one row per user of at least
                3 items with an empty input (all padding) and the user's first
                item as its target (`n - 2` rows per user), as the
                BSARec/FMLP-Rec code trains.

        Returns:
            Two int32 arrays of shape `(rows, max_len)`, left-padded with 0:
            `targets[r, t]` is the item that follows `inputs[r, t]`.
        """
        return _splits.train_arrays(
            self._items,
            self._offsets,
            max_len,
            windows,
            stride,
            prefixes,
            empty_prefix,
        )

    def eval_arrays(
        self, split: str = "valid", max_len: int = 50
    ) -> tuple[dict, np.ndarray]:
        """Padded evaluation rows as NumPy arrays.

        Args:
            split: `"valid"` or `"test"`.
            max_len: width of `item_ids`.

        Returns:
            A tuple `(features, targets)`: `features["item_ids"]` int32
            `(users, max_len)` left-padded recent history,
            `features["seen_ids"]` int32 `(users, S)` the full history padded
            with 0 on the right (S = the longest history), and `targets` int32
            `(users,)`.
        """
        rows = _splits.eval_arrays(self._items, self._offsets, split, max_len)
        seen = _splits.right_pad_segments(
            self._items, rows.history_starts, rows.history_ends
        )
        return {"item_ids": rows.item_ids, "seen_ids": seen}, rows.targets

    # -------------------------------------------------------------- tf.data

    def train_dataset(
        self,
        batch_size: int = 256,
        max_len: int = 50,
        shuffle: bool = True,
        seed: int | None = 0,
        windows: bool = False,
        stride: int | None = None,
        drop_remainder: bool = False,
        bucket: bool = True,
        count_targets: bool = False,
        prefixes: bool = True,
        empty_prefix: bool = False,
    ):
        """The training pipeline: `(item_ids, next_item_ids)` batches.

        Args:
            batch_size: rows per batch.
            max_len: sequence length of a row.
            shuffle: shuffle rows (reshuffled at every epoch).
            seed: shuffle seed; the same seed gives the same order every run.
            prefixes: one row per training target, the history up to it
                (default True, as `keras_fame.config.TrainConfig`); False:
                one row per user with a target at every position.
            windows, stride, empty_prefix: see `train_arrays` (`windows`
                needs `prefixes=False`).
            drop_remainder: drop the final smaller batch.
            bucket: length-bucketed batches trimmed to their longest row
                (see `pipelines.make_train_dataset`): same rows, less padding
                (default True, as `TrainConfig`).
            count_targets: features become `{"item_ids", "num_targets"}`
                with the batch's real-target count, for exact loss
                normalisation under `tf.distribute` (see
                `pipelines.make_train_dataset`).

        Returns:
            A `tf.data.Dataset` of int32 `(item_ids, next_item_ids)` pairs,
            left-padded with 0: `item_ids` `(batch, max_len)` and
            `next_item_ids[b, t]` the item after `item_ids[b, t]`. With
            `prefixes=True` every row has one target, the item after its last
            position, and `next_item_ids` is `(batch,)`; the models then run
            the last position only through their last block.

        Example:
        >>> ds = keras_fame.datasets.load("synthetic")  # doctest: +SKIP
        >>> model.fit(ds.train_dataset(batch_size=256, max_len=50))  # doctest: +SKIP
        """
        from keras_fame.datasets.pipelines import make_train_dataset

        inputs, targets = self.train_arrays(
            max_len, windows, stride, prefixes, empty_prefix
        )
        if prefixes:
            targets = targets[:, -1]
        return make_train_dataset(
            inputs,
            targets,
            self.num_items,
            batch_size,
            shuffle,
            seed,
            drop_remainder,
            bucket=bucket,
            count_targets=count_targets,
        )

    def eval_dataset(
        self, split: str = "valid", batch_size: int = 256, max_len: int = 50
    ):
        """An evaluation pipeline: `({"item_ids", "seen_ids"}, target)` batches.

        Every evaluated user appears exactly once, in dataset order; the final
        partial batch is kept.

        Args:
            split: `"valid"` (history `s_1..s_{n-2}`, target `s_{n-1}`) or
                `"test"` (history `s_1..s_{n-1}`, target `s_n`).
            batch_size: users per batch.
            max_len: width of `item_ids`.

        Returns:
            A `tf.data.Dataset`; `item_ids` int32 `(batch, max_len)` holds the
            most recent history, `seen_ids` int32 `(batch, S)` the whole
            history (0-padded on the right, S varies per batch) and `target`
            int32 `(batch,)`.
        """
        from keras_fame.datasets.pipelines import make_eval_dataset

        rows = _splits.eval_arrays(self._items, self._offsets, split, max_len)
        return make_eval_dataset(
            rows.item_ids,
            _splits.concat_segments(
                self._items, rows.history_starts, rows.history_ends
            ),
            rows.history_ends - rows.history_starts,
            rows.targets,
            self.num_items,
            batch_size,
        )

    def __repr__(self) -> str:
        return (
            f"SequenceDataset(name={self.name!r}, users={self.num_users}, "
            f"items={self.num_items}, actions={self.num_actions})"
        )


# ---------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------


def from_interactions(
    source: str | os.PathLike | pd.DataFrame,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str | None = "timestamp",
    min_count: int | None = 5,
    *,
    duplicates: str = "drop_exact",
    min_user_count: int | None = None,
    min_item_count: int | None = None,
    sep: str | None = None,
    file_format: str | None = None,
    id_type: str = "auto",
    encoding: str = "utf-8",
    item_attributes: dict | None = None,
    name: str | None = None,
) -> SequenceDataset:
    """Builds a `SequenceDataset` from an interaction log.

    The log is read (`read_interactions`), sorted by time (stable: equal
    timestamps keep their file order), de-duplicated, k-core filtered and
    remapped to item ids `1..num_items` (`preprocess_interactions`).

    Args:
        source: a CSV/TSV/Parquet path or a `pandas.DataFrame`.
        user_col, item_col, time_col: column names (`time_col=None`: the row
            order is the time order).
        min_count: k of the iterative k-core filter (5 as in the paper;
            `None` or 1 disables it).
        duplicates: `"drop_exact"` (default: drop repeated `(user, item,
            time)` rows), `"keep"`, `"drop_consecutive"` or `"keep_first"`.
        min_user_count, min_item_count: separate k-core thresholds (positive
            integers or `None`).
        sep, file_format, id_type, encoding: see `read_interactions`.
        item_attributes: optional dict `original item id -> attribute ids`;
            it is remapped to model ids (items not kept are dropped). Keys
            are matched to the log's item ids by their text, `str(key) ==
            str(item id)`, so the string keys of a JSON file (`{"4": [...]}`)
            match integer item ids, and the int keys of
            `read_item_attributes` match ids read as strings. A partial match
            is fine (`ds.report.notes` says how many keys matched); a mapping
            that matches none of the kept items is an error.
        name: dataset name (default: the file name or "dataframe").

    Returns:
        A `SequenceDataset`; `ds.vocabulary` maps original to model item ids
        and `ds.report` tells what was dropped and why.

    Raises:
        FileNotFoundError, ValueError: see `read_interactions` and
            `preprocess_interactions`; also when `item_attributes` is not a
            mapping of item ids to lists of attribute ids, when two of its
            keys have the same text, or when none of its keys matches an item
            kept after preprocessing.

    Example:
    >>> import pandas as pd
    >>> log = pd.DataFrame({"user_id": ["u1"] * 3 + ["u2"] * 3,
    ...                     "item_id": ["a", "b", "c", "b", "c", "a"],
    ...                     "timestamp": [1, 2, 3, 1, 2, 3]})
    >>> ds = from_interactions(log, min_count=None)
    >>> [s.tolist() for s in ds.sequences]
    [[1, 2, 3], [2, 3, 1]]
    """
    check_min_counts(min_count, min_user_count, min_item_count)
    if item_attributes is not None and not callable(
        getattr(item_attributes, "items", None)
    ):
        raise ValueError(
            "`item_attributes` must be a dict `item id -> list of attribute ids` "
            f"or None. Received: {type(item_attributes).__name__}"
        )
    frame = read_interactions(
        source,
        user_col,
        item_col,
        time_col,
        sep=sep,
        file_format=file_format,
        id_type=id_type,
        encoding=encoding,
    )
    result = preprocess_interactions(
        frame,
        min_count,
        min_user_count=min_user_count,
        min_item_count=min_item_count,
        duplicates=duplicates,
    )
    if name is None:
        name = (
            "dataframe"
            if isinstance(source, pd.DataFrame)
            else os.path.basename(str(source))
        )
    attributes = None
    if item_attributes is not None:
        attributes = _match_attributes(item_attributes, result.vocabulary)
        kept = result.vocabulary.num_items
        result.report.notes.append(
            f"item_attributes: {len(attributes):,} of {len(item_attributes):,} "
            f"keys match a kept item; {kept - len(attributes):,} of the "
            f"{kept:,} items have no attributes"
        )
    return SequenceDataset.from_flat(
        result.items,
        result.offsets,
        result.vocabulary.num_items,
        vocabulary=result.vocabulary,
        report=result.report,
        item_attributes=attributes,
        name=name,
    )


def _examples(values: Iterable, count: int = 3) -> str:
    """A few values with their types, e.g. `'4' (str), '83' (str)`."""
    shown = []
    for value in values:
        if len(shown) == count:
            break
        if isinstance(value, np.generic):
            value = value.item()
        shown.append(f"{value!r} ({type(value).__name__})")
    return ", ".join(shown) if shown else "none"


def _match_attributes(item_attributes, vocabulary: Vocabulary) -> dict:
    """Remaps `original id -> attributes` to `model id -> attributes` by text.

    `item_attributes` is a dict (or anything with `.items()`, e.g. a pandas
    Series indexed by item id).
    """
    by_text = {str(original): model for original, model in vocabulary.items()}
    attributes: dict[int, list] = {}
    source_key: dict[int, object] = {}
    for key, value in item_attributes.items():
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise ValueError(
                f"`item_attributes`: item {key!r}: expected a list of attribute "
                f"ids, got {value!r}"
            )
        text = str(key.item() if isinstance(key, np.generic) else key)
        model = by_text.get(text)
        if model is None:
            continue
        if model in attributes:
            raise ValueError(
                f"`item_attributes`: the keys {source_key[model]!r} and {key!r} "
                f"both name item {text!r} (keys are matched by their text)"
            )
        attributes[model] = list(value)
        source_key[model] = key
    if not attributes:
        raise ValueError(
            f"`item_attributes`: none of its {len(item_attributes):,} keys matches "
            f"one of the {vocabulary.num_items:,} items kept after preprocessing "
            "(0 matches). Keys are matched to item ids by their text, str(key) == "
            f"str(item id). Example keys: {_examples(item_attributes)}; example "
            f"item ids: {_examples(vocabulary.item_ids)}"
        )
    return attributes


def from_sequence_file(
    path: str | os.PathLike,
    attributes_path: str | os.PathLike | None = None,
    *,
    name: str | None = None,
) -> SequenceDataset:
    """Loads a file in the published 5-core format, keeping its ids.

    Item ids are kept exactly as published (identity vocabulary), so the
    item-attribute JSON, whose keys are item ids, stays valid; `num_items` is
    the largest item id. Nothing is filtered (the published files already are
    5-core); the report notes whether the file really is 5-core.

    Args:
        path: the `user item item ...` text file.
        attributes_path: optional `*_item2attributes.json` beside it.
        name: dataset name (default: the file name without suffix).

    Returns:
        A `SequenceDataset` whose `user_ids` are the file's user ids.

    Raises:
        FileNotFoundError, ValueError: see `read_sequence_file` and
            `read_item_attributes`; also when an attribute key is not an
            item id of the file.

    Example:
    >>> ds = from_sequence_file("Beauty.txt", "Beauty_item2attributes.json")  # doctest: +SKIP
    """
    user_ids, sequences = read_sequence_file(path)
    lengths = np.asarray([len(s) for s in sequences], dtype=np.int64)
    offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    items = np.concatenate(sequences)
    num_items = int(items.max())
    counts = np.bincount(items, minlength=num_items + 1)[1:]
    report = PreprocessReport(
        input_interactions=len(items),
        input_users=len(sequences),
        input_items=int((counts > 0).sum()),
        output_interactions=len(items),
        output_users=len(sequences),
        output_items=int((counts > 0).sum()),
    )
    report.notes.append("published sequence format: item ids kept as published")
    k = int(min(lengths.min(), counts[counts > 0].min()))
    report.notes.append(f"every user and item has at least {k} interactions ({k}-core)")
    unused = int((counts == 0).sum())
    if unused:
        report.notes.append(f"{unused} item id(s) in 1..{num_items} never occur")
    attributes = None
    if attributes_path is not None:
        attributes = read_item_attributes(attributes_path)
        bad = [i for i in attributes if not 1 <= i <= num_items]
        if bad:
            raise ValueError(
                f"{attributes_path}: key {str(bad[0])!r} is not an item id of {path} "
                f"(expected 1..{num_items})"
            )
    if name is None:
        name = os.path.splitext(os.path.basename(str(path)))[0]
    return SequenceDataset.from_flat(
        items,
        offsets,
        num_items,
        user_ids=user_ids,
        item_attributes=attributes,
        report=report,
        name=name,
    )
