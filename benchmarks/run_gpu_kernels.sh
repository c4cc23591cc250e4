#!/usr/bin/env bash
# Everything in tdfast.kernels that needs a CUDA GPU, in one command (from the repo root):
#   bash benchmarks/run_gpu_kernels.sh                  # all three steps (~15 min on an H100)
# (For a single device call of under 8 minutes use benchmarks/gpu_session.sh instead.)
#   bash benchmarks/run_gpu_kernels.sh tests memcheck   # or any subset of: tests memcheck bench
# 1. every kernel test compiled on the GPU (tests/test_kernels_*.py, the gpu-marked parity
#    matrix in fp32 / TF32 / fp16 / bf16 included);
# 2. compute-sanitizer memcheck over a few launches (no caching allocator, so an
#    out-of-bounds access cannot hide inside a pooled block);
# 3. the benchmark records, written to benchmarks/results/kernels_<gpu>_<dtype>.json
#    (bf16 with the knob sweep and the whole-model comparison, then fp16 and fp32).
# Logs go to benchmarks/results/kernels_<gpu>_{tests,memcheck}.log (or $RESULTS/...). Stops at the
# first failure. benchmarks/run_gpu.sh runs this and the end-to-end `tdfast bench` matrix.
set -euo pipefail
cd "$(dirname "$0")/.."
unset TRITON_INTERPRET
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
"$PY" -c "import tdfast.kernels" 2>/dev/null || "$PY" -m pip install -q --no-build-isolation --no-deps -e .
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible to torch')"
gpu=$("$PY" -c "import re, torch; print(re.sub(r'[^A-Za-z0-9]+', '_', torch.cuda.get_device_name()).strip('_'))")
out=${RESULTS:-benchmarks/results}
mkdir -p "$out"
steps=" ${*:-tests memcheck bench} "

if [[ $steps == *" tests "* ]]; then
echo "== kernel tests on $gpu"
"$PY" -m pytest -q -p no:cacheprovider -m "gpu or not gpu" tests/test_kernels_*.py 2>&1 | tee "$out/kernels_${gpu}_tests.log"
fi

if [[ $steps == *" memcheck "* ]]; then
echo "== compute-sanitizer memcheck"
if command -v compute-sanitizer >/dev/null; then
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --error-exitcode 1 \
    "$PY" benchmarks/gpu_session.py --out "$out/memcheck_probe" memcheck 2>&1 \
    | tee "$out/kernels_${gpu}_memcheck.log"
else
  echo "compute-sanitizer not on PATH: memcheck skipped" | tee "$out/kernels_${gpu}_memcheck.log"
fi
fi

if [[ $steps == *" bench "* ]]; then
echo "== benchmarks"
"$PY" benchmarks/bench_kernels.py --device cuda --dtype bf16 --sweep --model --out "$out/kernels_${gpu}_bf16.json"
"$PY" benchmarks/bench_kernels.py --device cuda --dtype fp16 --out "$out/kernels_${gpu}_fp16.json"
"$PY" benchmarks/bench_kernels.py --device cuda --dtype fp32 --out "$out/kernels_${gpu}_fp32.json"
fi
echo "done: $out/kernels_${gpu}_*"
