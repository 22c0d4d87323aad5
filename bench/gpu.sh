#!/usr/bin/env bash
# The whole GPU check in one call, for a machine with an NVIDIA GPU and a CUDA build of torch:
# build fastgen._C with CUDA, then, most important first, the sampling program's GPU tests (the
# CUDA block interpreter against the reference), the sampling benchmark (batch 1, 16, 256), the GPU
# tests of every other op, and the op benchmarks.
# Everything goes to $OUT (default bench/results/gpu-run).
#
#   OUT=/some/dir GPU_BUDGET_S=480 bash bench/gpu.sh
#
# Each step gets its own time limit, cut to what is left of GPU_BUDGET_S (default 480 s), so the
# script ends inside the budget and a slow step costs only the steps after it. Results are written
# as they come: a step stopped at its limit keeps the rows it finished. Python packages the machine
# lacks may come as wheels in .whl/.
# FASTGEN_COMMIT names the commit in the result rows where the checkout has no .git.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-bench/results/gpu-run}
BUDGET=${GPU_BUDGET_S:-480}
mkdir -p "$OUT"
export MAX_JOBS=${MAX_JOBS:-$(nproc)} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} PYTHONUNBUFFERED=1
# torch guesses CUDA_HOME from the nvcc on PATH, which may be a wrapper outside the toolkit.
if [ -z "${CUDA_HOME:-}" ] && [ -d /usr/local/cuda ]; then export CUDA_HOME=/usr/local/cuda; fi
status=0

step() { echo; echo "== $* (at $SECONDS s of $BUDGET)"; }

# limited MAX CMD...: CMD under a timeout of MAX seconds or what is left of the budget, if less.
limited() {
  local max=$1 left=$((BUDGET - SECONDS))
  shift
  if [ "$left" -lt 15 ]; then echo "skipped: the budget is spent"; return 1; fi
  timeout "$((left < max ? left : max))" "$@"
}

if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/fastgen-site .whl/*.whl \
    && export PYTHONPATH=/tmp/fastgen-site${PYTHONPATH:+:$PYTHONPATH}
fi
XDIST=()
if "$PY" -c "import xdist" 2> /dev/null; then XDIST=(-n 12); fi

step "device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
"$PY" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"

step "build with CUDA (compiler output in $OUT/build.log)"
FASTGEN_NO_EXT=1 "$PY" -m pip install -q --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1
if ! FASTGEN_CUDA=1 limited 300 "$PY" setup.py build_ext --inplace >> "$OUT/build.log" 2>&1; then
  grep -E -A4 "error" "$OUT/build.log" | head -40
  # Without the CUDA kernels the Triton kernels and the references still run on the GPU.
  echo "CUDA BUILD FAILED: going on with the CPU-only build"
  status=1
  if ! FASTGEN_CUDA=0 limited 200 "$PY" setup.py build_ext --inplace >> "$OUT/build.log" 2>&1; then
    echo "CPU BUILD FAILED"
    exit 1
  fi
fi
grep -E -A2 "Compiling entry function '.*sample_program_kernel" "$OUT/build.log" | grep -E "Used|spill" | head -8
"$PY" -m fastgen info

step "the sampling program on the GPU: tests"
FASTGEN_REQUIRE_EXT=1 limited 120 "$PY" -m pytest -q -p no:cacheprovider -rfE tests/test_sample_program.py \
  tests/test_dispatch.py -k "cuda or dispatch or info" > "$OUT/tests-sampler.txt" 2>&1 || status=1
tail -5 "$OUT/tests-sampler.txt"

step "sampling benchmark"
limited 150 "$PY" -m bench.bench_sampling --device cuda --model GatedPixelCNN --model PixelCNN --batch 1 16 256 \
  --repeats 5 --out "$OUT/sampling.csv" || status=1

step "every other op on the GPU: tests"
FASTGEN_REQUIRE_EXT=1 limited 150 "$PY" -m pytest -q -p no:cacheprovider -rfE ${XDIST[@]+"${XDIST[@]}"} -k "cuda or triton" \
  --ignore tests/test_sample_program.py tests > "$OUT/tests-ops.txt" 2>&1 || status=1
tail -5 "$OUT/tests-ops.txt"

step "op benchmarks, forward+backward"
limited 90 "$PY" -m bench --device cuda --modes fwd+bwd --providers reference,fastgen --out "$OUT/ops.csv" \
  2>&1 | grep -v -E "USDT|profiler" || status=1

step "FID's streaming feature statistics (forward only: nothing to differentiate)"
limited 60 "$PY" -m bench --device cuda --op feature_stats --modes fwd --providers reference,fastgen \
  --out "$OUT/ops.csv" 2>&1 | grep -v -E "USDT|profiler" || status=1

step "sample quality of models on the GPU (generators, devices, the feature network moved along)"
limited 60 "$PY" - > "$OUT/quality-cuda.txt" 2>&1 <<'PYEOF' || status=1
from fastgen.data import digits
from fastgen.metrics import sample_quality
from fastgen.models import DCGAN, VAE, GatedPixelCNN
for model in (DCGAN(1, 17, 8, n_classes=10), VAE(1, 17, 8, n_classes=10), GatedPixelCNN(1, 17, 8, n_classes=10)):
    report = sample_quality(model.cuda(), digits("test"), n=500, metrics="fid,kid,pr")
    print(type(model).__name__, report.summary().replace("\n", ";"))
PYEOF
cat "$OUT/quality-cuda.txt"

step "PixelCNN++ sampling (the block interpreter)"
limited 90 "$PY" -m bench.bench_sampling --device cuda --model PixelCNNpp --repeats 3 --out "$OUT/sampling.csv" \
  || status=1

step "training steps, plain PyTorch against fastgen (torch.compile's minutes of compiling left out)"
limited 120 "$PY" -m bench.bench_train --device cuda --providers plain,fastgen --repeats 5 --out "$OUT/train.csv" \
  || status=1

step "op benchmarks against torch.compile, while the budget lasts"
limited 600 "$PY" -m bench --device cuda --modes fwd+bwd --out "$OUT/ops-compiled.csv" 2>&1 \
  | grep -v -E "USDT|profiler" | tail -40

step "done"
exit $status
