"""What cpu_bench.py records about the machine and the software it measured."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path

import s2dtw


def machine_info(threads: int) -> dict:
    """CPU model, core counts and SIMD flags (lscpu), platform, and the thread count the benchmark uses."""
    info: dict = {"platform": platform.platform(), "python": platform.python_version(), "threads_used": threads}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        info["model"] = fields.get("Model name", "?")
        info["cpus"] = fields.get("CPU(s)", "?")
        info["cores_per_socket"] = fields.get("Core(s) per socket", "?")
        info["threads_per_core"] = fields.get("Thread(s) per core", "?")
        info["sockets"] = fields.get("Socket(s)", "?")
        flags = set(fields.get("Flags", "").split())
    except (OSError, subprocess.CalledProcessError):
        info["model"] = platform.processor() or "?"
        flags = set()
    info["avx2"] = "avx2" in flags
    info["avx512f"] = "avx512f" in flags
    info["fma"] = "fma" in flags
    return info


def versions() -> dict[str, str]:
    """Versions of Python and every measured library, s2dtw's backends and the build measured."""
    out = {"python": platform.python_version()}
    for dist in ("s2dtw", "torch", "numpy", "numba", "scipy", "pysdtw", "tslearn", "scikit-learn",
                 "dtw-loss-functions", "ddtw"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    out["s2dtw backends"] = json.dumps({k: v for k, v in s2dtw.backends().items() if k != "default"})
    out["s2dtw build"] = s2dtw_build()
    return out


def s2dtw_build() -> str:
    """Which s2dtw was measured: git commit of its checkout (+ dirty flag) and the C++ extension's file time."""
    root = Path(s2dtw.__file__).resolve().parent
    parts = []
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", str(root.parent / "csrc"),
                                str(root)], capture_output=True, text=True, check=True).stdout.strip()
        parts.append(f"git {commit}{' + uncommitted changes in csrc/ or s2dtw/' if dirty else ''}")
    except (OSError, subprocess.CalledProcessError):
        parts.append("not a git checkout")
    for ext in sorted(root.glob("_cpu*.so")):
        stamp = datetime.datetime.fromtimestamp(ext.stat().st_mtime).strftime("%Y-%m-%d %H:%M:%S")
        parts.append(f"{ext.name} built {stamp}")
    return "; ".join(parts)


def simd_level() -> str:
    """The instruction set s2dtw's C++ kernels run at in this process (after $S2DTW_SIMD)."""
    return str(s2dtw.backends()["simd"])


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"
