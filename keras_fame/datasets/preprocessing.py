"""Preprocessing: interactions -> time-ordered, k-core, remapped sequences.

`preprocess_interactions` takes the `(user, item, time)` frame of a reader and
returns per-user item sequences with item ids `1..num_items`, the
`Vocabulary` that maps original ids to those ids, and a `PreprocessReport`
that accounts for every dropped interaction.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from keras_fame.layers._utils import (
    check_choice,
    check_non_negative_int,
    check_positive_int,
)
from keras_fame.vocabulary import Vocabulary  # noqa: F401 (re-exported)

DUPLICATE_POLICIES = ("keep", "drop_exact", "drop_consecutive", "keep_first")

# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class DropRecord:
    """One preprocessing step that removed interactions.

    Attributes:
        step: short name of the step (e.g. `"duplicates"`, `"k-core round 1"`).
        reason: why the interactions were removed.
        interactions: number of interactions removed.
        users: number of users that lost all their interactions in this step.
        items: number of items that lost all their interactions in this step.
    """

    step: str
    reason: str
    interactions: int
    users: int
    items: int


@dataclasses.dataclass
class PreprocessReport:
    """What preprocessing kept, dropped, and why.

    Every input interaction is either in the output or counted in exactly one
    `DropRecord`: `input_interactions == output_interactions +
    dropped_interactions`.

    Attributes:
        input_interactions, input_users, input_items: counts of the input.
        output_interactions, output_users, output_items: counts of the result.
        records: one `DropRecord` per step that removed something.
        notes: other facts worth knowing (e.g. identity mapping kept).
    """

    input_interactions: int
    input_users: int
    input_items: int
    output_interactions: int = 0
    output_users: int = 0
    output_items: int = 0
    records: list[DropRecord] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def dropped_interactions(self) -> int:
        """Total number of interactions removed."""
        return sum(r.interactions for r in self.records)

    def as_dict(self) -> dict:
        """The report as plain Python values (JSON-serialisable)."""
        out = dataclasses.asdict(self)
        out["dropped_interactions"] = self.dropped_interactions
        return out

    def __str__(self) -> str:
        lines = [
            f"input:  {self.input_interactions:,} interactions, "
            f"{self.input_users:,} users, {self.input_items:,} items"
        ]
        for r in self.records:
            lines.append(
                f"- {r.step}: dropped {r.interactions:,} interactions "
                f"({r.users:,} users, {r.items:,} items removed entirely): {r.reason}"
            )
        lines.append(
            f"output: {self.output_interactions:,} interactions, "
            f"{self.output_users:,} users, {self.output_items:,} items"
        )
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


# ---------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------


def stable_time_order(user_codes: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Permutation sorting by user, then time; ties keep input order.

    Args:
        user_codes: integer user codes (users are ordered by code).
        times: timestamps (any sortable numeric dtype).

    Returns:
        An int64 permutation array.

    Example:
    >>> stable_time_order(np.array([1, 0, 1]), np.array([5, 9, 5])).tolist()
    [1, 0, 2]
    """
    by_time = np.argsort(times, kind="stable")
    by_user = np.argsort(user_codes[by_time], kind="stable")
    return by_time[by_user]


def duplicate_mask(
    user_codes: np.ndarray, item_codes: np.ndarray, times: np.ndarray, policy: str
) -> np.ndarray:
    """Boolean mask of the rows to drop as duplicates.

    The rows must already be sorted by user and time.

    Args:
        user_codes, item_codes, times: the sorted interaction columns.
        policy: `"keep"` (drop nothing), `"drop_exact"` (drop repeated
            `(user, item, time)` rows, keeping the first), `"drop_consecutive"`
            (drop an item that repeats the user's previous item) or
            `"keep_first"` (keep only a user's first interaction with an item).

    Returns:
        A boolean array, True where the row is a duplicate to drop.
    """
    policy = check_choice("duplicates", policy, DUPLICATE_POLICIES)
    n = len(user_codes)
    if policy == "keep" or n == 0:
        return np.zeros(n, dtype=bool)
    if policy == "drop_consecutive":
        mask = np.zeros(n, dtype=bool)
        mask[1:] = (user_codes[1:] == user_codes[:-1]) & (
            item_codes[1:] == item_codes[:-1]
        )
        return mask
    columns = {"u": user_codes, "i": item_codes}
    if policy == "drop_exact":
        columns["t"] = times
    return pd.DataFrame(columns).duplicated(keep="first").to_numpy()


def k_core_mask(
    user_codes: np.ndarray,
    item_codes: np.ndarray,
    min_user_count: int,
    min_item_count: int,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Iterative k-core filtering.

    Repeatedly removes users with fewer than `min_user_count` interactions and
    items with fewer than `min_item_count` interactions until none is left.

    Args:
        user_codes, item_codes: non-negative integer codes of each interaction.
        min_user_count: minimum interactions per user (an integer >= 0; 0 and
            1 keep every user).
        min_item_count: minimum interactions per item (likewise).

    Raises:
        ValueError: on a count that is not a non-negative integer (booleans
            and floats such as 2.5 included), or codes that are not 1-D
            non-negative integer arrays of equal length.

    Returns:
        A tuple `(keep, rounds)`: `keep` is the final boolean mask and
        `rounds` the list of per-round masks of rows removed in that round.

    Example:
    >>> keep, rounds = k_core_mask(np.array([0, 0, 1]), np.array([0, 1, 0]), 2, 2)
    >>> keep.tolist(), len(rounds)
    ([False, False, False], 2)
    """
    min_user_count = check_non_negative_int("min_user_count", min_user_count)
    min_item_count = check_non_negative_int("min_item_count", min_item_count)
    user_codes = np.asarray(user_codes)
    item_codes = np.asarray(item_codes)
    for name, codes in (("user_codes", user_codes), ("item_codes", item_codes)):
        if codes.ndim != 1 or (codes.size and codes.dtype.kind not in "iu"):
            raise ValueError(
                f"`{name}` must be a 1-D array of integer codes. Received: "
                f"shape {codes.shape}, dtype {codes.dtype}"
            )
        if codes.size and codes.min() < 0:
            raise ValueError(
                f"`{name}` must hold non-negative codes. Received a minimum of "
                f"{int(codes.min())}"
            )
    if len(user_codes) != len(item_codes):
        raise ValueError(
            f"`user_codes` and `item_codes` must have the same length. Received: "
            f"{len(user_codes)} and {len(item_codes)}"
        )
    keep = np.ones(len(user_codes), dtype=bool)
    rounds: list[np.ndarray] = []
    n_users = int(user_codes.max()) + 1 if len(user_codes) else 0
    n_items = int(item_codes.max()) + 1 if len(item_codes) else 0
    while True:
        u, i = user_codes[keep], item_codes[keep]
        user_counts = np.bincount(u, minlength=n_users)
        item_counts = np.bincount(i, minlength=n_items)
        ok = (user_counts[u] >= min_user_count) & (item_counts[i] >= min_item_count)
        if ok.all():
            return keep, rounds
        removed = np.zeros_like(keep)
        removed[np.flatnonzero(keep)[~ok]] = True
        keep &= ~removed
        rounds.append(removed)


def check_min_counts(min_count=None, min_user_count=None, min_item_count=None) -> None:
    """Raises a ValueError unless each k-core threshold is a positive int or None.

    Booleans and floats (even whole ones such as 5.0) are refused, so that
    `min_count=2.5` is not silently read as 2 and `min_count=-3` does not
    silently disable the filter.
    """
    for name, value in (
        ("min_count", min_count),
        ("min_user_count", min_user_count),
        ("min_item_count", min_item_count),
    ):
        check_positive_int(name, value, allow_none=True)


@dataclasses.dataclass
class PreprocessResult:
    """Output of `preprocess_interactions`.

    Attributes:
        items: int32 model item ids of all interactions, user after user, each
            user's in time order.
        offsets: int64 array of length `num_users + 1`; user `u`'s items are
            `items[offsets[u]:offsets[u + 1]]`.
        vocabulary: the `Vocabulary` (original ids of items and users).
        report: the `PreprocessReport`.
    """

    items: np.ndarray
    offsets: np.ndarray
    vocabulary: Vocabulary
    report: PreprocessReport


def preprocess_interactions(
    interactions: pd.DataFrame,
    min_count: int | None = 5,
    *,
    min_user_count: int | None = None,
    min_item_count: int | None = None,
    duplicates: str = "drop_exact",
) -> PreprocessResult:
    """Sorts, de-duplicates, k-core filters and remaps an interaction log.

    Steps, in order:
    1. stable sort by user (order of first appearance) and time; interactions
       with equal timestamps keep their input order;
    2. duplicate handling (`duplicates`, see `duplicate_mask`);
    3. iterative k-core filtering;
    4. remapping: items get ids `1..num_items` in order of first appearance
       when reading the users' sequences one after the other; users keep their
       order of first appearance.

    Args:
        interactions: a DataFrame with columns `user`, `item`, `time` (as
            returned by `read_interactions`).
        min_count: k of the k-core, applied to users and items (5 in the
            paper): a positive integer, or `None`. `None` or 1 disables
            filtering.
        min_user_count: overrides `min_count` for users (a positive integer
            or `None`: use `min_count`).
        min_item_count: overrides `min_count` for items (likewise).
        duplicates: duplicate policy, one of `DUPLICATE_POLICIES`.

    Returns:
        A `PreprocessResult`.

    Raises:
        ValueError: on missing columns, a bad policy, a count that is not a
            positive integer or `None` (e.g. -3, 0, 2.5 or True), or when
            nothing is left.

    Example:
    >>> import pandas as pd
    >>> log = pd.DataFrame({"user": ["a", "a", "b"], "item": ["x", "y", "x"],
    ...                     "time": [2, 1, 5]})
    >>> result = preprocess_interactions(log, min_count=None)
    >>> result.items.tolist(), result.vocabulary.item_ids.tolist()
    ([1, 2, 2], ['y', 'x'])
    """
    check_min_counts(min_count, min_user_count, min_item_count)
    for column in ("user", "item", "time"):
        if column not in interactions.columns:
            raise ValueError(
                f"`interactions` must have the columns 'user', 'item', 'time' "
                f"(see `read_interactions`); missing {column!r}"
            )
    user_codes, user_uniques = pd.factorize(interactions["user"].to_numpy(), sort=False)
    item_codes, item_uniques = pd.factorize(interactions["item"].to_numpy(), sort=False)
    times = interactions["time"].to_numpy()
    report = PreprocessReport(
        input_interactions=len(interactions),
        input_users=len(user_uniques),
        input_items=len(item_uniques),
    )

    order = stable_time_order(user_codes, times)
    user_codes, item_codes, times = user_codes[order], item_codes[order], times[order]

    def drop(mask: np.ndarray, step: str, reason: str) -> None:
        nonlocal user_codes, item_codes, times
        if not mask.any():
            return
        users_before = len(np.unique(user_codes))
        items_before = len(np.unique(item_codes))
        keep = ~mask
        user_codes, item_codes, times = user_codes[keep], item_codes[keep], times[keep]
        report.records.append(
            DropRecord(
                step=step,
                reason=reason,
                interactions=int(mask.sum()),
                users=users_before - len(np.unique(user_codes)),
                items=items_before - len(np.unique(item_codes)),
            )
        )

    descriptions = {
        "drop_exact": "repeated (user, item, timestamp) rows; the first is kept",
        "drop_consecutive": "an item repeating the user's previous item",
        "keep_first": "repeated (user, item) pairs; the earliest is kept",
    }
    drop(
        duplicate_mask(user_codes, item_codes, times, duplicates),
        f"duplicates ({duplicates})",
        descriptions.get(duplicates, ""),
    )

    k_user = min_count if min_user_count is None else min_user_count
    k_item = min_count if min_item_count is None else min_item_count
    k_user = 0 if k_user is None else int(k_user)
    k_item = 0 if k_item is None else int(k_item)
    if max(k_user, k_item) > 1 and len(user_codes):
        _, rounds = k_core_mask(user_codes, item_codes, k_user, k_item)
        alive = np.ones(len(user_codes), dtype=bool)
        for r, removed in enumerate(rounds, start=1):
            # Each round's mask refers to the rows before k-core filtering.
            drop(
                removed[alive],
                f"k-core round {r}",
                f"users with fewer than {k_user} or items with fewer than "
                f"{k_item} interactions",
            )
            alive &= ~removed
        report.notes.append(
            f"k-core: users >= {k_user}, items >= {k_item} interactions "
            f"({len(rounds)} filtering round(s))"
        )

    if len(user_codes) == 0:
        raise ValueError(
            f"no interactions left after preprocessing ({report.input_interactions} "
            f"in the input):\n{report}\nLower `min_count` or check the input."
        )

    # Remap items by first appearance in the (user, time) order.
    unique_items, first_index = np.unique(item_codes, return_index=True)
    by_appearance = unique_items[np.argsort(first_index, kind="stable")]
    new_id = np.zeros(len(item_uniques), dtype=np.int64)
    new_id[by_appearance] = np.arange(1, len(by_appearance) + 1)
    items = new_id[item_codes].astype(np.int32)

    kept_users, counts = np.unique(user_codes, return_counts=True)  # sorted by code
    offsets = np.zeros(len(kept_users) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])

    vocabulary = Vocabulary(item_uniques[by_appearance], user_uniques[kept_users])
    report.output_interactions = len(items)
    report.output_users = len(kept_users)
    report.output_items = len(by_appearance)
    if (
        report.input_interactions
        != report.output_interactions + report.dropped_interactions
    ):
        raise RuntimeError(f"preprocessing lost interactions silently:\n{report}")
    return PreprocessResult(items, offsets, vocabulary, report)
