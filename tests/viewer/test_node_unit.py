"""The viewer's JavaScript unit tests (``viewer/test/*.test.js``), run by node's own runner.

They cover the pure rules early.js and the bundle share (``viewer/src/rules.js``:
configuration, first series, slice order, presets) and the build step that
inlines the first stage. Running them from pytest puts them in ``make test``
(and so in ``.ci/run``) without another test command or npm dependency.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

VIEWER = Path(__file__).resolve().parents[2] / "viewer"


def test_node_unit_tests_pass() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: scripts/bootstrap.sh needs it to build the viewer")
    files = sorted(str(p) for p in (VIEWER / "test").glob("*.test.js"))
    assert files, "no viewer/test/*.test.js found"
    result = subprocess.run(
        [node, "--test", *files], cwd=VIEWER, capture_output=True, text=True, timeout=120, check=False
    )
    summary = [line for line in result.stdout.splitlines() if line.startswith(("# pass", "# fail", "not ok"))]
    assert result.returncode == 0, "\n".join([*summary, result.stdout[-4000:], result.stderr[-2000:]])
    assert "# fail 0" in result.stdout, result.stdout[-2000:]
