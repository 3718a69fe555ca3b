"""`Vocabulary`: your item ids <-> the model's ids `1..num_items` (0 is padding).

NumPy only, so that models (backend-neutral) can carry one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from keras_fame.layers._utils import check_choice

_VOCABULARY_FORMAT = "keras_fame.vocabulary/1"


# ---------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------


class Vocabulary(Mapping):
    """Maps original item ids to model ids `1..num_items` (0 is padding).

    It is a read-only mapping `original item id -> model id`; the reverse
    direction is the array `item_ids` (`item_ids[k - 1]` is the original id of
    model id `k`). The users' original ids, in dataset order, are kept in
    `user_ids`.

    Args:
        item_ids: original item ids, in model-id order (the first one gets
            model id 1).
        user_ids: original user ids in dataset order, or `None`.

    Example:
    >>> vocab = Vocabulary(["apple", "pear"], user_ids=["u1"])
    >>> vocab["pear"], vocab.decode([1, 2]).tolist()
    (2, ['apple', 'pear'])
    """

    def __init__(self, item_ids: Sequence, user_ids: Sequence | None = None):
        self.item_ids = _as_id_array(item_ids)
        self.user_ids = None if user_ids is None else _as_id_array(user_ids)
        self._index = {key: k + 1 for k, key in enumerate(self.item_ids.tolist())}
        self._texts = None
        self._text_index = None
        if len(self._index) != len(self.item_ids):
            raise ValueError("`item_ids` must not contain duplicates")

    @classmethod
    def identity(cls, num_items: int, user_ids: Sequence | None = None) -> Vocabulary:
        """The vocabulary of data whose ids already are `1..num_items`."""
        return cls(np.arange(1, num_items + 1, dtype=np.int64), user_ids)

    @property
    def num_items(self) -> int:
        """Number of items (the largest model id)."""
        return len(self.item_ids)

    @property
    def is_identity(self) -> bool:
        """Whether every original item id equals its model id."""
        ids = self.item_ids
        return ids.dtype.kind in "iu" and np.array_equal(
            ids, np.arange(1, len(ids) + 1)
        )

    def __getitem__(self, original_id) -> int:
        try:
            return self._index[original_id]
        except (KeyError, TypeError):
            raise KeyError(
                f"item {original_id!r} is not in the vocabulary "
                f"({self.num_items} items)"
            ) from None

    def __iter__(self) -> Iterator:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def encode(self, original_ids: Sequence, unknown: str = "error") -> np.ndarray:
        """Maps original item ids to model ids.

        Args:
            original_ids: a sequence of original item ids.
            unknown: `"error"` to raise on an id not in the vocabulary, or
                `"zero"` to map it to 0 (padding).

        Returns:
            An int32 array of model ids.
        """
        unknown = check_choice("unknown", unknown, ("error", "zero"))
        values = np.asarray(original_ids).tolist()
        if unknown == "error":
            return np.asarray([self[v] for v in values], dtype=np.int32)
        return np.asarray([self._index.get(v, 0) for v in values], dtype=np.int32)

    @property
    def texts(self) -> list[str]:
        """Each item's id as text, in model-id order (`texts[k - 1]` is id `k`).

        Integer ids are written in decimal (`12` -> `"12"`); these are the ids
        a served model reads and answers with.

        Raises:
            ValueError: two ids have the same text (e.g. `1` and `"1"`).
        """
        if self._texts is None:
            texts = [str(v) for v in self.item_ids.tolist()]
            if len(set(texts)) != len(texts):
                seen = {}
                for model_id, text in enumerate(texts, start=1):
                    if text in seen:
                        raise ValueError(
                            f"items {self.item_ids[seen[text] - 1]!r} and "
                            f"{self.item_ids[model_id - 1]!r} have the same text "
                            f"{text!r}; ids must differ as text to be served"
                        )
                    seen[text] = model_id
            self._texts = texts
        return self._texts

    def encode_texts(self, tokens: Sequence[str]) -> np.ndarray:
        """Maps ids given as text to model ids, 0 for an id not in the vocabulary.

        Args:
            tokens: item ids as text (`str(id)` of an integer id).

        Returns:
            An int32 array of model ids (0 where the id is unknown).
        """
        if self._text_index is None:
            self._text_index = {t: k for k, t in enumerate(self.texts, start=1)}
        index = self._text_index
        return np.asarray([index.get(str(t), 0) for t in tokens], dtype=np.int32)

    def decode(self, ids: Sequence[int]) -> np.ndarray:
        """Maps model ids (1..num_items) back to original item ids."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 1 or ids.max() > self.num_items):
            raise ValueError(
                f"model ids must lie in [1, {self.num_items}]; got values in "
                f"[{ids.min()}, {ids.max()}]"
            )
        return self.item_ids[ids - 1]

    def save(self, path: str | os.PathLike) -> None:
        """Writes the vocabulary as JSON (reload with `Vocabulary.load`)."""
        payload = {
            "format": _VOCABULARY_FORMAT,
            "item_ids": self.item_ids.tolist(),
            "user_ids": None if self.user_ids is None else self.user_ids.tolist(),
        }
        Path(path).write_text(json.dumps(payload), encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        """Reads a vocabulary written by `Vocabulary.save`."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"vocabulary file not found: {path}")
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{path}, line {e.lineno}, column {e.colno}: invalid JSON: {e.msg}"
            ) from None
        if not isinstance(payload, dict) or payload.get("format") != _VOCABULARY_FORMAT:
            raise ValueError(
                f"{path}: not a keras_fame vocabulary (expected the key "
                f"'format' = {_VOCABULARY_FORMAT!r})"
            )
        return cls(payload["item_ids"], payload.get("user_ids"))

    def __eq__(self, other) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        same_users = (self.user_ids is None and other.user_ids is None) or (
            self.user_ids is not None
            and other.user_ids is not None
            and self.user_ids.tolist() == other.user_ids.tolist()
        )
        return self.item_ids.tolist() == other.item_ids.tolist() and same_users

    __hash__ = None  # mutable-looking container: not hashable

    def __repr__(self) -> str:
        return f"Vocabulary(num_items={self.num_items}, identity={self.is_identity})"


def _as_id_array(ids: Sequence) -> np.ndarray:
    """int64 array for integer ids, object array otherwise."""
    array = np.asarray(ids)
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    out = np.empty(len(ids), dtype=object)
    out[:] = list(ids)
    return out
