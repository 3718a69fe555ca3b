#!/usr/bin/env bash
# Reproduce the paper's Table 2 rows (SASRec and FAME) on the three Amazon datasets.
# Usage: bash benchmarks/reproduce_table2.sh [DATA_DIR] [extra train_sports.py flags]
# Results: benchmarks/results/<dataset>-<model>.json; logs: runs/<dataset>.log
# FAME is warm-started exactly as in the paper (random experts and W_f), which
# is how the committed results were made; the package's default warm start
# (--expert-init pretrained --facet-init identity) is reported separately in
# benchmarks/results/experiments/<dataset>-fame-identity.json.
set -euo pipefail
cd "$(dirname "$0")/.."
data_dir=${1:-../shared/datasets/amazon}
shift || true
for dataset in sports beauty toys; do
  python examples/train_sports.py --dataset "$dataset" --data-dir "$data_dir" \
    --pretrain-epochs 80 --finetune-epochs 60 --patience 8 \
    --expert-init random --facet-init random "$@" 2>&1 \
    | grep --line-buffered -v -E "^(WARNING|I0000)" > "runs/$dataset.log"
done
