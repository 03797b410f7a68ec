"""benchmarks/count_instructions.py's reading of a callgrind profile, on a small hand-written one."""

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).parents[1] / "benchmarks" / "count_instructions.py"
_SPEC = importlib.util.spec_from_file_location("count_instructions", _PATH)
count_instructions = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(count_instructions)

LIBRARY = Path("/build/s2dtw/_cpu.so")

# Python calls the dispatcher (twice from two objects) and the module init, then a Python function (no cob=: the
# caller's object, however large); the dispatcher calls libm, a function
# of its own object (not an entry) and back into Python (part of its inclusive cost, not an entry); compressed
# names, relative positions and a second event column as callgrind writes them.
PROFILE = """# callgrind format
version: 1
creator: callgrind-3.19.0
positions: line
events: Ir Dr
summary: 1000 10

ob=(1) /usr/bin/python3.11
fl=(1) ???
fn=(1) _PyEval_EvalFrameDefault
0 100 1
cob=(2) /build/s2dtw/_cpu.so
cfi=(2) ???
cfn=(2) pybind11::cpp_function::dispatcher(_object*, _object*, _object*)
calls=2 0
0 500 3
cob=(2)
cfn=(3) PyInit__cpu
calls=1 0
+1 40
cfn=(4) PyObject_GetAttr
calls=1 0
* 1000

ob=(4) /usr/lib/libpython3.11.so
fl=(1)
fn=(5) method_vectorcall
cob=(2)
cfn=(2)
calls=1 0
0 100

ob=(2)
fl=(2)
fn=(2)
0 300
cob=(3) /lib/x86_64-linux-gnu/libm.so.6
cfn=(6) exp
calls=10 0
+2 150
cfn=(7) s2dtw::cpu::run<double>(s2dtw::Problem const&, double const*, double*, double*, int)
calls=1 0
* 50
cob=(1)
cfn=(4)
calls=1 0
-1 5

ob=(3)
fn=(6)
0 150
"""


def test_hottest_entry_sums_the_calls_into_the_library():
    assert count_instructions.hottest_entry(PROFILE, LIBRARY) == 600


def test_hottest_entry_ignores_other_libraries_and_raises_without_a_call():
    assert count_instructions.hottest_entry(PROFILE, Path("/lib/x86_64-linux-gnu/libm.so.6")) == 150
    with pytest.raises(RuntimeError, match="no call into"):
        count_instructions.hottest_entry(PROFILE, Path("/elsewhere/_cpu.so"))
