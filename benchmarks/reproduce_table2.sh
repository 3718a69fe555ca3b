#!/usr/bin/env bash
# Reproduce Table 2 (SASRec and FAME) on the three Amazon datasets.
# Usage: bash benchmarks/reproduce_table2.sh [DATA_DIR] [--paper-recipe] [extra train_sports.py flags]
#   default:        the package's recipe (one training row per target, FAME
#                   warm-started where SASRec ended and fine-tuned at Adam 1e-4
#                   with dropout 0.3)
#                   -> benchmarks/results/<dataset>-<model>.json
#   --paper-recipe: the paper's recipe (one training row per user, random
#                   experts and W_f, one rate: 1e-3 for both stages, SASRec's
#                   dropout for both)
#                   -> benchmarks/results/paper-recipe/<dataset>-<model>.json
# DATA_DIR defaults to ../shared/datasets/amazon. Work folders: runs/<dataset>
# (default) or runs/paper-recipe/<dataset>, with a log beside each.
set -euo pipefail
cd "$(dirname "$0")/.."
data_dir=../shared/datasets/amazon
if [[ $# -gt 0 && "$1" != --* ]]; then
  data_dir=$1
  shift
fi
recipe=(--prefixes --expert-init pretrained --facet-init identity --finetune-learning-rate 0.0001 --finetune-dropout 0.3)
results=benchmarks/results
runs=runs
if [[ "${1:-}" == "--paper-recipe" ]]; then
  shift
  recipe=(--no-prefixes --expert-init random --facet-init random --finetune-learning-rate 0.001 --finetune-dropout none)
  results=benchmarks/results/paper-recipe
  runs=runs/paper-recipe
fi
mkdir -p "$runs"
for dataset in sports beauty toys; do
  python examples/train_sports.py --dataset "$dataset" --data-dir "$data_dir" \
    --workdir "$runs/$dataset" --results-dir "$results" \
    --pretrain-epochs 80 --finetune-epochs 60 --patience 8 "${recipe[@]}" "$@" 2>&1 \
    | grep --line-buffered -v -E "^(WARNING|I0000)" > "$runs/$dataset.log"
done
