"""Facet inspection: what do FAME's heads and experts pick up? (paper Fig. 7)"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from keras_fame.models import FAME

_HOW_TO_PASS = (
    "pass a dict item id -> attribute ids with at least one item's attributes, "
    "or an int array (num_items + 1, num_facets) of facet values"
)


def _attribute_matrix(attributes, num_items: int):
    """Item attributes as an int matrix `(num_items + 1, F)` (-1 = unknown)."""
    if attributes is None:
        raise ValueError(
            "`attributes` is None: there are no item attributes to align with "
            "(a dataset read without attributes has `item_attributes=None`); "
            + _HOW_TO_PASS
        )
    if isinstance(attributes, Mapping):
        if not attributes or not any(len(v) for v in attributes.values()):
            raise ValueError(
                f"`attributes` holds no attribute ({len(attributes)} items, none "
                "with an attribute id), so there is nothing to align with; "
                + _HOW_TO_PASS
            )
        # Amazon style: item -> list of attribute ids; one "facet" that
        # matches when two items share any attribute.
        return None, attributes
    matrix = np.asarray(attributes)
    if matrix.ndim != 2 or matrix.shape[0] != num_items + 1:
        raise ValueError(
            "`attributes` must be a dict item id -> attribute ids, or an int array "
            f"(num_items + 1, num_facets) = ({num_items + 1}, F). "
            f"Received shape {matrix.shape}."
        )
    if matrix.dtype.kind not in "iu":
        raise ValueError(
            "`attributes` must be an int array of facet values (-1 = unknown). "
            f"Received dtype {matrix.dtype}."
        )
    unknown = np.flatnonzero((matrix[1:] < 0).all(axis=0))
    if unknown.size:
        raise ValueError(
            f"`attributes` column {int(unknown[0])} is -1 (unknown) for every item, "
            "so that facet has nothing to align with; drop the column or fill in "
            "its values"
        )
    return matrix, None


def head_facet_alignment(
    model: FAME,
    dataset,
    attributes,
    facet_names: Sequence[str] | None = None,
    k: int = 10,
    split: str = "test",
    max_users: int = 2000,
    batch_size: int = 256,
    max_attribute_share: float = 0.1,
) -> dict:
    """How often each head's own top-`k` items share a facet with the last item.

    For every evaluated user, each head of `model` ranks the catalogue with its
    own score `P^(h)` (Eq. 9); the alignment of head `h` with facet `f` is the
    share of its top-`k` items (history excluded) whose value of `f` equals
    that of the user's most recent item. `chance` is the same share for items
    drawn uniformly from the catalogue, and `final` for the gated top-`k`
    list. A head that specialises in a facet sits far above chance on it.

    Args:
        model: A trained `FAME`.
        dataset: A `keras_fame.datasets.SequenceDataset`.
        attributes: Either an int array `(num_items + 1, num_facets)` of facet
            values (e.g. the synthetic ground truth's `item_facets`, -1 =
            unknown), or a dict `item id -> list of attribute ids` (e.g.
            `dataset.item_attributes` of the Amazon data), treated as one
            facet that matches when two items share any attribute.
        facet_names: Names of the facets (default `facet_0`, ...).
        k: Length of the lists.
        split: Histories of the `"valid"` or `"test"` split.
        max_users: Users evaluated (the first ones).
        batch_size: Users per batch.
        max_attribute_share: Dict attributes only: attributes carried by more
            than this share of the catalogue (e.g. the top-level category
            that every Amazon Sports item has) are ignored, since sharing
            them says nothing about a facet. A number in (0, 1].

    Returns:
        A dict: `facets` (names), `agreement` `(num_heads, F)`, `final` `(F,)`,
        `chance` `(F,)`, `mean_gate` `(num_heads,)`, `users` (count).

    Raises:
        ValueError: when there is nothing to align with: `attributes` is
            None (a dataset without attributes) or an empty dict, a facet
            column is unknown (-1) for every item, or `max_attribute_share`
            ignores every attribute (the message names the share that would
            keep the rarest one); also on a malformed `attributes`,
            `facet_names` or `max_attribute_share`.
    """
    if not isinstance(model, FAME):
        raise TypeError(
            f"`model` must be a keras_fame.models.FAME. Received: {type(model)}"
        )
    if (
        isinstance(max_attribute_share, bool)
        or not isinstance(max_attribute_share, (int, float, np.integer, np.floating))
        or not 0 < max_attribute_share <= 1
    ):
        raise ValueError(
            "`max_attribute_share` must be a number in (0, 1]. Received: "
            f"max_attribute_share={max_attribute_share!r}"
        )
    matrix, mapping = _attribute_matrix(attributes, model.num_items)
    features, _ = dataset.eval_arrays(split, max_len=model.max_len)
    histories = features["item_ids"][:max_users]
    last = histories[:, -1]

    if matrix is not None:
        num_facets = matrix.shape[1]

        def shares(items, anchor):  # items (..., k), anchor (...,)
            a = matrix[anchor][..., None, :]
            v = matrix[items]
            return ((v == a) & (a >= 0)).mean(axis=-2)  # (..., F)

        catalogue = matrix[1:]
        chance = np.array(
            [
                np.mean([(catalogue[:, f] == matrix[a, f]).mean() for a in last])
                for f in range(num_facets)
            ]
        )
    else:
        num_facets = 1
        counts: dict = {}
        for values in mapping.values():
            for value in set(values):
                counts[value] = counts.get(value, 0) + 1
        common = {
            a for a, c in counts.items() if c > max_attribute_share * model.num_items
        }
        if len(common) == len(counts):
            rarest = min(counts.values())
            needed = math.ceil(rarest / model.num_items * 1000) / 1000
            raise ValueError(
                f"`max_attribute_share={max_attribute_share}` ignores every one of "
                f"the {len(counts)} attributes: each is carried by more than "
                f"{max_attribute_share:.0%} of the {model.num_items} items (the "
                f"rarest by {rarest} items, {rarest / model.num_items:.1%}), so "
                f"nothing is left to align with. Pass max_attribute_share={needed:g} "
                "or more to keep the rarest attributes, "
                "or attributes that tell items apart"
            )
        sets = {int(i): set(v) - common for i, v in mapping.items()}
        if not any(sets.get(i) for i in range(1, model.num_items + 1)):
            raise ValueError(
                f"`attributes`: none of its {len(mapping)} keys is a model item id "
                f"in 1..{model.num_items} with an attribute left, so there is "
                f"nothing to align with (example keys: {list(mapping)[:3]!r}); "
                "pass the attributes by model item id, e.g. "
                "`dataset.item_attributes`"
            )

        def shares(items, anchor):
            anchor = np.asarray(anchor).reshape(-1)
            out = np.zeros(items.shape[:-1] + (1,))
            for index in np.ndindex(items.shape[:-1]):
                anchor_set = sets.get(int(anchor[index[0]]), set())
                hits = [
                    bool(anchor_set & sets.get(int(i), set())) for i in items[index]
                ]
                out[index] = np.mean(hits)
            return out

        universe = list(range(1, model.num_items + 1))
        chance = np.array(
            [
                np.mean(
                    [
                        np.mean(
                            [
                                bool(sets.get(int(a), set()) & sets.get(i, set()))
                                for i in universe
                            ]
                        )
                        for a in last[:200]
                    ]
                )
            ]
        )
    names = (
        list(facet_names)
        if facet_names is not None
        else [f"facet_{f}" for f in range(num_facets)]
    )
    if len(names) != num_facets:
        raise ValueError(
            f"`facet_names` must name {num_facets} facets. Received: {facet_names!r}"
        )

    head_agreement, final_agreement, gates = [], [], []
    for start in range(0, len(histories), batch_size):
        batch = histories[start : start + batch_size]
        report = model._explain_ids(model._check_item_ids(batch), k)
        anchor = last[start : start + batch_size]
        head_agreement.append(shares(report["head_top_ids"], anchor[:, None]))
        final_agreement.append(shares(report["top_ids"], anchor))
        gates.append(report["gate"])
    return {
        "facets": names,
        "agreement": np.concatenate(head_agreement).mean(0),
        "final": np.concatenate(final_agreement).mean(0),
        "chance": chance,
        "mean_gate": np.concatenate(gates).mean(0),
        "users": len(histories),
    }


def expert_usage(
    model: FAME,
    dataset,
    split: str = "test",
    max_users: int = 2000,
    batch_size: int = 256,
) -> dict:
    """How differently FAME's experts attend, and how the router uses them.

    At the last position of each evaluated history, per head: the router's
    mean weight on each expert, how often each expert gets the largest
    weight, the entropy of the routing (divided by `log N`: 1 means every
    expert weighed evenly at every position), and the mean cosine similarity
    between the outputs of every pair of experts (1 means the experts
    compute the same thing). Experts that agree and are weighed evenly make
    a head's mixture (Eq. 17) no more than one attention: the mixture of
    experts then adds nothing the head count and the other weights do not.

    Args:
        model: A trained `FAME`.
        dataset: A `keras_fame.datasets.SequenceDataset`.
        split: Histories of the `"valid"` or `"test"` split.
        max_users: Users evaluated (the first ones).
        batch_size: Users per batch.

    Returns:
        A dict of NumPy arrays and counts: `mean_routing` and `top_share`
        `(num_heads, num_experts)`, `routing_entropy` and `expert_similarity`
        `(num_heads,)`, `users`. With one expert per head the entropy is 0
        and the similarity 1.
    """
    if not isinstance(model, FAME):
        raise TypeError(
            f"`model` must be a keras_fame.models.FAME. Received: {type(model)}"
        )
    features, _ = dataset.eval_arrays(split, max_len=model.max_len)
    histories = features["item_ids"][:max_users]
    experts = model.num_experts
    routing, similarity = [], []
    pairs = np.triu_indices(experts, k=1)
    for start in range(0, len(histories), batch_size):
        out = model.expert_outputs(histories[start : start + batch_size])
        routing.append(out["routing"])
        outputs = out["expert_outputs"].astype("float64")  # (B, H, N, k)
        norms = np.linalg.norm(outputs, axis=-1, keepdims=True)
        unit = outputs / np.maximum(norms, 1e-12)
        cosine = np.einsum("bhnk,bhmk->bhnm", unit, unit)  # (B, H, N, N)
        if experts > 1:
            similarity.append(cosine[:, :, pairs[0], pairs[1]].mean(-1))
        else:
            similarity.append(np.ones(cosine.shape[:2]))
    routing = np.concatenate(routing).astype("float64")  # (U, H, N)
    top = np.argmax(routing, axis=-1)  # (U, H)
    top_share = np.stack([np.mean(top == n, axis=0) for n in range(experts)], axis=-1)
    if experts > 1:
        entropy = -(routing * np.log(np.maximum(routing, 1e-12))).sum(-1)
        entropy = entropy.mean(0) / np.log(experts)
    else:
        entropy = np.zeros(routing.shape[1])
    return {
        "mean_routing": routing.mean(0),
        "top_share": top_share,
        "routing_entropy": entropy,
        "expert_similarity": np.concatenate(similarity).mean(0),
        "users": len(histories),
    }
