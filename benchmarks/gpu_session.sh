#!/usr/bin/env bash
# The fused TD kernels' GPU checks in ONE device call of under 8 minutes (from the repo root):
#   OUT=/path/to/results bash benchmarks/gpu_session.sh
# Made for a machine without internet (torch and triton already installed; tdfast is installed
# from this checkout with --no-deps). Writes JSON records under $OUT as each stage ends, in this
# order (benchmarks/gpu_session.py says what each holds):
#   parity.json           compiled fp32 / TF32 / fp16 / bf16 vs the float64 reference + model
#   layer_bf16.json       do_bench: fused vs eager vs torch.compile of one TD interaction
#   model_bf16_L75.json   whole qvhighlights model, B 1/32/256, CUDA graphs, eager vs fused
# and, if the budget leaves time: memcheck.json (compute-sanitizer memcheck over odd shapes and
# every tile), model_bf16_L150.json, layer_fp32.json. BUDGET_S (default 450) bounds the whole
# script; a stage that would not fit records {"skipped": reason} instead.
set -uo pipefail
cd "$(dirname "$0")/.."
unset TRITON_INTERPRET
export PYTHONUNBUFFERED=1
export PATH="$PATH:/usr/local/cuda/bin"  # compute-sanitizer, where CUDA is installed but not on PATH
PY=${PYTHON:-python3}
OUT=${OUT:-benchmarks/results/gpu_session}
BUDGET_S=${BUDGET_S:-450}
mkdir -p "$OUT"
t0=$(date +%s)
left() { echo $((BUDGET_S - ($(date +%s) - t0))); }

{ nvidia-smi || true; "$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } \
  > "$OUT/env.txt" 2>&1
if ! "$PY" -c "import tdfast.kernels.td_interaction" 2>/dev/null; then
  "$PY" -m pip install -q --no-deps --no-build-isolation -e . > "$OUT/pip.log" 2>&1 \
    || "$PY" -m pip install -q --no-deps -e . >> "$OUT/pip.log" 2>&1 \
    || { echo "pip install failed, see $OUT/pip.log"; exit 1; }
fi
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible to torch')" || exit 1

# 1-3: parity, layer timings, model timings (keep ~70 s for memcheck).
"$PY" benchmarks/gpu_session.py --out "$OUT" --budget-s $(( $(left) - 70 )) parity layer model
status=$?

# 4: compute-sanitizer memcheck over the probe launches (no caching allocator, so an
# out-of-bounds access cannot hide inside a pooled block).
if (( $(left) > 60 )) && command -v compute-sanitizer > /dev/null; then
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout $(( $(left) - 20 )) compute-sanitizer --tool memcheck \
    --error-exitcode 9 "$PY" benchmarks/gpu_session.py --out "$OUT/memcheck" --budget-s 600 memcheck \
    > "$OUT/memcheck.log" 2>&1
  rc=$?
  errors=$(grep -c "========= Invalid\|========= Error" "$OUT/memcheck.log" || true)
  printf '{"stage": "memcheck", "tool": "compute-sanitizer --tool memcheck", "exit_code": %d, "error_lines": %d, "clean": %s}\n' \
    "$rc" "$errors" "$([[ $rc == 0 ]] && echo true || echo false)" > "$OUT/memcheck.json"
else
  echo '{"stage": "memcheck", "skipped": "no compute-sanitizer on PATH or under 60 s left"}' > "$OUT/memcheck.json"
fi

# 5-6: L = 150 and fp32, with what is left.
if (( $(left) > 30 )); then
  "$PY" benchmarks/gpu_session.py --out "$OUT" --budget-s $(( $(left) - 10 )) model150 layer_fp32 || status=1
fi
echo "done in $(( $(date +%s) - t0 )) s: records in $OUT"
exit $status
