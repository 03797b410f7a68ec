"""Builds the host emulation of the CUDA module (a test artefact, never part of the wheel).

csrc/cuda/s2dtw_cuda.cu and csrc/bindings/cuda_module.cpp, unchanged, are compiled as C++
with include/cuda_runtime.h (this folder) standing in for CUDA's: the result is the `_cuda`
module with the same functions, whose "device pointers" are host pointers. It is built once
per content of its sources and of every header under csrc/ into build/cuda_emulation/<hash>/
under the repository root.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SOURCES = [ROOT / "csrc/cuda/s2dtw_cuda.cu", ROOT / "csrc/cuda/second_order.cu", ROOT / "csrc/bindings/cuda_module.cpp"]
FLAGS = ["-std=c++20", "-O2", "-fPIC", "-pthread", "-fvisibility=hidden", "-w"]


def compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")


def _includes() -> list[str]:
    import pybind11

    return [f"-I{HERE / 'include'}", f"-I{sysconfig.get_paths()['include']}", f"-I{pybind11.get_include()}"]


def headers() -> list[Path]:
    """Every header the build may include: all of csrc/'s (any folder) and the stand-in cuda_runtime.h, found
    by name, so that a new or renamed header is in the key without a list to keep up to date."""
    found = [path for folder in (ROOT / "csrc", HERE / "include") for pattern in ("*.h", "*.hpp", "*.cuh")
             for path in folder.rglob(pattern)]
    return sorted(found)


def _key(cxx: str) -> str:
    digest = hashlib.sha256()
    for path in SOURCES + headers() + [Path(__file__)]:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    digest.update("\0".join([cxx, version, sys.version, *FLAGS]).encode())
    return digest.hexdigest()[:16]


def build() -> Path:
    """The emulated module's file, compiled now unless this content was built before."""
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (c++, g++, clang++ or $CXX) to build the CUDA emulation")
    target = ROOT / "build" / "cuda_emulation" / _key(cxx) / ("_cuda" + sysconfig.get_config_var("EXT_SUFFIX"))
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        objects = [Path(tmp) / f"{src.stem}.o" for src in SOURCES]
        jobs = [subprocess.Popen([cxx, *FLAGS, *_includes(), "-x", "c++", "-c", str(src), "-o", str(obj)],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for src, obj in zip(SOURCES, objects, strict=True)]  # the two units in parallel
        for job, src in zip(jobs, SOURCES, strict=True):
            out, _ = job.communicate()
            if job.returncode:
                raise RuntimeError(f"compiling {src.name} for the CUDA emulation failed:\n{out[-4000:]}")
        linked = Path(tmp) / target.name
        subprocess.run([cxx, "-shared", "-pthread", *map(str, objects), "-o", str(linked)], check=True)
        os.replace(linked, target)  # atomic: a concurrent build never sees half a file
    return target


def load() -> ModuleType:
    """The emulated `_cuda` module (not registered in sys.modules, so s2dtw._cuda stays what it is)."""
    path = build()
    spec = importlib.util.spec_from_file_location("_cuda", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
