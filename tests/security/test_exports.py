"""Attempts to get around the FHIR API's checks through the issue-14 additions.

Lenient handling, paging links, absolute references, the catch-all OperationOutcome route, other
methods and formats must neither skip authentication or the role matrix nor leak data.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask.testing import FlaskClient

from tests.exports.conftest import (  # noqa: F401  (fixtures)
    Visit,
    app,
    client,
    database_url,
    engine,
    pg_database,
    session,
    settings,
    sqlite_template,
    tokens,
    visit,
    world,
)


def _outcome(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True)[:200])
    body = resp.get_json()
    assert body["resourceType"] == "OperationOutcome"
    return body


def test_lenient_handling_does_not_skip_authentication(client: FlaskClient, visit: Visit) -> None:  # noqa: F811
    r = client.get("/fhir/Patient?foo=1&name=nhung", headers={"Prefer": "handling=lenient"})
    _outcome(r, 401)
    assert "Nhung" not in r.get_data(as_text=True)


def test_lenient_handling_does_not_skip_the_role_matrix(
    client: FlaskClient,  # noqa: F811
    tokens: dict[str, str],  # noqa: F811
    visit: Visit,  # noqa: F811
) -> None:
    headers = {"Authorization": f"Bearer {tokens['technician']}", "Prefer": "handling=lenient"}
    _outcome(client.get("/fhir/DocumentReference?foo=1", headers=headers), 403)
    headers = {"Authorization": f"Bearer {tokens['physician']}", "Prefer": "handling=lenient"}
    _outcome(client.get("/fhir/AuditEvent?foo=1", headers=headers), 403)


def test_catch_all_route_answers_without_data(client: FlaskClient, visit: Visit) -> None:  # noqa: F811
    for path in ("/fhir/Patients", f"/fhir/patient/{visit.patient.id}", "/fhir/Patient/../Patient", "/fhir/%2e%2e/api"):
        r = client.get(path)
        assert r.status_code in (401, 404), (path, r.status_code)
        assert visit.patient.full_name not in r.get_data(as_text=True)
    for method in ("post", "put", "delete", "patch"):
        r = getattr(client, method)(f"/fhir/Patient/{visit.patient.id}", json={"resourceType": "Patient"})
        _outcome(r, 405)
        assert visit.patient.full_name not in r.get_data(as_text=True)


def test_xml_format_is_refused_before_any_data(client: FlaskClient, visit: Visit) -> None:  # noqa: F811
    r = client.get(f"/fhir/Patient/{visit.patient.id}?_format=xml")
    _outcome(r, 406)
    assert visit.patient.full_name not in r.get_data(as_text=True)


def test_paging_links_carry_no_credentials(
    client: FlaskClient,  # noqa: F811
    tokens: dict[str, str],  # noqa: F811
    visit: Visit,  # noqa: F811
) -> None:
    r = client.get("/fhir/Patient?_count=1", headers={"Authorization": f"Bearer {tokens['physician']}"})
    assert r.status_code == 200
    for link in r.get_json()["link"]:
        assert tokens["physician"] not in link["url"]
        # following a link still needs the token
        parts = urlsplit(link["url"])
        _outcome(client.get(f"{parts.path}?{parts.query}"), 401)


def test_absolute_reference_cannot_reach_another_type(
    client: FlaskClient,  # noqa: F811
    tokens: dict[str, str],  # noqa: F811
    visit: Visit,  # noqa: F811
) -> None:
    headers = {"Authorization": f"Bearer {tokens['physician']}"}
    _outcome(
        client.get(f"/fhir/Encounter?patient=https://evil.example/fhir/AuditEvent/{visit.patient.id}", headers=headers),
        400,
    )
