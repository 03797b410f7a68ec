#!/usr/bin/env bash
# The test suite against the CPU extension built with AddressSanitizer + UBSan.
#
#   tests/sanitize.sh [pytest arguments]     (default: the whole suite; paths relative to the repository)
#
# Builds csrc/ with -DS2DTW_SANITIZE=ON into build/sanitize/ (the normal build is left
# alone), lays out a copy of the package there (symlinks to s2dtw/*.py plus the
# sanitized module) and runs pytest on it with libasan preloaded into Python. The
# kernels run at the scalar SIMD level: ASan cannot see inside the intrinsics, and
# the SIMD kernels are checked against the reference by the normal run instead. Any
# ASan report or undefined behaviour aborts the run with a nonzero status.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=$root/build/sanitize
pkg=$build/pkg/s2dtw

# The build tools pip's isolated build had (pyproject.toml), where this environment lacks them.
python -c 'import pybind11' 2>/dev/null || python -m pip install -q pybind11
command -v cmake >/dev/null || python -m pip install -q cmake

mkdir -p "$pkg"
generator=()
if command -v ninja >/dev/null; then generator=(-GNinja); fi
cmake -S csrc -B "$build/cmake" "${generator[@]}" -DS2DTW_SANITIZE=ON -DS2DTW_CUDA=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DS2DTW_OUTPUT_DIR="$pkg" -DPython_EXECUTABLE="$(command -v python)" \
  -Dpybind11_DIR="$(python -c 'import pybind11; print(pybind11.get_cmake_dir())')" >/dev/null
cmake --build "$build/cmake" --parallel "${S2DTW_BUILD_JOBS:-2}"
for source in s2dtw/*.py; do ln -sf "$root/$source" "$pkg/"; done

# libstdc++ with it: ASan intercepts __cxa_throw only if libstdc++ is loaded when it starts,
# and Python itself does not link it (a C++ exception would abort in ASan's CHECK).
preload="$(${CXX:-c++} -print-file-name=libasan.so) $(${CXX:-c++} -print-file-name=libstdc++.so)"
# detect_leaks=0: CPython and torch keep their allocations to exit, which LeakSanitizer would report.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export S2DTW_SIMD=scalar PYTHONPATH=$build/pkg
# Python puts the working directory first on sys.path: run from the build, or the
# repository's own s2dtw/ (with the normal module) would be imported.
args=()
for arg in "${@:-tests}"; do
  if [[ -e "$root/${arg%%::*}" ]]; then args+=("$root/$arg"); else args+=("$arg"); fi
done
cd "$build"
LD_PRELOAD=$preload python -c 'import s2dtw, sys; assert s2dtw.__file__.startswith(sys.argv[1]), s2dtw.__file__' \
  "$build/pkg"
LD_PRELOAD=$preload python -m pytest -p no:cacheprovider -q --rootdir="$root" -c "$root/pyproject.toml" "${args[@]}"
