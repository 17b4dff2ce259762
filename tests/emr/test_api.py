"""The REST API: token auth, validation errors, flows, OpenAPI."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from .conftest import patient_data


def h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_api_needs_a_valid_token(client: FlaskClient, tokens: dict[str, str]) -> None:
    assert client.get("/api/patients?q=a").status_code == 401
    r = client.get("/api/patients?q=a", headers=h("fl_wrong"))
    assert r.status_code == 401 and r.json["error"] == "unauthorized"
    assert client.get("/api/patients?q=a", headers=h(tokens["nurse"])).status_code == 200


def test_patient_flow_and_machine_readable_errors(client: FlaskClient, tokens: dict[str, str]) -> None:
    clerk = h(tokens["records_clerk"])
    r = client.post("/api/patients", json=patient_data(), headers=clerk)
    assert r.status_code == 201, r.json
    pid = r.json["id"]
    assert r.json["full_name"] == "Nguyễn Thị Hồng Nhung"
    r = client.post("/api/patients", json=patient_data(full_name="Trần Văn Ba", bhyt_number=None), headers=clerk)
    assert r.status_code == 409 and r.json["fields"] == {"cccd": "patients.error.cccd_duplicate"}
    r = client.post("/api/patients", json=patient_data(cccd="123"), headers=clerk)
    assert r.status_code == 422 and r.json["fields"] == {"cccd": "patients.error.cccd_format"}
    r = client.post("/api/patients", data="{not json", headers={**clerk, "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json["error"] == "bad_request"
    r = client.post(
        "/api/patients", json={"full_name": 5, "birth_date": "17/05/1990", "sex": "X", "extra": 1}, headers=clerk
    )
    assert r.status_code == 422
    assert r.json["fields"] == {
        "full_name": "errors.field_invalid",
        "birth_date": "errors.field_date",
        "sex": "errors.field_choice",
        "extra": "errors.field_unknown",
    }
    r = client.get("/api/patients", query_string={"q": "nguyen thi"}, headers=clerk)
    assert [p["id"] for p in r.json["items"]] == [pid]
    assert client.get("/api/patients/999999", headers=clerk).status_code == 404
    assert client.get("/api/patients/99999999999999999999", headers=clerk).status_code == 404
    assert client.get("/api/patients?q=", headers=clerk).status_code == 422
    assert client.get("/api/patients?q=a&limit=abc", headers=clerk).status_code == 422


def test_order_and_document_flow(client: FlaskClient, tokens: dict[str, str], world: Any) -> None:
    doc_h = h(tokens["physician"])
    pid = client.post("/api/patients", json=patient_data(), headers=doc_h).json["id"]
    enc = client.post(
        "/api/encounters",
        json={"patient_id": pid, "kind": "outpatient", "department_code": "K19", "diagnoses": ["R51"]},
        headers=doc_h,
    )
    assert enc.status_code == 201, enc.json
    order = client.post(
        "/api/orders",
        json={
            "patient_id": pid,
            "encounter_id": enc.json["id"],
            "modality": "CT",
            "procedure_name": "CT sọ não không tiêm",
            "urgency": "stat",
        },
        headers=doc_h,
    )
    assert order.status_code == 201, order.json
    assert order.json["status"] == "scheduled" and order.json["studies"] == []
    listed = client.get(f"/api/patients/{pid}/orders", headers=h(tokens["technician"]))
    assert [o["accession_number"] for o in listed.json["items"]] == [order.json["accession_number"]]
    rad = h(tokens["radiologist"])
    report = client.post(
        "/api/documents",
        json={
            "encounter_id": enc.json["id"],
            "form_type": "radiology_report",
            "order_id": order.json["id"],
            "content": {"findings": "Không thấy tổn thương", "conclusion": "Bình thường"},
        },
        headers=rad,
    )
    assert report.status_code == 201, report.json
    did = report.json["id"]
    r = client.post(
        f"/api/documents/{did}/amendments",
        json={"content": {"findings": "a", "conclusion": "b"}, "reason": "x"},
        headers=rad,
    )
    assert r.status_code == 409 and r.json["error"] == "invalid_state"  # a draft is edited, not amended
    r = client.post(f"/api/documents/{did}/cancel", json={"reason": "nhầm"}, headers=rad)
    assert r.status_code == 200 and r.json["status"] == "cancelled"
    r = client.post(f"/api/documents/{did}/restore", json={}, headers=rad)
    assert r.status_code == 422 and "reason" in r.json["fields"]


def test_openapi_documents_every_route_with_its_schemas(client: FlaskClient, app: Any) -> None:
    spec = client.get("/api/openapi.json").json
    assert spec["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/") and rule.endpoint != "api.openapi_json":
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                path = rule.rule.replace("<int:", "{").replace(">", "}").replace("<", "{")
                assert (path, method) in documented, (path, method)
    body = spec["paths"]["/api/patients"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    patient = spec["components"]["schemas"][body.rsplit("/", 1)[1]]
    assert {"full_name", "birth_date", "sex"} <= set(patient["required"])
    assert "ErrorOut" in spec["components"]["schemas"]
