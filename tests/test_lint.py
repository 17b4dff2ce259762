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


# -- import direction (issue 11) ---------------------------------------------------------------------------------
# emr's layers, lowest first: a module may import its own layer and the layers below, never above.
# Longest matching prefix wins (emr.access spans two layers: the audit chain and the permission table below
# the features, the request-bound decisions — login, per-study access — above them).
EMR_LAYERS: dict[str, int] = {
    "emr.core": 0, "emr.i18n": 0,
    "emr.models": 1, "emr.db": 1, "emr.schemas": 1, "emr.signing": 1,  # the signing library: no database
    "emr.signing.service": 3,
    "emr.access": 2, "emr.outbox": 2,
    "emr.patients": 3, "emr.documents": 3, "emr.imaging": 3, "emr.reading": 3, "emr.sharing": 3,
    "emr.billing": 3, "emr.exports": 3, "emr.ehr": 3, "emr.hl7": 3, "emr.ops": 3, "emr.identity": 3,
    "emr.catalogues": 3, "emr.network": 3,
    "emr.ops.instruments": 1,  # counters and histograms any layer may observe (no database)
    "emr.access.auth": 4, "emr.access.studies": 4,
    "emr.web": 5, "emr.api": 5, "emr.fhir": 5,
    "emr": 6, "emr.app": 6, "emr.server": 6, "emr.demo": 6, "emr.migrations": 6,
}
LAYER_NAMES = ["core", "data & libraries", "access", "features", "request access", "web", "app"]
PACKAGES = ("emr", "storage", "pacs_gateway", "viewer", "filmless")
# Which top-level packages each may import at all (always only their public surface: `from storage import X`).
MAY_IMPORT = {
    "storage": set(), "viewer": {"storage"}, "pacs_gateway": {"storage"}, "emr": {"storage"},
    "filmless": {"emr", "storage", "pacs_gateway", "viewer"},
}


def _layer(module: str) -> int | None:
    best = None
    for prefix, layer in EMR_LAYERS.items():
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, layer)
    return best[1] if best else None


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, names) for every import, at module level or inside functions."""
    import ast

    is_pkg = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
            # `from emr import audit` names a module: judge the module, not the package
            found.append((node.lineno, target, names))
    return found


def import_violations(root: Path) -> list[str]:
    problems = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "migrations" in path.parts and package == "emr" and path.name != "env.py":
                continue
            module = _module_name(path, root)
            for line, target, names in _imports(path, module):
                top = target.split(".")[0]
                where = f"{path.relative_to(root)}:{line}"
                if top in PACKAGES and top != package:
                    if top not in MAY_IMPORT[package]:
                        problems.append(f"{where}: {package} must not import {top} ({target})")
                    elif package != "filmless" and target != top:
                        problems.append(f"{where}: {target} is {top}'s internals; use `from {top} import ...`")
                if package != "emr" or top != "emr":
                    continue
                own = _layer(module)
                targets = [target]
                if names and (root / target.replace(".", "/")).is_dir():
                    targets = [f"{target}.{n}" if (root / target.replace(".", "/") / n).exists()
                               or (root / target.replace(".", "/") / f"{n}.py").exists() else target for n in names]
                for t in targets:
                    theirs = _layer(t)
                    if own is not None and theirs is not None and theirs > own and module != "emr":
                        problems.append(f"{where}: {module} ({LAYER_NAMES[own]}) imports {t} "
                                        f"({LAYER_NAMES[theirs]}), a higher layer")
                if module.split(".")[:2] != target.split(".")[:2]:
                    private = [n for n in names if n.startswith("_") and n != "__version__"]
                    if private:
                        problems.append(f"{where}: {module} imports private {private} from {target}")
    return problems


def test_imports_go_one_way() -> None:
    """Lower layers never import higher ones (function-level imports included); packages meet at public APIs."""
    problems = import_violations(ROOT)
    assert not problems, "\n".join(problems)


def test_import_direction_check_catches_a_violation(tmp_path: Path) -> None:
    """The check itself: a core module importing Flask-side code, viewer internals imported by emr."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "emr" / "core").mkdir()
    (tmp_path / "emr" / "core" / "__init__.py").write_text("")
    (tmp_path / "emr" / "web").mkdir()
    (tmp_path / "emr" / "web" / "__init__.py").write_text("")
    (tmp_path / "emr" / "web" / "views.py").write_text("")
    (tmp_path / "emr" / "core" / "rules.py").write_text(
        "def f():\n    from ..web import views\n    from viewer.proxy import x\n    from emr.signing.verify import _y\n"
    )
    problems = import_violations(tmp_path)
    assert any("emr.core.rules (core) imports emr.web.views (web)" in p for p in problems), problems
    assert any("emr must not import viewer" in p for p in problems), problems
    assert any("imports private ['_y']" in p for p in problems), problems


def test_importing_the_core_loads_no_flask() -> None:
    """`import emr.core.normalize` (and the rest of emr.core) stays light: no Flask, no SQLAlchemy, no numpy."""
    code = ("import sys, emr.core.normalize, emr.core.clock, emr.core.dicom_match, emr.core.identifiers; "
            "print(sorted(m for m in ('flask', 'sqlalchemy', 'numpy', 'werkzeug') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def test_the_emr_runs_without_numpy() -> None:
    """Only the demo needs numpy (the [codecs]/[dev] extras): the app, server and gateway providers do not."""
    code = ("import sys; sys.modules['numpy'] = None\n"
            "import emr, emr.app, emr.server, emr.imaging.worklist, emr.imaging.identity, emr.imaging.mpps\n"
            "assert callable(emr.create_app) and callable(emr.worklist_provider)\n"
            "try:\n    import emr.demo.seed\nexcept ImportError:\n    print('demo needs numpy')\n")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "demo needs numpy"
