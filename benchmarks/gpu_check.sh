#!/usr/bin/env bash
# One call on the GPU machine gives everything, in < 420 s wall clock (a second try fits in 15 min):
#   preflight -> build (arch 90) -> compute-sanitizer x4 -> CUDA tests -> benchmark -> summary.
# Every stage has its own timeout (with the preflight's 15 s they add up to 390 s, 408 s with the
# kill grace) and a failing stage does not stop the next. Nothing is downloaded: torch, numba, pybind11, cmake, ninja, pytest, hypothesis must be
# there; peers (pysdtw) only as wheels carried in .whl/ (here, once:
#   echo /.whl/ >> .git/info/exclude && pip download --no-deps -d .whl pysdtw==0.0.5
# then name ".whl" in the device call's `carry`). Without a GPU the GPU stages print "no GPU" and
# are skipped (a dry run of the rest). Usage, from anywhere:  bash benchmarks/gpu_check.sh
# Results in $OUT (default ./gpu_out), at most 8 files: preflight.txt build.log sanitizer.log
# pytest_cuda.log gpu_bench.log gpu_bench.md summary.txt
set -uo pipefail

cd "$(dirname "$0")/.."
OUT="${OUT:-./gpu_out}"
mkdir -p "$OUT"
export OUT PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PATH="$PATH:/usr/local/cuda/bin"  # compute-sanitizer
PY=python3
T0=$(date +%s)
SUMMARY=()
stage() {  # stage NAME TIMEOUT_S LOG COMMAND...: runs COMMAND under timeout, logs, records the outcome
  local name=$1 limit=$2 log=$3 start rc
  shift 3
  echo "== $name (timeout ${limit} s)"
  start=$(date +%s)
  timeout --kill-after=2 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  local took=$(( $(date +%s) - start )) verdict="ok"
  [ "$rc" -ne 0 ] && verdict="FAILED (exit $rc)"
  [ "$rc" -eq 124 ] && verdict="TIMED OUT"
  tail -n 4 "$log" | sed 's/^/   /'
  SUMMARY+=("$(printf '%-22s %-18s %4d s' "$name" "$verdict" "$took")")
}
skip() { SUMMARY+=("$(printf '%-22s %-18s' "$1" "skipped: $2")"); echo "== $1: skipped ($2)"; }

# ---- preflight (15 s)
{
  date -u +"date: %Y-%m-%dT%H:%M:%SZ"
  for tool in $PY nvcc cmake ninja compute-sanitizer nvidia-smi; do
    printf '%-18s %s\n' "$tool" "$(command -v "$tool" || echo MISSING)"
  done
  $PY --version
  nvcc --version 2>/dev/null | tail -1
  cmake --version 2>/dev/null | head -1
  timeout 15 $PY - <<'PYEOF'
import os, sysconfig
inc = sysconfig.get_paths()["include"]
print("Python.h:", "present" if os.path.exists(os.path.join(inc, "Python.h")) else "MISSING", inc)
for name in ("torch", "numba", "pybind11", "pytest", "hypothesis", "pytest_timeout", "pysdtw"):
    try:
        module = __import__(name)
        print(f"{name:15s} {getattr(module, '__version__', 'present')}")
    except Exception as err:
        print(f"{name:15s} absent ({type(err).__name__})")
import torch
print("torch CUDA:", torch.version.cuda, "| GPU:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
PYEOF
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
} >"$OUT/preflight.txt" 2>&1
cat "$OUT/preflight.txt"
GPU=0
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null && GPU=1
[ "$GPU" -eq 1 ] || echo "no GPU: the sanitizer, CUDA test and benchmark stages are skipped (dry run)"

if compgen -G ".whl/*.whl" >/dev/null; then  # the carried peers, outside the environment
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/s2dtw_peers .whl/*.whl >>"$OUT/preflight.txt" 2>&1
  export PYTHONPATH="$PYTHONPATH:/tmp/s2dtw_peers"
fi

# ---- build (130 s): the CUDA module for sm_90 only; in place if pip may not install here
export S2DTW_CUDA=1 S2DTW_CUDA_ARCHS="${S2DTW_CUDA_ARCHS:-90}" S2DTW_BUILD_JOBS="${S2DTW_BUILD_JOBS:-16}" PY
stage build 130 "$OUT/build.log" bash -c '{ $PY -m pip install --no-build-isolation --no-deps -e . ||
  $PY setup.py build_ext --inplace; } && $PY -c "import s2dtw; print(s2dtw.backends())"'

BUILT=0
$PY -c "import s2dtw, sys; sys.exit(0 if s2dtw.backends()['cuda_module_built'] else 1)" 2>/dev/null && BUILT=1

# ---- compute-sanitizer (4 x 20 s): the s2dtw kernels only, one tiny problem per regime and dtype
if [ "$GPU" -eq 1 ] && [ "$BUILT" -eq 1 ] && command -v compute-sanitizer >/dev/null; then
  FILTER=()
  compute-sanitizer --help 2>&1 | grep -q -- "--kernel-name" && FILTER=(--kernel-name kns=s2dtw)
  for tool in memcheck racecheck synccheck initcheck; do
    echo "---- $tool" >>"$OUT/sanitizer.log"
    stage "sanitizer $tool" 20 "$OUT/sanitizer.log" \
      compute-sanitizer --tool "$tool" --error-exitcode 1 "${FILTER[@]}" $PY benchmarks/gpu_sanitize.py
  done
elif [ "$GPU" -eq 0 ]; then skip "sanitizer" "no GPU"
else skip "sanitizer" "no CUDA module or no compute-sanitizer"; fi

# ---- CUDA tests (30 s + 75 s): the no-sync / graph checks first, then the rest; failures capped
if [ "$GPU" -eq 1 ] && [ "$BUILT" -eq 1 ]; then
  PER_TEST=()
  $PY -c "import pytest_timeout" 2>/dev/null && PER_TEST=(--timeout=30)
  FAST="sync or graph or lengths"
  stage "tests: sync + graph" 30 "$OUT/pytest_cuda.log" $PY -m pytest -m cuda tests/test_cuda.py -k "$FAST" \
    -q -p no:cacheprovider --maxfail=5 "${PER_TEST[@]}"
  stage "tests: the rest" 75 "$OUT/pytest_cuda.log" $PY -m pytest -m cuda tests/test_cuda.py -k "not ($FAST)" \
    -q -p no:cacheprovider --maxfail=10 --durations=10 "${PER_TEST[@]}"
else skip "CUDA tests" "no GPU or no CUDA module"; fi

# ---- benchmark (60 s)
if [ "$GPU" -eq 1 ] && [ "$BUILT" -eq 1 ]; then
  stage benchmark 60 "$OUT/gpu_bench.log" $PY benchmarks/gpu_bench.py
else skip "benchmark" "no GPU or no CUDA module"; fi

# ---- summary, last
{
  echo "==== s2dtw gpu_check summary ($(date -u +%FT%TZ), $(( $(date +%s) - T0 )) s in all)"
  grep -E "GPU:|Python.h" "$OUT/preflight.txt"
  printf '%s\n' "${SUMMARY[@]}"
  grep -hE "^(FAILED|ERROR)|[0-9]+ (passed|failed)" "$OUT/pytest_cuda.log" 2>/dev/null | tail -n 12
  grep -hE "^\| " "$OUT/gpu_bench.md" 2>/dev/null | cut -c1-150 | head -n 20
} | tee "$OUT/summary.txt"
grep -qE "FAILED|TIMED OUT" "$OUT/summary.txt" && exit 1
exit 0
