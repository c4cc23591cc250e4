#!/usr/bin/env bash
# Every GPU check and benchmark of tdfast, one driver (from the repo root, on a CUDA machine):
#   bash benchmarks/run_gpu.sh                 # the long run: every step but `session`, ~40 min on an H100
#   bash benchmarks/run_gpu.sh session         # the fused kernels' checks in ONE device call of < 8 min
#   bash benchmarks/run_gpu.sh bench-bf16-L75  # or any subset of the steps below (each aims at < 10 min)
# Steps:
#   session          benchmarks/gpu_session.py stages within BUDGET_S (default 450) seconds: parity.json
#                    (compiled fp32 / TF32 / fp16 / bf16 vs the float64 reference + model),
#                    layer_bf16.json, model_bf16_L75.json, then, if time is left, memcheck.json
#                    (compute-sanitizer), model_bf16_L150.json, layer_fp32.json; a stage that
#                    would not fit records {"skipped": reason}. Made for a machine without internet.
#   kernels-tests    every kernel test compiled on the GPU (tests/test_kernels_*.py, the gpu-marked
#                    parity matrix in fp32 / TF32 / fp16 / bf16 included);
#   kernels-memcheck compute-sanitizer memcheck over a few launches (no caching allocator, so an
#                    out-of-bounds access cannot hide inside a pooled block);
#   kernels-bench    benchmarks/bench_kernels.py records kernels_<gpu>_{bf16,fp16,fp32}.json
#                    (bf16 with the knob sweep and the whole-model comparison);
#   train            benchmarks/bench_train.py: training steps/s per preset, fp32 and bf16 autocast
#                    -> train_<gpu>.json;
#   bench-*          `tdfast bench` end to end: Retriever.predict p50/p90/p99, throughput, peak CUDA
#                    memory and compile time for eager, compile (CUDA graphs), triton, onnxruntime and
#                    tensorrt (skipped with the reason where not installed), B in {1,8,32,256},
#                    L in {75,150}, M=32 -> bench_<gpu>_{bf16,fp32}_L{75,150}.json.
# Records go to $OUT when set (the device runner's output folder), else benchmarks/results/
# (the session's under $OUT or benchmarks/results/gpu_session). No plot here (matplotlib may be
# missing on the GPU machine): python -m tdfast.benchmarks.plot RECORD where it is committed.
# Keeps going past a failed step; the exit status says whether any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
unset TRITON_INTERPRET
export PYTHONUNBUFFERED=1
export PATH="$PATH:/usr/local/cuda/bin"  # compute-sanitizer, where CUDA is installed but not on PATH
PY=${PYTHON:-python3}
export RESULTS=${OUT:-benchmarks/results}
mkdir -p "$RESULTS"
if ! "$PY" -c "import tdfast.benchmarks, tdfast.kernels.td_interaction" 2>/dev/null; then
  "$PY" -m pip install -q --no-deps --no-build-isolation -e . > "$RESULTS/pip.log" 2>&1 \
    || "$PY" -m pip install -q --no-deps -e . >> "$RESULTS/pip.log" 2>&1 \
    || { echo "pip install failed, see $RESULTS/pip.log"; exit 1; }
fi
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

session() {  # the kernels' checks in one bounded call; records under $dir as each stage ends
  local dir=${OUT:-benchmarks/results/gpu_session} budget=${BUDGET_S:-450} t0 status rc errors
  mkdir -p "$dir"
  t0=$(date +%s)
  left() { echo $((budget - ($(date +%s) - t0))); }
  { nvidia-smi || true; "$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } \
    > "$dir/env.txt" 2>&1
  # parity, layer timings, model timings (keep ~70 s for memcheck)
  "$PY" benchmarks/gpu_session.py --out "$dir" --budget-s $(( $(left) - 70 )) parity layer model
  status=$?
  if (( $(left) > 60 )) && command -v compute-sanitizer > /dev/null; then
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout $(( $(left) - 20 )) compute-sanitizer --tool memcheck \
      --error-exitcode 9 "$PY" benchmarks/gpu_session.py --out "$dir/memcheck" --budget-s 600 memcheck \
      > "$dir/memcheck.log" 2>&1
    rc=$?
    errors=$(grep -c "========= Invalid\|========= Error" "$dir/memcheck.log" || true)
    printf '{"stage": "memcheck", "tool": "compute-sanitizer --tool memcheck", "exit_code": %d, "error_lines": %d, "clean": %s}\n' \
      "$rc" "$errors" "$([[ $rc == 0 ]] && echo true || echo false)" > "$dir/memcheck.json"
  else
    echo '{"stage": "memcheck", "skipped": "no compute-sanitizer on PATH or under 60 s left"}' > "$dir/memcheck.json"
  fi
  if (( $(left) > 30 )); then  # L = 150 and fp32, with what is left
    "$PY" benchmarks/gpu_session.py --out "$dir" --budget-s $(( $(left) - 10 )) model150 layer_fp32 || status=1
  fi
  echo "session done in $(( $(date +%s) - t0 )) s: records in $dir"
  return $status
}

memcheck() {
  if command -v compute-sanitizer >/dev/null; then
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --error-exitcode 1 \
      "$PY" benchmarks/gpu_session.py --out "$RESULTS/memcheck_probe" memcheck
  else
    echo "compute-sanitizer not on PATH: memcheck skipped"
  fi
}

kernels_bench() {
  "$PY" benchmarks/bench_kernels.py --device cuda --dtype bf16 --sweep --model --out "$RESULTS/kernels_${gpu}_bf16.json" &&
  "$PY" benchmarks/bench_kernels.py --device cuda --dtype fp16 --out "$RESULTS/kernels_${gpu}_fp16.json" &&
  "$PY" benchmarks/bench_kernels.py --device cuda --dtype fp32 --out "$RESULTS/kernels_${gpu}_fp32.json"
}

step session session
step kernels-tests "$PY" -m pytest -q -p no:cacheprovider -m "gpu or not gpu" tests/test_kernels_*.py
step kernels-memcheck memcheck
step kernels-bench kernels_bench
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
