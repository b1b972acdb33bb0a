#!/usr/bin/env bash
# Every GPU test and benchmark in one call, for a session that is lent a GPU
# (the device tool: about 15 minutes of GPU time per task, so one call).
# Builds the extension with nvcc on the GPU machine, runs `pytest -m cuda`,
# then the CUDA benchmarks; logs and JSON results go to $OUT (default
# ./gpu_out). Stages are time-boxed so that the whole run stays under
# ~8 minutes; a stage that fails does not stop the next one.
#
#   bash scripts/gpu_check.sh [quick|full]
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-full}
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
PY=${PYTHON:-python3}
log() { echo "== $(date +%T) $*" | tee -a "$OUT/summary.log"; }

log "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee -a "$OUT/summary.log"
nvcc --version | tail -2 | tee -a "$OUT/summary.log"

log "build (nvcc + gcc)"
export SPECSTREAM_CUDA=1 SPECSTREAM_WERROR=1
if ! timeout 200 "$PY" setup.py -q build_ext --inplace -j 16 >"$OUT/build.log" 2>&1; then
    tail -60 "$OUT/build.log"
    log "build FAILED"
    exit 1
fi
"$PY" -c "import specstream; from specstream import _core; print(_core.build_info(), 'gpus:', _core.cuda_available(), _core.cuda_device_name(0))" 2>&1 | tee -a "$OUT/summary.log"

log "pytest -m cuda"
timeout 150 "$PY" -m pytest -q -m cuda -p no:cacheprovider tests/ --tb=short 2>&1 | tee "$OUT/pytest_cuda.log" | tail -40
log "pytest exit ${PIPESTATUS[0]}"

if [ "$MODE" = quick ]; then
    log "bench (quick)"
    timeout 100 "$PY" benchmarks/bench_cuda.py --shapes 70m,410m --tokens 32 --repeats 2 --spec-target 410m \
        --no-torch --out cuda_quick.json 2>&1 | tee "$OUT/bench_cuda.log" | tail -30
    cp benchmarks/results/cuda_quick.json "$OUT/" 2>/dev/null
else
    log "bench"
    timeout 300 "$PY" benchmarks/bench_cuda.py 2>&1 | tee "$OUT/bench_cuda.log" | tail -40
    cp benchmarks/results/cuda_*.json "$OUT/" 2>/dev/null
fi
log "done"
