"""What an audit row is about (its object type) is shown by its Vietnamese name (``audit.object.<type>``).

The audit page's «Đối tượng» column showed the stored keys (``share_link 7``, ``identity_check``,
``Patient``). The object types are collected from the source, as the actions are in test_audit_actions:
every ``object_type=`` argument and ``"object_type":`` dict entry in emr/, pacs_gateway/ and filmless/; a
value that is not a literal must be declared below with where it comes from.
"""

from __future__ import annotations

import ast
import html
from collections.abc import Iterable
from pathlib import Path

from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from emr.access import audit, audit_query
from emr.fhir.views import FHIR_ACTIONS
from emr.i18n import catalogue
from tests.emr.conftest import World, login

REPO = Path(__file__).resolve().parents[2]
ROOTS = ("emr", "pacs_gateway", "filmless")

# Non-literal object types: (file, expression) → the values it takes.
DYNAMIC: dict[tuple[str, str], Iterable[str]] = {
    # audit.record itself, writing its parameter into the row: its callers are what is scanned.
    ("emr/access/audit.py", "object_type"): (),
    # The FHIR views audit a read or a refusal under the resource type they serve.
    ("emr/fhir/views.py", "kind"): FHIR_ACTIONS.keys(),
    # _refuse(session, actor, action, object_type, object_id): its callers pass "study" and "share_link".
    ("emr/sharing/service.py", "object_type"): ("study", "share_link"),
}


def written_object_types() -> tuple[dict[str, set[str]], set[str]]:
    """(object type → where it is written, expressions the scan cannot work out)."""
    found: dict[str, set[str]] = {}
    unresolved: set[str] = set()
    for root in ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            module = str(path.relative_to(REPO))
            tree = ast.parse(path.read_text(encoding="utf-8"))
            values: list[ast.expr] = []
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    values += [k.value for k in node.keywords if k.arg == "object_type"]
                elif isinstance(node, ast.Dict):
                    values += [v for k, v in zip(node.keys, node.values, strict=True)
                               if isinstance(k, ast.Constant) and k.value == "object_type"]
            for value in values:
                where = f"{module}:{value.lineno}"
                if isinstance(value, ast.Constant) and value.value is None:
                    continue
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    found.setdefault(value.value, set()).add(where)
                elif (module, ast.unparse(value)) in DYNAMIC:
                    for kind in DYNAMIC[(module, ast.unparse(value))]:
                        found.setdefault(kind, set()).add(where)
                else:
                    unresolved.add(f"{where}: {ast.unparse(value)}")
    return found, unresolved


def test_every_object_type_written_has_a_vietnamese_name() -> None:
    found, unresolved = written_object_types()
    assert not unresolved, "object types the scan cannot work out; declare them in DYNAMIC:\n" + "\n".join(
        sorted(unresolved))
    for kind in ("patient", "document", "share_link", "identity_check", "break_glass", "Patient", "AuditEvent"):
        assert kind in found, kind  # a guard on the scan itself
    missing = {kind: sorted(where)[0] for kind, where in found.items() if f"audit.object.{kind}" not in catalogue()}
    assert not missing, "object types without an audit.object.* name in emr/i18n/vi.json: " + ", ".join(
        f"{kind} ({where})" for kind, where in sorted(missing.items()))
    for kind in found:
        assert audit_query.object_label(kind) == catalogue()[f"audit.object.{kind}"]


def test_the_audit_page_names_what_each_row_is_about(client: FlaskClient, session: Session, world: World) -> None:
    doctor = world.actor("physician")
    audit.record(session, doctor, "share.revoke", object_type="share_link", object_id=7)
    audit.record(session, doctor, "fhir.read", object_type="Patient", object_id=12)
    audit.record(session, doctor, "patient.view", object_type="thing_unknown", object_id=3)
    audit.record(session, doctor, "login")
    session.commit()
    login(client, "admin1")
    page = html.unescape(client.get("/admin/audit").get_data(as_text=True))
    cells = [cell.split("</td>")[0] for cell in page.split('<td class="object">')[1:]]
    share, fhir = (catalogue()[f"audit.object.{k}"] for k in ("share_link", "Patient"))
    assert f'<span title="share_link">{share}</span> 7' in cells
    assert f'<span title="Patient">{fhir}</span> 12' in cells
    assert '<span title="thing_unknown">thing_unknown</span> 3' in cells  # a type nobody named: its code
    assert " " in cells  # the login row is about nothing
    assert "share_link 7" not in page and "Patient 12" not in page
