import pytest
import torch

import s2dtw

CPU_BACKENDS = [name for name in ("cpp", "numba", "numpy") if s2dtw.backends()[name]]


@pytest.fixture(params=CPU_BACKENDS)
def cpu_backend(request) -> str:
    return request.param


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
