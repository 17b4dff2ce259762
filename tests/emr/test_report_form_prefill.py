"""A report template's normal text is offered once, when a new report is first opened.

Found on the demo: a radiologist typed pneumonia findings, left the conclusion empty and
saved; the 422 page came back with the CT template's "no abnormality" conclusion in the
box (the picker was re-selected and reading.js filled every empty field on load), so one
more click saved a conclusion nobody wrote. After a failed save every field shows exactly
what was submitted, and nothing fills a field except an explicit template pick.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from emr.i18n import t
from emr.models import DocumentVersion
from emr.reading import service as reading

from .conftest import World, linked_ct_study, login

READING_JS = Path(__file__).resolve().parents[2] / "emr" / "static" / "reading.js"
PNEUMONIA = "Đám mờ thùy dưới phổi phải, có hình khí phế quản đồ.\nKhông tràn dịch màng phổi."


def _ct_study(session: Session, world: World) -> tuple[int, int]:
    study = linked_ct_study(session, world, "CT ngực")
    assert study.order_id is not None
    return study.id, study.order_id


def _textarea(page: str, name: str) -> str:
    m = re.search(rf'<textarea name="{name}"[^>]*>(.*?)</textarea>', page, re.S)
    assert m, f"no textarea {name}"
    return html.unescape(m.group(1))


def _token(page: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert m
    return m.group(1)


def _selected_template(page: str) -> list[str]:
    picker = re.search(r'<select id="report-template">(.*?)</select>', page, re.S)
    assert picker
    return re.findall(r'<option value="([^"]*)"\s*selected', picker.group(1))


def test_failed_save_of_a_new_report_keeps_the_empty_conclusion_empty(
    client: FlaskClient, session: Session, world: World
) -> None:
    study_id, order_id = _ct_study(session, world)
    login(client, "radiologist1")
    first = client.get(f"/reading/studies/{study_id}").get_data(as_text=True)
    r = client.post(
        f"/reading/studies/{study_id}/report",
        data={"csrf_token": _token(first), "c_technique": "", "c_findings": PNEUMONIA, "c_conclusion": ""},
    )
    page = r.get_data(as_text=True)
    assert r.status_code == 422, page[:2000]
    assert t("errors.field_required") in page
    assert _textarea(page, "c_conclusion") == ""
    assert _textarea(page, "c_findings") == PNEUMONIA
    assert _textarea(page, "c_technique") == ""
    # Nothing on the re-rendered page may fill the emptied fields: no template is pre-picked.
    assert _selected_template(page) == []
    # Opening the still-new report afresh offers the CT template's normal text (server-side).
    again = client.get(f"/reading/studies/{study_id}").get_data(as_text=True)
    assert _textarea(again, "c_conclusion") == t("reading.template.CT.conclusion")
    assert _selected_template(again) == ["CT"]
    session.expire_all()
    assert reading.latest_report(session, order_id) is None  # nothing was saved


def test_failed_save_of_a_draft_keeps_what_was_submitted(client: FlaskClient, session: Session, world: World) -> None:
    study_id, order_id = _ct_study(session, world)
    login(client, "radiologist1")
    first = client.get(f"/reading/studies/{study_id}").get_data(as_text=True)
    saved = client.post(
        f"/reading/studies/{study_id}/report",
        data={"csrf_token": _token(first), "c_findings": "Bình thường.", "c_conclusion": "Bình thường."},
    )
    assert saved.status_code == 302
    draft = client.get(f"/reading/studies/{study_id}").get_data(as_text=True)
    assert _selected_template(draft) == [] and _textarea(draft, "c_conclusion") == "Bình thường."

    r = client.post(
        f"/reading/studies/{study_id}/report",
        data={"csrf_token": _token(draft), "c_findings": PNEUMONIA, "c_conclusion": ""},
    )
    page = r.get_data(as_text=True)
    assert r.status_code == 422, page[:2000]
    assert _textarea(page, "c_conclusion") == "" and _textarea(page, "c_findings") == PNEUMONIA
    assert _selected_template(page) == []
    session.expire_all()
    doc = reading.latest_report(session, order_id)
    assert doc is not None and doc.current_version == 1
    version = session.query(DocumentVersion).filter_by(document_id=doc.id, number=1).one()
    assert json.loads(version.content_json)["conclusion"] == "Bình thường."


_DOM_STUB = """
const areas = {
  findings: { dataset: { field: 'findings' }, value: process.env.FINDINGS },
  conclusion: { dataset: { field: 'conclusion' }, value: '' },
};
const listeners = {};
const picker = { value: 'CT', addEventListener: (ev, fn) => { listeners[ev] = fn; } };
const data = { textContent: JSON.stringify({ CT: { findings: 'NORMAL-F', conclusion: 'NORMAL-C' } }) };
globalThis.document = {
  getElementById: (id) => ({ 'report-template': picker, 'report-templates': data })[id] || null,
  querySelectorAll: () => Object.values(areas),
};
require(process.env.SCRIPT);
const onLoad = { findings: areas.findings.value, conclusion: areas.conclusion.value };
listeners.change();
const onPick = { findings: areas.findings.value, conclusion: areas.conclusion.value };
console.log(JSON.stringify({ onLoad, onPick }));
"""


def test_reading_js_fills_fields_only_on_an_explicit_pick(tmp_path: Path) -> None:
    """Even with a template selected when the page loads, the script leaves the fields alone."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    stub = tmp_path / "stub.js"
    stub.write_text(_DOM_STUB, encoding="utf-8")
    result = subprocess.run(
        [node, str(stub)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"SCRIPT": str(READING_JS), "FINDINGS": PNEUMONIA, "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["onLoad"] == {"findings": PNEUMONIA, "conclusion": ""}
    assert out["onPick"] == {"findings": "NORMAL-F", "conclusion": "NORMAL-C"}
