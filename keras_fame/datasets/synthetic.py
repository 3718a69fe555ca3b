"""A synthetic sequential-recommendation dataset with planted facets.

Every item has one value per facet (by default a genre-like facet with 10
values and a brand-like facet with 25). Within each facet value the items
form a fixed chain (a random order; the "within-facet order"). Every user has
one dominant facet and a few preferred values of it, and walks along those
values' chains:

- with probability `noise` the next item is a random unseen item;
- otherwise, with probability `switch_prob` the user switches to another of
  its preferred values, and then moves 1 (or, with probability
  `skip_prob`, 2) steps along the current value's chain, skipping items
  already seen.

So the next item almost always shares the user's dominant-facet value
(facet signal), and which item it is follows from the previous item of that
value (sequential signal); item popularity is nearly flat. The generator
returns the ground truth so that one can check whether heads and experts
recover the facets.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from keras_fame.datasets.preprocessing import PreprocessReport, Vocabulary
from keras_fame.datasets.sequence_dataset import SequenceDataset


@dataclasses.dataclass(frozen=True)
class SyntheticGroundTruth:
    """The structure planted by `make_synthetic`.

    Attributes:
        facet_names: name of each facet (e.g. `("genre", "brand")`).
        facet_sizes: number of values of each facet.
        item_facets: int `(num_items + 1, num_facets)`; `item_facets[i, f]` is
            the value (0-based) of item `i` in facet `f`; row 0 (padding) is -1.
        user_dominant_facet: int `(num_users,)`: each user's dominant facet.
        user_preferred_values: int `(num_users, preferences_per_user)`: the
            preferred values (of the dominant facet) of each user.
        chains: `chains[f][v]` is the int array of items with value `v` in
            facet `f`, in their within-facet order.
        attribute_offsets: int `(num_facets,)`: attribute id of value `v` of
            facet `f` is `attribute_offsets[f] + v` (attribute ids start at 1).
    """

    facet_names: tuple[str, ...]
    facet_sizes: tuple[int, ...]
    item_facets: np.ndarray
    user_dominant_facet: np.ndarray
    user_preferred_values: np.ndarray
    chains: tuple[tuple[np.ndarray, ...], ...]
    attribute_offsets: np.ndarray

    @property
    def num_facets(self) -> int:
        """Number of facets."""
        return len(self.facet_sizes)

    def facet_agreement(self, sequences: list[np.ndarray]) -> np.ndarray:
        """Per user, the share of items whose dominant-facet value is preferred.

        Args:
            sequences: one item array per user (as `SequenceDataset.sequences`).

        Returns:
            A float array `(num_users,)` in [0, 1].
        """
        out = np.zeros(len(sequences))
        for u, seq in enumerate(sequences):
            values = self.item_facets[seq, self.user_dominant_facet[u]]
            out[u] = np.isin(values, self.user_preferred_values[u]).mean()
        return out


def make_synthetic(
    num_users: int = 2000,
    num_items: int = 500,
    num_facets: int = 2,
    facet_sizes: tuple[int, ...] | None = None,
    min_length: int = 10,
    max_length: int = 30,
    preferences_per_user: int = 2,
    switch_prob: float = 0.15,
    skip_prob: float = 0.2,
    noise: float = 0.05,
    seed: int = 0,
    name: str = "synthetic",
) -> tuple[SequenceDataset, SyntheticGroundTruth]:
    """Generates sequences driven by planted facets and a within-facet order.

    Args:
        num_users: number of users.
        num_items: number of items (ids `1..num_items`).
        num_facets: number of facets per item.
        facet_sizes: values per facet; default `(10, 25)` for two facets,
            otherwise `10, 25, 5, 15, ...` cycled. Each value is shared by
            `num_items / size` items (balanced).
        min_length, max_length: sequence lengths are uniform in this range.
        preferences_per_user: preferred values of the dominant facet per user.
        switch_prob: chance, per step, of switching to another preferred value.
        skip_prob: chance of moving two steps along a chain instead of one.
        noise: chance that the next item is a random unseen item.
        seed: random seed; the same seed gives the same data.
        name: the dataset name.

    Returns:
        A tuple `(dataset, ground_truth)`: a `SequenceDataset` (identity
        vocabulary, user ids `1..num_users`, `item_attributes` giving each item
        one attribute id per facet) and a `SyntheticGroundTruth`.

    Example:
    >>> ds, truth = make_synthetic(num_users=50, num_items=60, seed=1)
    >>> ds.num_items, truth.item_facets.shape
    (60, (61, 2))
    """
    if facet_sizes is None:
        defaults = (10, 25, 5, 15)
        facet_sizes = tuple(defaults[f % len(defaults)] for f in range(num_facets))
    facet_sizes = tuple(int(v) for v in facet_sizes)
    if len(facet_sizes) != num_facets:
        raise ValueError(
            f"`facet_sizes` must have num_facets={num_facets} entries. Received: "
            f"facet_sizes={facet_sizes}"
        )
    if not 1 <= min_length <= max_length:
        raise ValueError(
            "`min_length` and `max_length` must satisfy 1 <= min_length <= "
            f"max_length. Received: min_length={min_length}, max_length={max_length}"
        )
    if max_length > num_items:
        raise ValueError(
            f"`max_length` ({max_length}) cannot exceed `num_items` ({num_items}): "
            "sequences never repeat an item"
        )
    for f, size in enumerate(facet_sizes):
        if not 1 <= size <= num_items:
            raise ValueError(
                f"facet {f} must have between 1 and num_items={num_items} values. "
                f"Received: facet_sizes={facet_sizes}"
            )
    if not 1 <= preferences_per_user <= min(facet_sizes):
        raise ValueError(
            f"`preferences_per_user` must lie in [1, {min(facet_sizes)}] (the "
            f"smallest facet). Received: preferences_per_user={preferences_per_user}"
        )
    for arg, value in (
        ("switch_prob", switch_prob),
        ("skip_prob", skip_prob),
        ("noise", noise),
    ):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"`{arg}` must lie in [0, 1]. Received: {arg}={value}")

    rng = np.random.default_rng(seed)
    item_facets = np.full((num_items + 1, num_facets), -1, dtype=np.int64)
    chains = []
    for f, size in enumerate(facet_sizes):
        values = np.arange(num_items) % size  # balanced
        item_facets[1:, f] = rng.permutation(values)
        facet_chains = []
        for v in range(size):
            members = np.flatnonzero(item_facets[:, f] == v)
            facet_chains.append(rng.permutation(members))
        chains.append(tuple(facet_chains))
    # position of each item in its chain, per facet
    position = np.zeros((num_items + 1, num_facets), dtype=np.int64)
    for f in range(num_facets):
        for chain in chains[f]:
            position[chain, f] = np.arange(len(chain))

    dominant = rng.integers(0, num_facets, size=num_users)
    preferred = np.stack(
        [
            rng.choice(facet_sizes[d], size=preferences_per_user, replace=False)
            for d in dominant
        ]
    )
    lengths = rng.integers(min_length, max_length + 1, size=num_users)
    sequences = []
    for u in range(num_users):
        d = dominant[u]
        seen = np.zeros(num_items + 1, dtype=bool)
        seen[0] = True
        # one cursor per preferred value, starting at a random chain position
        cursor = {
            int(v): int(rng.integers(len(chains[d][v]))) - 1 for v in preferred[u]
        }
        value = int(rng.choice(preferred[u]))
        seq = []
        for _ in range(lengths[u]):
            item = 0
            if rng.random() >= noise:
                if len(cursor) > 1 and rng.random() < switch_prob:
                    value = int(rng.choice([v for v in cursor if v != value]))
                chain = chains[d][value]
                step = 2 if rng.random() < skip_prob else 1
                pos = cursor[value]
                for _ in range(len(chain)):
                    pos = (pos + step) % len(chain)
                    step = 1
                    if not seen[chain[pos]]:
                        item = int(chain[pos])
                        cursor[value] = pos
                        break
            if item == 0:  # noise, or every item of the chain already seen
                unseen = np.flatnonzero(~seen)
                item = int(rng.choice(unseen))
            seen[item] = True
            seq.append(item)
        sequences.append(np.asarray(seq, dtype=np.int32))

    attribute_offsets = 1 + np.concatenate([[0], np.cumsum(facet_sizes)[:-1]]).astype(
        np.int64
    )
    item_attributes = {
        i: [int(attribute_offsets[f] + item_facets[i, f]) for f in range(num_facets)]
        for i in range(1, num_items + 1)
    }
    names = (
        ("genre", "brand")
        if num_facets == 2
        else tuple(f"facet_{f}" for f in range(num_facets))
    )
    truth = SyntheticGroundTruth(
        facet_names=names,
        facet_sizes=facet_sizes,
        item_facets=item_facets,
        user_dominant_facet=dominant,
        user_preferred_values=preferred,
        chains=tuple(chains),
        attribute_offsets=attribute_offsets,
    )
    user_ids = np.arange(1, num_users + 1)
    total = int(lengths.sum())
    report = PreprocessReport(
        input_interactions=total,
        input_users=num_users,
        input_items=num_items,
        output_interactions=total,
        output_users=num_users,
        output_items=num_items,
        notes=[f"synthetic data (seed={seed}); nothing filtered"],
    )
    dataset = SequenceDataset(
        sequences,
        num_items,
        user_ids=user_ids,
        item_attributes=item_attributes,
        vocabulary=Vocabulary.identity(num_items, user_ids),
        report=report,
        name=name,
    )
    return dataset, truth
