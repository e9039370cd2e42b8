"""edge/ and calibration/ must run on Python 3.8 (JetPack 5); the code stays lint-clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def test_device_code_runs_on_python_3_8():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "vermin"), "--target=3.8-", "--no-tips", "--violations",
         "--eval-annotations", "edge", "calibration"],
        cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_is_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean_on_device_code():
    result = subprocess.run([sys.executable, "-m", "mypy", "--ignore-missing-imports", "edge"],
                            cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
