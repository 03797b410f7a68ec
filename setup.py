"""Builds s2dtw's extension modules by driving CMake over csrc/ (see docs/building.md).

Switches (environment variables):
  S2DTW_CUDA=1/0        force the CUDA module on/off (default: on when nvcc is found)
  S2DTW_CUDA_ARCHS=...  CMAKE_CUDA_ARCHITECTURES (default: sm_75 to sm_90 and PTX, see csrc/CMakeLists.txt)
  S2DTW_NATIVE=1        compile the CPU kernels with -march=native (local builds only)
  S2DTW_OPENMP=0        build without OpenMP (single-threaded kernels), e.g. to test that path
  S2DTW_BUILD_JOBS=N    parallel compile jobs

Each interpreter and configuration has its own CMake build directory, build/cmake/<tag>, kept between
installs so that a reinstall recompiles only what changed (setuptools hands editable builds a fresh temporary
build_temp, and pip's isolated build environments live in temporary folders, so neither is used for it).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import setuptools
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
MIN_SETUPTOOLS = (77, 0)  # SPDX `license = "MIT"` and `license-files` (PEP 639)


def _flag(name: str) -> bool | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    return value.lower() not in ("0", "false", "off", "no")


def _find_nvcc() -> str | None:
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if cuda_home and (Path(cuda_home) / "bin" / "nvcc").exists():
        return str(Path(cuda_home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def _use_cuda() -> bool:
    want_cuda = _flag("S2DTW_CUDA")
    if want_cuda and _find_nvcc() is None:
        raise RuntimeError("S2DTW_CUDA=1 but no nvcc was found (set CUDA_HOME or PATH)")
    return _find_nvcc() is not None if want_cuda is None else want_cuda


def _need(tool: str, fix: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise RuntimeError(f"building s2dtw needs {tool}, which is not on PATH: {fix}")
    return str(Path(path).resolve())


def _generator() -> tuple[str, str]:
    """(CMake generator, its build program): ninja when present, else make."""
    ninja = shutil.which("ninja")
    if ninja:
        return "Ninja", str(Path(ninja).resolve())
    print("s2dtw: ninja not found (pip install ninja); building with make", flush=True)
    return "Unix Makefiles", _need("make", "pip install ninja")


def _stable_pybind11(build_root: Path) -> str:
    """pybind11's CMake dir, from a copy under build/ whose path does not change between builds.

    pip's isolated build environment is a new temporary folder each time; its pybind11 include path would
    change every compile command, and ninja would recompile everything on every install.
    """
    try:
        import pybind11
    except ImportError as err:
        raise RuntimeError("building s2dtw needs pybind11: pip install pybind11") from err
    package = Path(pybind11.__file__).resolve().parent
    copy = build_root / f"pybind11-{pybind11.__version__}"
    if not copy.exists():
        partial = build_root / f"pybind11-{pybind11.__version__}.partial{os.getpid()}"
        shutil.copytree(package, partial, ignore=shutil.ignore_patterns("__pycache__"))
        partial.rename(copy)
    return str(copy / Path(pybind11.get_cmake_dir()).resolve().relative_to(package))


def _read_cache(build_dir: Path) -> dict[str, str]:
    cache = build_dir / "CMakeCache.txt"
    if not cache.exists():
        return {}
    entries = {}
    for line in cache.read_text(errors="replace").splitlines():
        if "=" in line and ":" in line.split("=", 1)[0] and not line.startswith(("#", "//")):
            key, value = line.split("=", 1)
            entries[key.split(":", 1)[0]] = value
    return entries


def _stale_reason(cache: dict[str, str], generator: str, nvcc: str | None) -> str | None:
    """Why an existing CMake cache cannot be reused (CMake refuses a new source tree, generator or compiler)."""
    if not cache:
        return None
    if Path(cache.get("CMAKE_HOME_DIRECTORY", "")).resolve() != ROOT / "csrc":
        return f"made for the sources in {cache.get('CMAKE_HOME_DIRECTORY')}"
    if cache.get("CMAKE_GENERATOR") != generator:
        return f"generator {cache.get('CMAKE_GENERATOR')} -> {generator}"
    compilers = {"CMAKE_CXX_COMPILER": os.environ.get("CXX"), "CMAKE_CUDA_COMPILER": nvcc}
    for key, wanted in compilers.items():
        recorded = cache.get(key)
        if recorded and not Path(recorded).exists():
            return f"{key} {recorded} no longer exists"
        wanted_path = shutil.which(wanted) if wanted else None
        if recorded and wanted_path and Path(wanted_path).resolve() != Path(recorded).resolve():
            return f"{key} {recorded} -> {wanted_path}"
    return None


def _configuration(use_cuda: bool) -> dict[str, str]:
    """Everything that selects a build directory: the interpreter and the switches.

    The base interpreter, not sys.executable: `python -m build` runs each build in a new temporary venv.
    """
    return {
        "python": f"{sys.base_prefix} {sysconfig.get_config_var('EXT_SUFFIX')}",
        "cuda": "ON" if use_cuda else "OFF",
        "cuda_archs": os.environ.get("S2DTW_CUDA_ARCHS", "") if use_cuda else "",
        "native": "ON" if _flag("S2DTW_NATIVE") else "OFF",
        "openmp": "OFF" if _flag("S2DTW_OPENMP") is False else "ON",
    }


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    """One CMake build of csrc/ writes every module; each is then copied to where setuptools wants it."""

    def build_extension(self, ext: CMakeExtension) -> None:
        if getattr(self, "_cmake_modules", None) is None:
            self._cmake_modules = self._cmake_build()
        target = Path(self.get_ext_fullpath(ext.name))
        built = self._cmake_modules / target.name
        target.parent.mkdir(parents=True, exist_ok=True)
        # A fresh modification time: s2dtw/_source_tree.py warns when a source is newer than the last install.
        shutil.copy(built, target)

    def _cmake_build(self) -> Path:
        cmake = _need("cmake", "pip install cmake")
        generator, make_program = _generator()
        nvcc = _find_nvcc()
        use_cuda = _use_cuda()
        config = _configuration(use_cuda)
        build_root = ROOT / "build" / "cmake"
        build_root.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(repr(sorted(config.items())).encode()).hexdigest()[:10]
        build_dir = build_root / f"{sys.implementation.cache_tag}-{'cuda' if use_cuda else 'cpu'}-{digest}"
        reason = _stale_reason(_read_cache(build_dir), generator, nvcc)
        if reason:
            print(f"s2dtw: starting {build_dir} afresh ({reason})", flush=True)
            shutil.rmtree(build_dir)
        modules = build_dir / "modules"
        args = [
            f"-G{generator}",
            f"-DCMAKE_MAKE_PROGRAM={make_program}",
            f"-DS2DTW_OUTPUT_DIR={modules}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={_stable_pybind11(build_root)}",
            f"-DS2DTW_CUDA={config['cuda']}",
            f"-DS2DTW_NATIVE={config['native']}",
            "-DCMAKE_BUILD_TYPE=Release",
        ]
        if config["openmp"] == "OFF":
            args.append("-DCMAKE_DISABLE_FIND_PACKAGE_OpenMP=ON")
        if use_cuda:
            args.append(f"-DCMAKE_CUDA_COMPILER={nvcc}")
            if config["cuda_archs"]:
                args.append(f"-DCMAKE_CUDA_ARCHITECTURES={config['cuda_archs']}")

        print(f"s2dtw: building the C++ extension in {build_dir} (CUDA {config['cuda'].lower()})", flush=True)
        subprocess.run([cmake, "-S", str(ROOT / "csrc"), "-B", str(build_dir), *args], check=True)
        if _read_cache(build_dir).get("S2DTW_HAVE_OPENMP") != "ON":
            print("s2dtw: WARNING: no OpenMP found; the CPU kernels will run single-threaded "
                  "(install your compiler's OpenMP, e.g. libomp-dev for clang)", file=sys.stderr, flush=True)
        jobs = os.environ.get("S2DTW_BUILD_JOBS", str(os.cpu_count() or 2))
        subprocess.run([cmake, "--build", str(build_dir), "--parallel", jobs], check=True)
        return modules


if __name__ == "__main__":  # as setuptools runs it; tests/test_packaging.py imports the helpers above
    if tuple(int(part) for part in setuptools.__version__.split(".")[:2]) < MIN_SETUPTOOLS:
        sys.exit(f"building s2dtw needs setuptools>=77 (found {setuptools.__version__}): "
                 "pip install -U 'setuptools>=77'")
    setup(
        ext_modules=[CMakeExtension(name) for name in ["s2dtw._cpu"] + (["s2dtw._cuda"] if _use_cuda() else [])],
        cmdclass={"build_ext": CMakeBuild},
    )
