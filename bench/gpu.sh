#!/usr/bin/env bash
# The whole GPU check in one call, for a machine with an NVIDIA GPU and a CUDA build of torch:
# build fastgen._C with CUDA, run the test suite (GPU tests included), run the op and sampling
# benchmarks on the GPU, and write everything to $OUT (default bench/results/gpu-run). About 6-10
# minutes.
#
#   OUT=/some/dir bash bench/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-bench/results/gpu-run}
mkdir -p "$OUT"
export MAX_JOBS=${MAX_JOBS:-$(nproc)} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} PYTHONUNBUFFERED=1
# torch guesses CUDA_HOME from the nvcc on PATH, which may be a wrapper outside the toolkit.
if [ -z "${CUDA_HOME:-}" ] && [ -d /usr/local/cuda ]; then export CUDA_HOME=/usr/local/cuda; fi
status=0

step() { echo; echo "== $* ($(date -u +%H:%M:%S))"; }

step "device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv | tee "$OUT/device.txt"
"$PY" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" \
  | tee -a "$OUT/device.txt"

step "build with CUDA (ptxas report in $OUT/build.log)"
if ! FASTGEN_CUDA=1 timeout 300 "$PY" -m pip install -v --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1; then
  grep -E -A4 "error" "$OUT/build.log" | head -60
  echo "BUILD FAILED"; exit 1
fi
grep -E "spill (stores|loads)" "$OUT/build.log" | sort | uniq -c | head -5
"$PY" -m fastgen info | tee "$OUT/info.txt"

step "tests"
FASTGEN_REQUIRE_EXT=1 timeout 300 "$PY" -m pytest -q -x -p no:cacheprovider tests 2>&1 | tail -25 | tee "$OUT/tests.txt" \
  || status=1

step "benchmarks"
timeout 300 "$PY" -m bench --device cuda --out "$OUT/results.csv" 2>&1 | grep -v -E "USDT|profiler" | tee "$OUT/bench.txt" \
  || status=1

step "sampling benchmark"
timeout 240 "$PY" -m bench.bench_sampling --device cuda --batch 1 16 256 --repeats 3 --out "$OUT/sampling.csv" 2>&1 \
  | tee "$OUT/sampling.txt" || status=1
exit $status
