"""What an installation tells its user: the stale-build warning, OpenMP and numba availability, the test header."""

import importlib.util
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import pytest_report_header
from helpers import require_backend

import s2dtw
from s2dtw import _dispatch
from s2dtw._source_tree import stale_extension, warn_if_stale


def _tree(tmp_path, module_mtime, source_mtime):
    package, csrc = tmp_path / "s2dtw", tmp_path / "csrc" / "cpu"
    package.mkdir()
    csrc.mkdir(parents=True)
    module, source = package / "_cpu.cpython-311-x86_64-linux-gnu.so", csrc / "kernel.cpp"
    module.write_bytes(b"")
    source.write_text("// kernel")
    os.utime(module, (module_mtime, module_mtime))
    os.utime(source, (source_mtime, source_mtime))
    return package, module, source


def test_an_extension_older_than_its_sources_warns(tmp_path):
    package, module, source = _tree(tmp_path, module_mtime=1000, source_mtime=2000)
    assert stale_extension(package) == (module, source)
    with pytest.warns(RuntimeWarning, match=r"kernel.cpp is newer than the compiled _cpu.*pip install -e \."):
        warn_if_stale(package)


def test_a_fresh_extension_or_an_installed_wheel_does_not_warn(tmp_path):
    package, module, source = _tree(tmp_path, module_mtime=2000, source_mtime=1000)
    assert stale_extension(package) is None
    (tmp_path / "wheel").mkdir()
    module.rename(tmp_path / "wheel" / module.name)  # a wheel's package dir has no csrc/ beside it
    assert stale_extension(tmp_path / "wheel") is None


class _NoOpenMP:
    """The real C++ module, reporting a build without OpenMP."""

    openmp = False

    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        return getattr(self._module, name)


def test_threads_without_openmp_warn_once(monkeypatch):
    require_backend("cpp")
    real = _dispatch._load("cpp")
    monkeypatch.setattr(_dispatch, "_load", lambda name: _NoOpenMP(real) if name == "cpp" else None)
    _dispatch._warn_single_threaded.cache_clear()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cost = torch.rand(2, 5, 6, dtype=torch.float64)
        with pytest.warns(RuntimeWarning, match="single-threaded"):
            s2dtw.soft_dtw(cost=cost, backend="cpp")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            s2dtw.soft_dtw(cost=cost, backend="cpp")
        assert not s2dtw.backends()["openmp"]
    finally:
        torch.set_num_threads(threads)
        _dispatch._warn_single_threaded.cache_clear()


def test_missing_numba_is_reported_and_named_in_the_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` now fails, as it does without the extra
    monkeypatch.delitem(sys.modules, "s2dtw._numba", raising=False)
    real_find_spec = _dispatch.importlib.util.find_spec
    monkeypatch.setattr(_dispatch.importlib.util, "find_spec",
                        lambda name, *a: None if name == "numba" else real_find_spec(name, *a))
    _dispatch._load.cache_clear()
    try:
        assert s2dtw.backends()["numba"] is False
        with pytest.raises(RuntimeError, match=r"backend='numba' is not available.*pip install \"s2dtw\[numba\]\""):
            s2dtw.s2dtw(cost=torch.rand(1, 3, 4), backend="numba")
    finally:
        _dispatch._load.cache_clear()


def test_the_default_path_never_imports_numba():
    require_backend("cpp")
    code = ("import sys, torch, s2dtw; s2dtw.backends(); "
            "s2dtw.s2dtw(torch.randn(2, 4, 3, requires_grad=True), torch.randn(2, 5, 3)).sum().backward(); "
            "print('numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_missing_cpp_extension_fails_the_tests_unless_allowed(monkeypatch):
    info = dict(s2dtw.backends(), cpp=False, numba=False)
    monkeypatch.setattr(s2dtw, "backends", lambda: info)
    monkeypatch.delenv("S2DTW_ALLOW_NO_CPP", raising=False)
    with pytest.raises(pytest.fail.Exception, match="s2dtw._cpu cannot be imported"):
        require_backend("cpp")
    with pytest.raises(pytest.skip.Exception, match=r"s2dtw\[numba\]"):
        require_backend("numba")
    monkeypatch.setenv("S2DTW_ALLOW_NO_CPP", "1")
    with pytest.raises(pytest.skip.Exception, match="S2DTW_ALLOW_NO_CPP=1"):
        require_backend("cpp")


def test_the_report_header_names_the_s2dtw_under_test():
    header = pytest_report_header(None)
    assert header[0].startswith(f"s2dtw {s2dtw.__version__} from ")
    # the package folder (tests/sanitize.sh links the .py files into a folder of its own)
    assert os.path.realpath(os.path.dirname(s2dtw.__file__)) in header[0]
    assert f"cpp={s2dtw.backends()['cpp']}" in header[1] and "openmp=" in header[1]


@pytest.fixture(scope="module")
def setup_py():
    """The build script's helpers (setup.py runs setup() only as __main__, which is how setuptools runs it)."""
    path = Path(__file__).resolve().parents[1] / "setup.py"
    if not path.exists():
        pytest.skip("needs the source tree's setup.py (these tests run from a copy of tests/)")
    spec = importlib.util.spec_from_file_location("s2dtw_setup", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_cmake_cache_is_reused_only_with_the_same_sources_generator_and_compiler(setup_py, tmp_path, monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    (tmp_path / "CMakeCache.txt").write_text(
        "// a comment\n# another\n"
        f"CMAKE_HOME_DIRECTORY:INTERNAL={setup_py.ROOT / 'csrc'}\n"
        "CMAKE_GENERATOR:INTERNAL=Ninja\n"
        f"CMAKE_CXX_COMPILER:FILEPATH={sys.executable}\n"
    )
    cache = setup_py._read_cache(tmp_path)
    assert cache["CMAKE_GENERATOR"] == "Ninja" and setup_py._read_cache(tmp_path / "none") == {}
    assert setup_py._stale_reason({}, "Ninja", None) is None
    assert setup_py._stale_reason(cache, "Ninja", None) is None
    assert "generator Ninja -> Unix Makefiles" in setup_py._stale_reason(cache, "Unix Makefiles", None)
    assert "sources in /elsewhere" in setup_py._stale_reason(dict(cache, CMAKE_HOME_DIRECTORY="/elsewhere"), "Ninja",
                                                             None)
    gone = dict(cache, CMAKE_CXX_COMPILER=str(tmp_path / "deleted-build-env" / "c++"))
    assert "no longer exists" in setup_py._stale_reason(gone, "Ninja", None)
    monkeypatch.setenv("CXX", "sh")  # a different compiler asked for than the one recorded
    assert "CMAKE_CXX_COMPILER" in setup_py._stale_reason(cache, "Ninja", None)
