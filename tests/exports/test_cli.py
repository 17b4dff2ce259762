"""`filmless export ...` against a real database: files written, failures listed, nothing partial."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from emr.exports import read_envelope
from filmless.cli import main

from .conftest import DEVICE_CT, HEAD_CODE, Visit, make_visit


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, settings: Any) -> Path:
    for k in list(__import__("os").environ):
        if k.startswith("FILMLESS_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("FILMLESS_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("FILMLESS_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("FILMLESS_FACILITY_CODE", "79001")
    return Path(settings.data_dir)


def test_xml130_range_and_hsba(
    cli_env: Path, pki: Any, session: Session, world: Any, visit: Visit, tmp_path: Path, capsys: Any
) -> None:
    bad = make_visit(session, world, cccd="079190005678", bhyt_number="HT3010987654321")
    bad.order.procedure_code = None
    session.commit()
    user = pki.users["facility"]
    assert (
        main(
            [
                "export",
                "config",
                "--head-code",
                HEAD_CODE,
                "--device",
                f"CT={DEVICE_CT}",
                "--p12",
                str(user.p12_path),
                "--password-file",
                str(user.password_path),
            ]
        )
        == 0
    )
    out = tmp_path / "out"
    rc = main(["export", "xml130", "--from", "2026-11-23", "--to", "2026-11-23", "--out", str(out), "--base64"])
    captured = capsys.readouterr()
    assert rc == 1  # one visit failed its check
    assert sorted(p.name for p in out.iterdir()) == [
        f"{visit.encounter.visit_code}.b64",
        f"{visit.encounter.visit_code}.xml",
    ]
    _root, tables = read_envelope((out / f"{visit.encounter.visit_code}.xml").read_bytes())
    assert set(tables) == {"XML1", "XML3", "XML4", "XML5"}
    assert "1 hồ sơ đã ký" in captured.out
    assert bad.encounter.visit_code in captured.err and "MA_DICH_VU" in captured.err

    assert (
        main(["export", "xml130", "--from", "2026-11-24", "--to", "2026-11-30", "--out", str(tmp_path / "none")]) == 0
    )

    target = tmp_path / "hsba.json"
    assert main(["export", "hsba", visit.encounter.visit_code, "--format", "json", "--out", str(target)]) == 0
    doc = json.loads(target.read_text(encoding="utf-8"))
    assert doc["HoSoBenhAn"]["ThongTinVaoVien"]["sovaovien"] == visit.encounter.visit_code
    assert doc["chuky_xuat"]["cms_base64"]
    assert main(["export", "hsba", str(visit.encounter.id), "--format", "xml", "--out", str(tmp_path / "h.xml")]) == 0
    assert (tmp_path / "h.xml").read_bytes().startswith(b"<?xml")
    folder = tmp_path / "hsba-out"
    folder.mkdir()
    assert main(["export", "hsba", visit.encounter.visit_code, "--format", "json", "--out", str(folder)]) == 0
    assert [p.name for p in folder.iterdir()] == [f"HoSoBenhAn_{visit.encounter.visit_code}.json"]
    assert main(["export", "hsba", "no-such-visit"]) == 1


def test_cli_links_use_the_installation_url(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, visit: Visit, tmp_path: Path, capsys: Any
) -> None:
    """No ':8080' default in exported links: the installation's port, then the URL set with --public-url."""
    monkeypatch.setenv("FILMLESS_EMR_PORT", "9443")
    out = tmp_path / "a.json"
    assert main(["export", "hsba", visit.encounter.visit_code, "--out", str(out)]) == 0
    link = json.loads(out.read_text(encoding="utf-8"))["HoSoBenhAn"]["KetQuaChanDoanHinhAnh"][0]["link_hinhanh"]
    assert link.startswith("http://127.0.0.1:9443/viewer/")
    # the operator's shell lacks the service's variables: the URL recorded in exports.json wins
    monkeypatch.delenv("FILMLESS_EMR_PORT")
    assert main(["export", "config", "--public-url", "https://pacs.bv-demo.vn/"]) == 0
    assert '"public_url": "https://pacs.bv-demo.vn"' in capsys.readouterr().out
    assert main(["export", "hsba", visit.encounter.visit_code, "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    record = json.loads(text)["HoSoBenhAn"]
    assert record["KetQuaChanDoanHinhAnh"][0]["link_hinhanh"].startswith("https://pacs.bv-demo.vn/viewer/?study=")
    assert record["KetQuaChanDoanHinhAnh"][0]["dicomweb"].startswith("https://pacs.bv-demo.vn/dicomweb/studies/")
    assert ":8080" not in text
    assert main(["export", "config", "--public-url", "ftp://x"]) == 2
    assert main(["export", "config", "--head-code", "000999/HCM-CCHN"]) == 2  # MA_TTDV is String(10)
