"""The JSON API's routing and protocol errors (404, 405, a body that is not JSON) answer in the API's error
shape with a Vietnamese message, as its other errors do, not Werkzeug's English description."""

from __future__ import annotations

from flask.testing import FlaskClient

from emr.i18n import t


def test_method_not_allowed_is_a_vietnamese_json_error(client: FlaskClient, tokens: dict[str, str]) -> None:
    r = client.delete("/api/patients", headers={"Authorization": f"Bearer {tokens['records_clerk']}"})
    assert r.status_code == 405 and r.is_json
    assert r.get_json() == {"error": "method_not_allowed", "message": t("errors.method_not_allowed", method="DELETE"),
                            "fields": {}}
    assert "Method Not Allowed" not in r.get_data(as_text=True) and "DELETE" in r.get_json()["message"]
    assert {"GET", "POST"} <= {m.strip() for m in r.headers["Allow"].split(",")}


def test_unknown_address_and_bad_body_are_vietnamese(client: FlaskClient, tokens: dict[str, str]) -> None:
    r = client.get("/api/no-such-thing")
    assert r.status_code == 404 and r.get_json() == {"error": "not_found", "message": t("errors.not_found"),
                                                     "fields": {}}
    clerk = {"Authorization": f"Bearer {tokens['records_clerk']}", "Content-Type": "application/json"}
    r = client.post("/api/patients", data="{not json", headers=clerk)
    assert r.status_code == 400 and r.get_json()["message"] == t("errors.json")
