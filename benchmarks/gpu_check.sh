#!/usr/bin/env bash
# One device call: build s2dtw with its CUDA module, run the CUDA tests, then the GPU
# benchmark. Nothing is downloaded (torch, numba, pybind11, cmake, ninja, pytest and
# hypothesis must already be installed). Results go to $OUT (default ./gpu_out):
#   build.log, nvidia-smi.txt, pytest_cuda.log, gpu_bench.md, gpu_bench.log
# Usage (from the repository root):  bash benchmarks/gpu_check.sh
#
# The baseline peer pysdtw is not on the GPU machine and nothing can be downloaded there:
# carry it as a wheel. Here, once:  echo /.whl/ >> .git/info/exclude &&
#   pip download --no-deps -d .whl pysdtw==0.0.5
# then name ".whl" in the device call's `carry`; this script installs what it finds there.
set -euo pipefail

cd "$(dirname "$0")/.."
OUT="${OUT:-./gpu_out}"
mkdir -p "$OUT"
export OUT

echo "== nvidia-smi"
nvidia-smi 2>&1 | tee "$OUT/nvidia-smi.txt" || true
nvcc --version | tail -2 || true

if compgen -G ".whl/*.whl" >/dev/null; then
  python -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi

echo "== build (CUDA arch ${S2DTW_CUDA_ARCHS:-90})"
start=$(date +%s)
S2DTW_CUDA=1 S2DTW_CUDA_ARCHS="${S2DTW_CUDA_ARCHS:-90}" \
  timeout 300 pip install --no-build-isolation --no-deps -e . >"$OUT/build.log" 2>&1 \
  || { tail -50 "$OUT/build.log"; echo "build failed"; exit 1; }
echo "built in $(( $(date +%s) - start )) s"
python -c "import s2dtw; print(s2dtw.backends())" | tee -a "$OUT/build.log"

echo "== pytest -m cuda"
status=0
timeout 300 python -m pytest -m cuda tests/test_cuda.py -x -q -p no:cacheprovider --durations=15 2>&1 \
  | tee "$OUT/pytest_cuda.log" || status=$?

echo "== benchmark"
timeout 240 python benchmarks/gpu_bench.py 2>&1 | tee "$OUT/gpu_bench.log" || status=$((status ? status : 1))
exit "$status"
