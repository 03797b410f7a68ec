"""Builds s2dtw's extension modules by driving CMake over csrc/.

Switches (environment variables):
  S2DTW_CUDA=1/0        force the CUDA module on/off (default: on when nvcc is found)
  S2DTW_CUDA_ARCHS=...  CMAKE_CUDA_ARCHITECTURES (default "80-real;90-real;90-virtual")
  S2DTW_NATIVE=1        compile the CPU kernels with -march=native (local builds only)
  S2DTW_BUILD_JOBS=N    parallel compile jobs
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


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


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    """One CMake build of csrc/ writes every module; setuptools then installs each."""

    def build_extension(self, ext: CMakeExtension) -> None:
        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        if getattr(self, "_cmake_built_into", None) == out_dir:
            return
        self._cmake_built_into = out_dir
        build_dir = Path(self.build_temp).resolve() / "cmake"
        build_dir.mkdir(parents=True, exist_ok=True)
        nvcc = _find_nvcc()
        use_cuda = _use_cuda()

        args = [
            f"-DS2DTW_OUTPUT_DIR={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DS2DTW_CUDA={'ON' if use_cuda else 'OFF'}",
            f"-DS2DTW_NATIVE={'ON' if _flag('S2DTW_NATIVE') else 'OFF'}",
            "-DCMAKE_BUILD_TYPE=Release",
        ]
        try:
            import pybind11

            args.append(f"-Dpybind11_DIR={pybind11.get_cmake_dir()}")
        except ImportError as err:
            raise RuntimeError("building s2dtw needs pybind11 (pip install pybind11)") from err
        if use_cuda:
            args.append(f"-DCMAKE_CUDA_COMPILER={nvcc}")
            if os.environ.get("S2DTW_CUDA_ARCHS"):
                args.append(f"-DCMAKE_CUDA_ARCHITECTURES={os.environ['S2DTW_CUDA_ARCHS']}")
        if shutil.which("ninja"):
            args.append("-GNinja")

        print(f"s2dtw: building the C++ extension (CUDA {'on' if use_cuda else 'off'})", flush=True)
        subprocess.run(["cmake", "-S", str(ROOT / "csrc"), "-B", str(build_dir), *args], check=True)
        jobs = os.environ.get("S2DTW_BUILD_JOBS", str(os.cpu_count() or 2))
        subprocess.run(["cmake", "--build", str(build_dir), "--parallel", jobs], check=True)


setup(
    ext_modules=[CMakeExtension(name) for name in ["s2dtw._cpu"] + (["s2dtw._cuda"] if _use_cuda() else [])],
    cmdclass={"build_ext": CMakeBuild},
)
