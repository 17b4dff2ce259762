"""The install is reproducible: every Python package comes from requirements.lock, pinned and hashed.

A fresh machine once got the newest cryptography, whose new deprecation broke
collection of the whole suite; nothing pinned versions then.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-").replace(".", "-")


def _locked() -> dict[str, tuple[str, list[str]]]:
    text = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    pins: dict[str, tuple[str, list[str]]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        head = block.split("\\", 1)[0].strip()
        if not head or head.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", head)
        assert match, f"requirements.lock: {head!r} is not pinned with =="
        pins[_name(match.group(1))] = (match.group(2), re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return pins


def test_every_dependency_is_pinned_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = list(project["dependencies"])
    for extra in ("dev", "codecs"):
        wanted += project["optional-dependencies"][extra]
    locked = _locked()
    missing = sorted({_name(r) for r in wanted} - set(locked))
    assert not missing, f"in pyproject.toml but not in requirements.lock: {missing} (run `make lock`)"
    unhashed = sorted(name for name, (_version, hashes) in locked.items() if not hashes)
    assert not unhashed, f"locked without hashes: {unhashed}"
    assert "setuptools" in locked, "the build backend of the editable install is locked too"


def test_bootstrap_installs_only_from_the_lock() -> None:
    script = (ROOT / "scripts" / "bootstrap.sh").read_text(encoding="utf-8")
    installs = [line for line in script.splitlines() if "pip install" in line and not line.lstrip().startswith("#")]
    assert installs, "bootstrap.sh installs the Python packages"
    for line in installs:
        assert "--no-deps" in line, f"every pip install takes exact versions from the lock: {line.strip()}"
    assert any("--require-hashes" in line and "requirements.lock" in line for line in installs)
    assert "npm ci" in script, "the viewer's packages come from package-lock.json"
