"""``python -m s2dtw``: its command line."""

import subprocess
import sys


def test_help_does_not_run_the_demo():
    out = subprocess.run([sys.executable, "-m", "s2dtw", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage: python -m s2dtw" in out.stdout and "demo:" not in out.stdout


def test_bad_option_is_an_error():
    out = subprocess.run([sys.executable, "-m", "s2dtw", "--repeats", "0"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "--repeats" in out.stderr
