#!/usr/bin/env bash
# Every GPU benchmark of tdfast, in one command (from the repo root, on a CUDA machine):
#   bash benchmarks/run_gpu.sh                       # all steps, ~25 min on an H100
#   bash benchmarks/run_gpu.sh bench-bf16-L75        # or any subset (each step aims at < 10 min):
#        kernels-tests kernels-memcheck kernels-bench train bench-bf16-L75 bench-bf16-L150 bench-fp32-L75 bench-fp32-L150
# Steps:
#   kernels-*   benchmarks/run_gpu_kernels.sh: the kernel parity matrix compiled on the GPU
#               (fp32/TF32/fp16/bf16), compute-sanitizer memcheck, and the fused-kernel
#               do_bench records (kernels_<gpu>_{bf16,fp16,fp32}.json);
#   train       benchmarks/bench_train.py: training steps/s per preset, fp32 and bf16 autocast
#               -> train_<gpu>.json;
#   bench-*     `tdfast bench` end to end: Retriever.predict p50/p90/p99, throughput, peak CUDA
#               memory and compile time for eager, compile (CUDA graphs), triton, onnxruntime and
#               tensorrt (skipped with the reason where not installed), B in {1,8,32,256},
#               L in {75,150}, M=32 -> bench_<gpu>_{bf16,fp32}_L{75,150}.json (one record per
#               dtype and length, so that each step fits a 10-minute command limit).
# Records go to $OUT when set (the device runner's output folder), else benchmarks/results/.
# No plot here (matplotlib may be missing on the GPU machine): make it where the record is
# committed: python -m tdfast.benchmarks.plot benchmarks/results/bench_<gpu>_bf16_L75.json
# Keeps going past a failed step; the exit status says whether any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
unset TRITON_INTERPRET
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
export RESULTS=${OUT:-benchmarks/results}
mkdir -p "$RESULTS"
"$PY" -c "import tdfast.benchmarks" 2>/dev/null || "$PY" -m pip install -q --no-build-isolation --no-deps -e .
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible to torch')" || exit 1
gpu=$("$PY" -c "import re, torch; print(re.sub(r'[^A-Za-z0-9]+', '_', torch.cuda.get_device_name()).strip('_'))")
steps=" ${*:-kernels-tests kernels-memcheck kernels-bench train bench-bf16-L75 bench-bf16-L150 bench-fp32-L75 bench-fp32-L150} "
failed=()

step() {  # step NAME COMMAND...: run it if selected, log to $RESULTS, remember a failure
  local name=$1; shift
  [[ $steps == *" $name "* ]] || return 0
  echo "== $name"
  "$@" 2>&1 | tee "$RESULTS/run_gpu_${gpu}_${name}.log" || failed+=("$name")
}

step kernels-tests bash benchmarks/run_gpu_kernels.sh tests
step kernels-memcheck bash benchmarks/run_gpu_kernels.sh memcheck
step kernels-bench bash benchmarks/run_gpu_kernels.sh bench
step train "$PY" benchmarks/bench_train.py --device cuda --max-load 100 --out "$RESULTS/train_${gpu}.json"
for dtype in bf16 fp32; do
  for len in 75 150; do
    step "bench-$dtype-L$len" "$PY" -m tdfast bench --device cuda --dtypes "$dtype" \
      --backends eager,compile,triton,onnxruntime,tensorrt --batch-sizes 1,8,32,256 --video-lens "$len" \
      --query-len 32 --budget-s 3 --out "$RESULTS/bench_${gpu}_${dtype}_L${len}.json"
  done
done
if ((${#failed[@]})); then echo "failed steps: ${failed[*]}"; exit 1; fi
echo "done: records in $RESULTS"
