#!/usr/bin/env bash
# The scaling benchmark as run on a lent GPU machine (JAX backend: that
# machine has JAX with CUDA but no TensorFlow; keras, namex and optree travel
# as wheels). Usage: OUT=/some/dir bash benchmarks/run_scale_gpu.sh
set -uo pipefail
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-benchmarks/results/scale}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import jax, keras; print(jax.__version__, jax.devices(), keras.__version__)"
# 10^6 items, 64 dense rows x 50 positions (3,200 scored positions, about what
# a 256-row batch of Amazon histories holds), all four losses, both evaluations.
python3 benchmarks/bench_scale.py --steps 10 --timeout 150 --out "$OUT/scale_gpu.json"
# 256 dense rows (12,800 positions): the full softmax's logits alone are 51 GB.
python3 benchmarks/bench_scale.py --batch-size 256 --train full,mixed --eval "" \
  --steps 10 --timeout 150 --out "$OUT/scale_gpu_b256.json"
# A Sports-sized catalogue (18,358 ids), batch 256 x 50: one full-softmax step.
python3 benchmarks/bench_scale.py --num-items 18358 --batch-size 256 --train full,mixed \
  --eval "" --steps 20 --timeout 150 --out "$OUT/scale_gpu_sports_size.json"
