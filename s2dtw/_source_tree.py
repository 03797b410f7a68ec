"""Warn when an editable (source-tree) install imports an extension older than its C++ sources.

Only a package that sits beside csrc/ (an editable install or a source tree on sys.path) is checked,
by file modification times: a dozen stat calls, nothing for an installed wheel. setup.py gives each
module it installs the time of that install, so a source edited since the last install is what warns.
"""

from __future__ import annotations

import warnings
from pathlib import Path

_SOURCE_SUFFIXES = (".cpp", ".h", ".cu", ".cuh", ".txt")


def stale_extension(package_dir: Path) -> tuple[Path, Path] | None:
    """(oldest compiled module, newest C++ source) when a source is newer than a module, else None."""
    csrc = package_dir.parent / "csrc"
    modules = [*package_dir.glob("_*.so"), *package_dir.glob("_*.pyd")]
    if not modules or not csrc.is_dir():
        return None
    sources = [path for path in csrc.rglob("*") if path.suffix in _SOURCE_SUFFIXES]
    if not sources:
        return None
    oldest = min(modules, key=lambda path: path.stat().st_mtime)
    newest = max(sources, key=lambda path: path.stat().st_mtime)
    return (oldest, newest) if newest.stat().st_mtime > oldest.stat().st_mtime else None


def warn_if_stale(package_dir: Path) -> None:
    found = stale_extension(package_dir)
    if found is not None:
        module, source = found
        warnings.warn(
            f"s2dtw: {source} is newer than the compiled {module.name}, so this import runs the old build; "
            "rerun `pip install -e .` (it recompiles only the changed files)",
            RuntimeWarning,
            stacklevel=3,
        )
