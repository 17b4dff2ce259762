"""Every route × every role, from one table of expectations.

A new route without a row here fails the test, so authorisation can never be
forgotten. ``None`` = public. Roles: admin, physician, radiologist,
technician, nurse, records_clerk.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from emr.models import ROLES

from .conftest import login

CLIN = {"physician", "radiologist", "technician", "nurse", "records_clerk"}
EXPECTED: dict[tuple[str, str], set[str] | None] = {
    ("GET", "/login"): None,
    ("POST", "/login"): None,
    ("POST", "/logout"): None,
    ("GET", "/static/<path:filename>"): None,
    ("GET", "/api/openapi.json"): None,
    ("GET", "/"): set(ROLES),
    ("GET", "/patients/"): CLIN,
    ("GET", "/patients/new"): {"physician", "nurse", "records_clerk"},
    ("POST", "/patients/new"): {"physician", "nurse", "records_clerk"},
    ("GET", "/patients/<int:patient_id>"): CLIN,
    ("GET", "/patients/<int:patient_id>/encounters/new"): {"physician", "nurse", "records_clerk"},
    ("POST", "/patients/<int:patient_id>/encounters/new"): {"physician", "nurse", "records_clerk"},
    ("GET", "/orders/new/<int:patient_id>"): {"physician"},
    ("POST", "/orders/new/<int:patient_id>"): {"physician"},
    ("POST", "/orders/<int:order_id>/cancel"): {"physician"},
    ("POST", "/orders/<int:order_id>/price"): {"records_clerk"},
    ("GET", "/patients/<int:patient_id>/encounters/<int:encounter_id>/benefit-level"): {
        "physician",
        "nurse",
        "records_clerk",
    },
    ("POST", "/patients/<int:patient_id>/encounters/<int:encounter_id>/benefit-level"): {
        "physician",
        "nurse",
        "records_clerk",
    },
    ("GET", "/reconcile/"): CLIN,
    ("POST", "/reconcile/<int:study_id>"): {"records_clerk"},
    ("GET", "/admin/audit"): {"admin"},
    # The index of the administration pages: whoever may open at least one (here the catalogues, or all for the
    # admin; a head of department the break-glass review): tests/security/test_admin_index.py.
    ("GET", "/admin"): {"admin", "physician", "nurse", "records_clerk"},
    ("GET", "/admin/catalogues/"): {"admin", "physician", "nurse", "records_clerk"},
    ("GET", "/admin/catalogues/<int:version_id>"): {"admin", "physician", "nurse", "records_clerk"},
    ("GET", "/patients/merge"): {"records_clerk"},
    ("POST", "/patients/merge"): {"records_clerk"},
    ("GET", "/patients/<int:patient_id>/documents/new"): {"physician", "radiologist"},
    ("POST", "/patients/<int:patient_id>/documents/new"): {"physician", "radiologist"},
    ("GET", "/documents/<int:document_id>"): {"physician", "radiologist", "nurse", "records_clerk"},
    ("GET", "/documents/<int:document_id>/edit"): {"physician", "radiologist"},
    ("POST", "/documents/<int:document_id>/edit"): {"physician", "radiologist"},
    ("POST", "/documents/<int:document_id>/cancel"): {"physician", "radiologist"},
    ("POST", "/documents/<int:document_id>/restore"): {"physician", "radiologist"},
    ("POST", "/documents/<int:document_id>/discard"): {"physician", "radiologist"},  # an unsigned amendment
    ("GET", "/reconcile/<int:study_id>"): {"records_clerk"},
    ("GET", "/admin/users/"): {"admin"},
    ("POST", "/admin/users/"): {"admin"},
    ("GET", "/admin/users/<int:user_id>"): {"admin"},
    ("POST", "/admin/users/<int:user_id>/active"): {"admin"},
    ("POST", "/admin/users/<int:user_id>/password"): {"admin"},
    ("POST", "/admin/users/<int:user_id>/profile"): {"admin"},
    ("POST", "/admin/users/<int:user_id>/tokens"): {"admin"},
    ("POST", "/admin/users/<int:user_id>/tokens/<int:token_id>/revoke"): {"admin"},
    ("GET", "/api/patients"): CLIN,
    ("POST", "/api/patients"): {"physician", "nurse", "records_clerk"},
    ("GET", "/api/patients/<int:patient_id>"): CLIN,
    ("PUT", "/api/patients/<int:patient_id>"): {"physician", "nurse", "records_clerk"},
    ("POST", "/api/patients/merge"): {"records_clerk"},
    ("GET", "/api/patients/<int:patient_id>/encounters"): {"physician", "radiologist", "nurse", "records_clerk"},
    ("GET", "/api/patients/<int:patient_id>/orders"): CLIN,
    ("POST", "/api/encounters"): {"physician", "nurse", "records_clerk"},
    ("GET", "/api/encounters/<int:encounter_id>"): {"physician", "radiologist", "nurse", "records_clerk"},
    ("POST", "/api/documents"): {"physician", "radiologist"},
    ("GET", "/api/documents/<int:document_id>"): {"physician", "radiologist", "nurse", "records_clerk"},
    ("PUT", "/api/documents/<int:document_id>/draft"): {"physician", "radiologist"},
    ("POST", "/api/documents/<int:document_id>/amendments"): {"physician", "radiologist"},
    ("POST", "/api/documents/<int:document_id>/cancel"): {"physician", "radiologist"},
    ("POST", "/api/documents/<int:document_id>/restore"): {"physician", "radiologist"},
    ("POST", "/api/orders"): {"physician"},
    ("GET", "/api/orders/<int:order_id>"): CLIN,
    ("POST", "/api/orders/<int:order_id>/cancel"): {"physician"},
    ("GET", "/api/studies/unmatched"): CLIN,
    ("POST", "/api/studies/<int:study_id>/link"): {"records_clerk"},
    # Reading room and film-less access (issue 6). The /dicomweb proxy is
    # mounted only with an image store; its checks are tested in tests/viewer/test_emr_reading.py.
    # Technicians too: the studies in their care, to check the images they acquired (no report content).
    ("GET", "/reading/"): {"physician", "radiologist", "technician"},
    ("GET", "/reading/studies/<int:study_id>"): {"physician", "radiologist", "technician"},
    ("POST", "/reading/studies/<int:study_id>/report"): {"physician", "radiologist"},
    # Listing and revoking slips: those who print them and the records clerk, not technicians (they
    # may neither read the report a link shares nor print one, so they may not end the patient's access).
    ("GET", "/reading/studies/<int:study_id>/share"): {"physician", "radiologist", "records_clerk"},
    # A slip opens images and the signed report: only roles holding both print one (issue 10).
    ("POST", "/reading/studies/<int:study_id>/share"): {"physician", "radiologist"},
    ("POST", "/reading/shares/<int:link_id>/revoke"): {"physician", "radiologist", "records_clerk"},
    # The viewer's "Báo cáo (PDF)": a study's signed report versions (tests/security/test_access_report_pdfs.py).
    ("GET", "/reading/reports/<study_uid>"): {"physician", "radiologist", "nurse", "records_clerk"},
    ("GET", "/reading/measurements/<study_uid>"): {"physician", "radiologist", "technician"},
    ("PUT", "/reading/measurements/<study_uid>"): {"physician", "radiologist", "technician"},
    ("GET", "/s/<code>"): None,
    ("POST", "/s/<code>"): None,
    ("GET", "/s/<code>/study.zip"): None,
    ("GET", "/s/<code>/report.pdf"): None,
    ("GET", "/admin/audit.csv"): {"admin"},
    # issue 15: the outbox operator page; closing a visit (pushes its summary to the health record)
    ("GET", "/patients/<int:patient_id>/encounters/<int:encounter_id>/close"): {"physician"},
    ("POST", "/patients/<int:patient_id>/encounters/<int:encounter_id>/close"): {"physician"},
    ("GET", "/admin/outbox/"): {"admin"},
    ("GET", "/admin/outbox/<int:message_id>"): {"admin"},
    ("POST", "/admin/outbox/<int:message_id>/resend"): {"admin"},
    ("POST", "/reconcile/bulk"): {"records_clerk"},
    # Signature verification (issue 5): public, no patient data unless logged in with document.read.
    # The /signing/* and /verify/* pages are checked in tests/signing/test_workflow.py.
    ("GET", "/api/verify/<code>"): None,
    ("GET", "/favicon.ico"): None,
    ("GET", "/healthz"): None,  # `filmless check`: "ok" or 503, nothing else
    # Care scope (issue 10): break the glass for a patient outside one's care, and its review.
    # Scope checks per patient are tested in tests/security/test_access_care_scope.py.
    ("GET", "/patients/<int:patient_id>/break-glass"): {"physician", "radiologist", "technician"},
    ("POST", "/patients/<int:patient_id>/break-glass"): {"physician", "radiologist", "technician"},
    # Also the head of a department (a flag, not a role: physician1 is not one), for their department's users
    # only: tests/security/test_access_break_glass_department_head.py.
    ("GET", "/admin/break-glass"): {"admin"},
    # Marking an emergency access reviewed (who, when, note): tests/security/test_access_break_glass_review.py.
    ("POST", "/admin/break-glass/<int:grant_id>/review"): {"admin"},
    # The image viewer's banner: the logged-in user's own emergency accesses in force (an empty list for a role
    # that cannot break the glass); never another user's: tests/security/test_break_glass_viewer_banner.py.
    ("GET", "/break-glass/mine"): set(ROLES),
    ("POST", "/api/verify"): None,
    # HL7 v2 with the HIS (issue 15 §5): the message log, one message, replay. tests/security/test_hl7.py.
    ("GET", "/admin/hl7"): {"admin"},
    ("GET", "/admin/hl7/<int:message_id>"): {"admin"},
    ("POST", "/admin/hl7/<int:message_id>/replay"): {"admin"},
    # Issue 16 §3: the operations page; /metrics takes the scrape bearer token, not a role (no session at all):
    # tests/security/test_ops_metrics.py tries cookies, API tokens, other schemes and query strings on it.
    ("GET", "/admin/ops"): {"admin"},
    ("GET", "/metrics"): None,
    # Identity by CCCD (issue 15 §3): the reconciliation queue. Which decision each role may take
    # (escalated items: admin only) is tested in tests/security/test_identity_reconcile.py.
    ("GET", "/identity/"): {"records_clerk", "admin"},
    ("POST", "/identity/<int:check_id>/decide"): {"records_clerk", "admin"},
    # Provincial network (issue 15). The inter-site API is for other facilities, with the token this
    # site issued them (no user role): tests/security/test_network_sites.py tries to get around it.
    ("GET", "/network/sites"): {"admin"},
    ("POST", "/network/sites"): {"admin"},
    ("GET", "/network/sites/<int:site_id>"): {"admin"},
    ("POST", "/network/sites/<int:site_id>"): {"admin"},
    # Withdrawing a trust anchor (tests/security/test_network_sites.py: a clinician's direct POST).
    ("GET", "/network/trust-anchors/<sha256>/withdraw"): {"admin"},
    ("POST", "/network/trust-anchors/<sha256>/withdraw"): {"admin"},
    ("POST", "/network/orders/<int:order_id>/send"): {"physician", "radiologist"},
    ("POST", "/network/orders/<int:order_id>/read-request"): {"physician", "radiologist"},
    ("GET", "/network/received"): CLIN,
    ("GET", "/network/received/<int:received_id>/view"): {"physician", "radiologist", "technician"},
    ("GET", "/network/received/<int:received_id>/report.pdf"): {"physician", "radiologist", "nurse", "records_clerk"},
    ("POST", "/network/api/v1/studies"): None,
    ("POST", "/network/api/v1/read-requests"): None,
    ("POST", "/network/api/v1/reports"): None,
}
_OTHER_ROUTES_OWNED_ELSEWHERE = re.compile(r"^/(viewer|verify|fhir|signing|export)")


def _routes(app: Flask) -> list[tuple[str, str]]:
    out = []
    for rule in app.url_map.iter_rules():
        if _OTHER_ROUTES_OWNED_ELSEWHERE.match(rule.rule):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((method, rule.rule))
    return out


def test_every_route_is_in_the_table(app: Flask) -> None:
    missing = [r for r in _routes(app) if r not in EXPECTED]
    assert not missing, f"add these routes to EXPECTED: {missing}"


def _fill(rule: str) -> str:
    return re.sub(r"<(?:int:)?(\w+)>", lambda m: "1" if m.group(1) != "filename" else "emr.css", rule)


def test_matrix(app: Flask, client: FlaskClient, tokens: dict[str, str], world: Any) -> None:
    from emr.access.login_guard import LoginGuard

    # Hundreds of logins from one address: this test is about roles, not the login rate limit.
    app.extensions["emr.login_guard"] = LoginGuard(rate_per_minute=10**6, burst=10**6)
    for method, rule in _routes(app):
        allowed_roles = EXPECTED[(method, rule)]
        if allowed_roles is None:
            continue
        url = _fill(rule)
        for role in ROLES:
            if rule.startswith("/api/"):
                r = client.open(url, method=method, json={}, headers={"Authorization": f"Bearer {tokens[role]}"})
                anonymous = client.open(url, method=method, json={})
                assert anonymous.status_code == 401, (method, url)
            else:
                c = app.test_client()
                assert login(c, f"{role}1").status_code == 302
                app.config["WTF_CSRF_ENABLED"] = False
                try:
                    r = c.open(url, method=method, data={})
                finally:
                    app.config["WTF_CSRF_ENABLED"] = True
                anonymous = app.test_client().open(url, method=method)
                assert anonymous.status_code in (302, 400), (method, url, anonymous.status_code)
            if role in allowed_roles:
                assert r.status_code not in (401, 403), (method, url, role, r.status_code)
            else:
                assert r.status_code == 403, (method, url, role, r.status_code)
            assert r.status_code < 500, (method, url, role, r.status_code)


@pytest.mark.parametrize("role", ["nurse"])
def test_denials_are_audited(client: FlaskClient, tokens: dict[str, str], session: Any, role: str) -> None:
    from sqlalchemy import select

    from emr.models import AuditEntry

    assert client.post("/api/orders", json={}, headers={"Authorization": f"Bearer {tokens[role]}"}).status_code == 403
    row = session.scalars(select(AuditEntry).where(AuditEntry.outcome == "denied")).one()
    assert (row.username, row.action, row.object_id) == ("nurse1", "order.create", "/api/orders")


def test_a_trailing_slash_leads_to_the_page_with_the_same_rights(app: Flask, world: Any) -> None:
    """``/admin/ops/`` as well as ``/admin/ops``: every HTML page whose address has no trailing slash
    answers the slashed address with a redirect to itself (GET only), which then applies its own rights;
    the JSON API keeps answering 404."""
    from emr.access.login_guard import LoginGuard

    app.extensions["emr.login_guard"] = LoginGuard(rate_per_minute=10**6, burst=10**6)
    pages = [
        rule for method, rule in _routes(app)
        if method == "GET" and not rule.endswith("/") and "<path:" not in rule  # files: their own 404
        and not rule.startswith(("/api/", "/network/api/"))
    ]
    assert {"/admin/ops", "/admin/audit", "/admin/hl7", "/admin/break-glass"} <= set(pages)
    clients = {"anonymous": app.test_client()}
    for role in ("admin", "physician"):
        clients[role] = app.test_client()
        assert login(clients[role], f"{role}1").status_code == 302
    for rule in pages:
        url = _fill(rule)
        for who, c in clients.items():
            with c.get(url + "/?page=2") as r:  # closed: some pages stream (audit.csv)
                assert r.status_code == 308 and r.headers["Location"] == url + "?page=2", (url, who, r.status_code)
                assert b"<nav" not in r.data and len(r.data) < 500  # the redirect carries nothing of the page
    admin = clients["admin"]
    assert admin.get("/admin/ops/", follow_redirects=True).status_code == 200
    assert clients["physician"].get("/admin/ops/", follow_redirects=True).status_code == 403
    r = clients["anonymous"].get("/admin/ops/", follow_redirects=True)
    assert [h.status_code for h in r.history] == [308, 302] and r.request.path == "/login"
    assert admin.post("/admin/ops/").status_code in (400, 404)  # forms are never redirected
    assert admin.get("/admin/no-such-page/").status_code == 404
    r = app.test_client().get("/api/patients/")
    assert r.status_code == 404 and r.is_json
