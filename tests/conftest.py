from pathlib import Path

import pytest
import torch
from helpers import require_backend

import s2dtw


def pytest_report_header(config) -> list[str]:
    """Which s2dtw these tests run against: a source tree on sys.path can shadow the installed one."""
    info = s2dtw.backends()
    flags = ", ".join(f"{name}={value}" for name, value in info.items() if name != "default")
    return [f"s2dtw {s2dtw.__version__} from {Path(s2dtw.__file__).parent.resolve()}", f"s2dtw backends: {flags}"]


@pytest.fixture(params=["cpp", "numba", "numpy"])
def cpu_backend(request) -> str:
    require_backend(request.param)
    return request.param


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
