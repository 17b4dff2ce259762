"""The code base stays ruff-clean (style and likely bugs), checked with the tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.skipif(shutil.which("ruff") is None and not (Path(sys.executable).parent / "ruff").exists(),
                    reason="ruff is not installed")
def test_ruff_is_clean() -> None:
    ruff = Path(sys.executable).parent / "ruff"
    result = subprocess.run([str(ruff) if ruff.exists() else "ruff", "check", "--no-cache", "."], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:]


def test_mypy_is_clean() -> None:
    """Public functions are typed (pyproject's mypy settings), and stay consistent."""
    mypy = Path(sys.executable).parent / "mypy"  # a dev dependency, always in the venv
    result = subprocess.run(
        [str(mypy), "--no-incremental", "--cache-dir", "/dev/null", "storage", "pacs_gateway", "filmless", "viewer",
         "emr"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:]
