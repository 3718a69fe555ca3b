"""Plots in the style of the paper's Figs. 5 and 6 (matplotlib, Agg backend).

- `plot_heads`: a metric against the number of heads `H`, one line for
  SASRec and one for FAME without MoE (`N = 1`), as in Fig. 5.
- `plot_experts`: a metric against the number of experts `N` at a fixed
  head count, with horizontal reference lines for FAME without MoE and
  SASRec at that head count, as in Fig. 6.

Both take the trial rows of `tuning.search.trial_rows` (dicts with the
hyper-parameter values and `val_*` / `test_*` metrics) and write a PNG.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

__all__ = ["plot_experts", "plot_heads"]

_METRICS = ("HR@20", "NDCG@20")
_SPLITS = ("val", "test")


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:  # an optional dependency: the `tuning` extra
        raise ImportError(
            "The tuning plots need matplotlib: `pip install 'keras-fame[tuning]'` "
            "(or `pip install -e '.[tuning]'` in a checkout)."
        ) from e

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _check(splits, metrics: Sequence[str]) -> tuple[str, ...]:
    splits = (splits,) if isinstance(splits, str) else tuple(splits)
    if not splits or any(split not in _SPLITS for split in splits):
        raise ValueError(
            f"`splits` must be one or more of {_SPLITS}. Received: splits={splits!r}"
        )
    if isinstance(metrics, str) or not metrics:
        raise ValueError(
            "`metrics` must be a non-empty sequence of names such as 'NDCG@20'. "
            f"Received: metrics={metrics!r}"
        )
    return splits


def _panels(plt, splits, metrics):
    """A (split, metric) grid of axes, one row per split."""
    fig, axes = plt.subplots(
        len(splits),
        len(metrics),
        figsize=(4.2 * len(metrics), 2.9 * len(splits) + 0.4),
        squeeze=False,
    )
    return fig, [
        (ax, split, metric)
        for row, split in zip(axes, splits, strict=True)
        for ax, metric in zip(row, metrics, strict=True)
    ]


def _completed(rows: Sequence[Mapping], **match) -> list[Mapping]:
    out = []
    for row in rows:
        if row.get("status") != "COMPLETED":
            continue
        if all(row.get(key) == value for key, value in match.items()):
            out.append(row)
    return out


def _series(rows, x_key: str, metric: str) -> tuple[list, list]:
    """The best value of `metric` per x (several trials may share an x)."""
    best: dict = {}
    for row in rows:
        value = row.get(metric)
        if value is None:
            continue
        x = row[x_key]
        best[x] = max(best.get(x, value), value)
    xs = sorted(best)
    return xs, [best[x] for x in xs]


def _log2_axis(ax, xs) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs)
    ax.set_xticklabels([str(x) for x in xs])
    ax.minorticks_off()


def plot_heads(
    rows: Sequence[Mapping],
    path: str | os.PathLike,
    *,
    splits: str | Sequence[str] = _SPLITS,
    metrics: Sequence[str] = _METRICS,
    title: str | None = None,
    **match,
) -> str:
    """Metric vs number of heads: SASRec and FAME without MoE (paper Fig. 5).

    Args:
        rows: Trial rows (`tuning.search.trial_rows`).
        path: Output PNG.
        splits: `"val"` (what the search selects on) and/or `"test"` (what
            the paper's figures show); one row of panels per split.
        metrics: One panel per metric name.
        title: Figure title.
        **match: Keep only rows with these values (e.g. `hidden_dim=64`),
            to fix the other hyper-parameters.

    Returns:
        The path written.
    """
    splits = _check(splits, metrics)
    plt = _pyplot()
    sasrec = _completed(rows, model="sasrec", **match)
    fame = _completed(rows, model="fame", num_experts=1, **match)
    all_x = sorted({row["num_heads"] for row in sasrec + fame})
    if not all_x:
        raise ValueError("`rows` hold no completed SASRec or FAME (N=1) trial to plot.")
    fig, panels = _panels(plt, splits, metrics)
    for ax, split, metric in panels:
        key = f"{split}_{metric}"
        for label, subset, style in (
            ("SASRec", sasrec, dict(marker="s", color="tab:gray")),
            ("FAME w/o MoE (N=1)", fame, dict(marker="o", color="tab:red")),
        ):
            xs, ys = _series(subset, "num_heads", key)
            if xs:
                ax.plot(xs, ys, label=label, **style)
        _log2_axis(ax, all_x)
        ax.set_xlabel("number of heads H")
        ax.set_ylabel(f"{metric} ({split})")
        ax.grid(alpha=0.3)
    panels[0][0].legend(fontsize=8)
    fig.suptitle(title or "Performance vs number of heads")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return os.fspath(path)


def plot_experts(
    rows: Sequence[Mapping],
    path: str | os.PathLike,
    *,
    num_heads: int,
    splits: str | Sequence[str] = _SPLITS,
    metrics: Sequence[str] = _METRICS,
    title: str | None = None,
    **match,
) -> str:
    """Metric vs number of experts at `num_heads` heads (paper Fig. 6).

    FAME trials with `N > 1` form the line; FAME without MoE (`N = 1`) and
    SASRec with the same head count (and `match`) are drawn as horizontal
    reference lines when present.

    Args:
        rows: Trial rows (`tuning.search.trial_rows`).
        path: Output PNG.
        num_heads: The head count of the experts sweep.
        splits: `"val"` and/or `"test"`; one row of panels per split.
        metrics: One panel per metric name.
        title: Figure title.
        **match: Keep only rows with these values (e.g. `hidden_dim=64`).

    Returns:
        The path written.
    """
    splits = _check(splits, metrics)
    plt = _pyplot()
    fame = [
        row
        for row in _completed(rows, model="fame", num_heads=num_heads, **match)
        if row.get("num_experts") != 1
    ]
    if not fame:
        raise ValueError(
            f"`rows` hold no completed FAME trial with num_heads={num_heads} and "
            "more than one expert to plot."
        )
    references = (
        (
            "FAME w/o MoE (N=1)",
            _completed(rows, model="fame", num_heads=num_heads, num_experts=1, **match),
            "tab:red",
        ),
        (
            "SASRec",
            _completed(rows, model="sasrec", num_heads=num_heads, **match),
            "tab:gray",
        ),
    )
    fig, panels = _panels(plt, splits, metrics)
    for ax, split, metric in panels:
        key = f"{split}_{metric}"
        xs, ys = _series(fame, "num_experts", key)
        ax.plot(xs, ys, marker="o", color="tab:blue", label=f"FAME (H={num_heads})")
        for label, subset, color in references:
            values = [row[key] for row in subset if row.get(key) is not None]
            if values:
                ax.axhline(max(values), linestyle="--", color=color, label=label)
        _log2_axis(ax, xs)
        ax.set_xlabel("number of experts N")
        ax.set_ylabel(f"{metric} ({split})")
        ax.grid(alpha=0.3)
    panels[0][0].legend(fontsize=8)
    fig.suptitle(title or f"Performance vs number of experts (H={num_heads})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return os.fspath(path)
