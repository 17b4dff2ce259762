"""Every audit action the code can write has a Vietnamese label (``audit.action.<action>`` in vi.json).

The admin's audit page (/admin/audit) shows an action by its label and offers
the labelled actions in its filter (``audit_query.known_actions``): an action
without a label shows as a raw key and cannot be filtered on. Rather than a
second hand-kept list, the actions are collected from the source: every call of
an audit writer (``audit.record``; in the gateway, the event dict handed to the
EMR's DICOM audit provider) and, through the functions that pass an action
parameter on (``deny``, ``requires``, ``endpoint``, ``record_share_access``,
``_deny`` ...), every call site of those, as far as the value goes back.
A value the scan cannot work out fails the test until it is declared below.
"""

from __future__ import annotations

import ast
import functools
import html
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from emr.access import audit, audit_query
from emr.fhir.views import FHIR_ACTIONS
from emr.i18n import catalogue
from emr.identity.reconcile import DECISIONS
from emr.imaging.dicom_audit import DICOM_ACTIONS
from emr.models.network import TRANSFER_KINDS
from tests.emr.conftest import World, login

REPO = Path(__file__).resolve().parents[2]
ROOTS = ("emr", "pacs_gateway", "filmless")

# Values the scan cannot follow, declared with where they come from: (file, expression) → the values.
# The DICOM provider writes the event's action only if it is one of DICOM_ACTIONS (else it raises).
DYNAMIC: dict[tuple[str, str], Iterable[str]] = {
    ("emr/imaging/dicom_audit.py", "action"): DICOM_ACTIONS,
    # FHIR views are made per resource kind from this table (a refusal is audited under its action).
    ("emr/fhir/views.py", "_action"): FHIR_ACTIONS.values(),
}
# Placeholders of f-string actions: (file, placeholder) → the values it takes.
PLACEHOLDERS: dict[tuple[str, str], Iterable[str]] = {
    ("emr/identity/reconcile.py", "decision"): DECISIONS,
    ("emr/network/outgoing.py", "kind"): TRANSFER_KINDS,
    ("emr/network/delivery.py", "transfer.kind"): TRANSFER_KINDS,
}


@dataclass
class _Module:
    path: str
    tree: ast.Module
    parents: dict[ast.AST, ast.AST]
    constants: dict[str, str]
    imports: dict[str, str]  # local name → dotted name it was imported as (a module or a module's attribute)

    @property
    def dotted(self) -> str:
        return self.path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


@dataclass
class _Scan:
    actions: dict[str, set[str]] = field(default_factory=dict)  # action → where it is written
    unresolved: set[str] = field(default_factory=set)
    # Functions that pass a parameter on as an action: (module, name) → {(positional index or None, parameter)}.
    writers: dict[tuple[str, str], set[tuple[int | None, str]]] = field(default_factory=dict)


def _modules() -> list[_Module]:
    out = []
    for root in ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
            constants = {
                target.id: stmt.value.value
                for stmt in tree.body
                if isinstance(stmt, ast.Assign)
                and isinstance(stmt.value, ast.Constant)
                and isinstance(stmt.value.value, str)
                for target in stmt.targets
                if isinstance(target, ast.Name)
            }
            module = _Module(str(path.relative_to(REPO)), tree, parents, constants, {})
            package = module.dotted if path.name == "__init__.py" else module.dotted.rpartition(".")[0]
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        module.imports[alias.asname or alias.name.split(".")[0]] = alias.name
                elif isinstance(node, ast.ImportFrom):
                    base = node.module or ""
                    if node.level:
                        parts = package.split(".")
                        up = parts[: len(parts) - node.level + 1]
                        base = ".".join([*up, *([node.module] if node.module else [])])
                    for alias in node.names:
                        module.imports[alias.asname or alias.name] = f"{base}.{alias.name}"
            out.append(module)
    return out


def _calls(module: _Module, call: ast.Call, writer: tuple[str, str]) -> bool:
    """Does ``call`` (in ``module``) call the function ``writer`` = (module dotted name, function name)?

    By name, as far as imports tell: the same module, the name imported from that module (or from a
    package above it that re-exports it), or an attribute of that module imported under an alias.
    """
    home, name = writer
    func = call.func
    if isinstance(func, ast.Name):
        if func.id != name:
            return False
        if module.dotted == home:
            return True
        origin = module.imports.get(name, "")
        return origin == f"{home}.{name}" or home.startswith(origin.rpartition(".")[0] + ".")
    if not isinstance(func, ast.Attribute) or func.attr != name:
        return False
    owner = func.value
    if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
        return module.dotted == home
    if isinstance(owner, ast.Name):
        return module.imports.get(owner.id, "") == home
    return False


def _argument(call: ast.Call, index: int | None, name: str) -> ast.expr | None:
    if index is not None and index < len(call.args) and not any(isinstance(a, ast.Starred) for a in call.args):
        return call.args[index]
    return next((k.value for k in call.keywords if k.arg == name), None)


def _parameter_of(module: _Module, node: ast.AST, name: str) -> tuple[str, int | None, str] | None:
    """The nearest enclosing function having a parameter ``name``: (function, positional index, parameter)."""
    scope = module.parents.get(node)
    while scope is not None:
        if isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef):
            positional = [a.arg for a in (*scope.args.posonlyargs, *scope.args.args)]
            if name in positional:
                index = positional.index(name)
                if positional[0] in ("self", "cls"):
                    index -= 1  # called as a method: the instance is not among the call's arguments
                return scope.name, index, name
            if name in {a.arg for a in scope.args.kwonlyargs}:
                return scope.name, None, name
        scope = module.parents.get(scope)
    return None


def _resolve(scan: _Scan, module: _Module, expr: ast.expr) -> None:
    where = f"{module.path}:{expr.lineno}"
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        scan.actions.setdefault(expr.value, set()).add(where)
    elif isinstance(expr, ast.IfExp):
        _resolve(scan, module, expr.body)
        _resolve(scan, module, expr.orelse)
    elif isinstance(expr, ast.Name) and expr.id in module.constants:
        scan.actions.setdefault(module.constants[expr.id], set()).add(where)
    elif (module.path, ast.unparse(expr)) in DYNAMIC:
        for action in DYNAMIC[(module.path, ast.unparse(expr))]:
            scan.actions.setdefault(action, set()).add(where)
    elif isinstance(expr, ast.Name) and (param := _parameter_of(module, expr, expr.id)) is not None:
        scan.writers.setdefault((module.dotted, param[0]), set()).add((param[1], param[2]))
    elif isinstance(expr, ast.JoinedStr):
        texts = [""]
        for part in expr.values:
            if isinstance(part, ast.Constant):
                texts = [text + str(part.value) for text in texts]
                continue
            assert isinstance(part, ast.FormattedValue)
            values = PLACEHOLDERS.get((module.path, ast.unparse(part.value)))
            if values is None:
                scan.unresolved.add(f"{where}: {ast.unparse(expr)}")
                return
            texts = [text + value for text in texts for value in values]
        for text in texts:
            scan.actions.setdefault(text, set()).add(where)
    else:
        scan.unresolved.add(f"{where}: {ast.unparse(expr)}")


def _is_audit_record(module: _Module, call: ast.Call) -> bool:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr == "record" and isinstance(func.value, ast.Name) and func.value.id == "audit"
    return isinstance(func, ast.Name) and func.id == "record" and module.path == "emr/access/audit.py"


@functools.cache
def written_actions() -> _Scan:
    """Every action string the code in emr/, pacs_gateway/ and filmless/ can write into the audit log."""
    modules = _modules()
    scan = _Scan()
    for module in modules:
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Call) and _is_audit_record(module, node):
                action = _argument(node, 2, "action")
                assert action is not None, f"{module.path}:{node.lineno}: audit.record without an action"
                _resolve(scan, module, action)
            # The gateway's audit events ({"action": ..., ...}) go to the EMR's DICOM audit provider.
            if module.path.startswith("pacs_gateway/") and isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if isinstance(key, ast.Constant) and key.value == "action":
                        _resolve(scan, module, value)
    done: set[tuple[tuple[str, str], int | None, str]] = set()
    while True:
        todo = {(writer, index, param) for writer, params in scan.writers.items() for index, param in params} - done
        if not todo:
            break
        for writer, index, param in todo:
            done.add((writer, index, param))
            for module in modules:
                for node in ast.walk(module.tree):
                    if isinstance(node, ast.Call) and _calls(module, node, writer):
                        value = _argument(node, index, param)
                        if value is not None:
                            _resolve(scan, module, value)
    return scan


def test_the_scan_finds_the_audit_writers() -> None:
    """The scan follows actions through the helpers that pass them on (a guard on the scan itself)."""
    scan = written_actions()
    assert not scan.unresolved, (
        "audit actions the scan cannot work out; declare their values in DYNAMIC or PLACEHOLDERS:\n"
        + "\n".join(sorted(scan.unresolved))
    )
    writers = {name for _module, name in scan.writers}
    for writer in ("deny", "requires", "endpoint", "record_share_access", "_deny", "_audit", "require_author"):
        assert writer in writers, writer
    for action in ("login", "care.denied", "study.link_mismatch", "share.view", "share.revoke", "dicom.query",
                   "dicom.retrieve", "audit.anchor", "patient.read", "fhir.read", "identity.accept_national",
                   "network.study.sent", "user.lock", "user.unlock", "hl7.replay"):
        assert action in scan.actions, action


def test_every_audit_action_the_code_writes_has_a_label() -> None:
    scan = written_actions()
    missing = {a: sorted(w)[0] for a, w in scan.actions.items() if f"audit.action.{a}" not in catalogue()}
    assert not missing, "audit actions without an audit.action.* label in emr/i18n/vi.json: " + ", ".join(
        f"{a} ({w})" for a, w in sorted(missing.items())
    )
    for action in scan.actions:
        label = catalogue()[f"audit.action.{action}"]
        assert label.strip() and label != action, action


def test_no_two_actions_share_a_label() -> None:
    """The filter is a list of labels: two actions read the same would be two identical choices."""
    labels: dict[str, list[str]] = {}
    for key, label in catalogue().items():
        if key.startswith("audit.action."):
            labels.setdefault(label, []).append(key.removeprefix("audit.action."))
    assert {label: actions for label, actions in labels.items() if len(actions) > 1} == {}


def test_the_action_filter_offers_every_written_action() -> None:
    """The filter's choices are the labelled actions: every action written can be chosen, shown by its label."""
    offered = audit_query.known_actions()
    parsed_limit = len(audit_query.parse_filter({"action": "x" * 200}).action)
    for action in written_actions().actions:
        assert action in offered, action
        assert audit_query.action_label(action) == catalogue()[f"audit.action.{action}"]
        assert len(action) <= parsed_limit, f"{action} is longer than the filter keeps"
        assert audit_query.parse_filter({"action": action}).action == action


def test_the_audit_page_names_the_actions_it_was_missing(client: FlaskClient, session: Session, world: World) -> None:
    """study.link_mismatch and care.denied showed as raw keys and could not be chosen in the filter."""
    clerk, doctor = world.actor("records_clerk"), world.actor("physician")
    audit.record(session, clerk, "study.link_mismatch", object_type="study", object_id="1.2.3")
    audit.record(session, doctor, "care.denied", outcome="denied", object_type="patient", object_id=1)
    session.commit()
    login(client, "admin1")
    page = html.unescape(client.get("/admin/audit").get_data(as_text=True))
    for action in ("study.link_mismatch", "care.denied"):
        label = catalogue()[f"audit.action.{action}"]
        assert f'<td><span title="{action}">{label}</span></td>' in page, action
        assert f'<option value="{action}" >{label}</option>' in page, action
    filtered = html.unescape(client.get("/admin/audit?action=care.denied").get_data(as_text=True))
    assert f'<option value="care.denied" selected>{catalogue()["audit.action.care.denied"]}</option>' in filtered
    assert 'title="care.denied"' in filtered and 'title="study.link_mismatch"' not in filtered
