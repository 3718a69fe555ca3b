"""KerasTuner search of FAME's heads and experts (paper Sec. 5.4, 5.6).

- `FAMEHyperModel`: a `keras_tuner.HyperModel` of FAME (warm-started from a
  cached pretrained SASRec) and the SASRec baseline; objective
  `OBJECTIVE` = validation NDCG@20 (full ranking), maximised.
- `SearchSpace`: heads, experts and optionally hidden size, blocks,
  dropout, learning rate; non-dividing head counts are excluded.
- `SASRecCache`: one pretraining per backbone key, reused across trials.
- `make_tuner`, `run_search`, `run_paper_protocol`: Bayesian, Hyperband,
  grid and random searches, and the paper's heads-then-experts protocol.
- `trial_rows`, `write_summary`, `plot_heads`, `plot_experts`: the summary
  table (markdown, CSV, JSON) and Figs. 5-6 style plots.

Command line: `python tuning/search.py --help`.
"""

from tuning.hypermodel import (
    MODELS,
    OBJECTIVE,
    PAPER_EXPERTS,
    PAPER_HEADS,
    FAMEHyperModel,
    SASRecCache,
    SearchSpace,
)
from tuning.plots import plot_experts, plot_heads
from tuning.search import (
    TUNERS,
    ConfigListOracle,
    ConfigListSearch,
    best_row,
    make_tuner,
    markdown_table,
    run_paper_protocol,
    run_search,
    trial_rows,
    write_summary,
)

__all__ = [
    "MODELS",
    "OBJECTIVE",
    "PAPER_EXPERTS",
    "PAPER_HEADS",
    "TUNERS",
    "ConfigListOracle",
    "ConfigListSearch",
    "FAMEHyperModel",
    "SASRecCache",
    "SearchSpace",
    "best_row",
    "make_tuner",
    "markdown_table",
    "plot_experts",
    "plot_heads",
    "run_paper_protocol",
    "run_search",
    "trial_rows",
    "write_summary",
]
