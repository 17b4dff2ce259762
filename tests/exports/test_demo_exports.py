"""`filmless demo` writes an outpatient and an inpatient visit as signed XML1/3/4/5 and the stay's HoSoBenhAn."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from lxml import etree
from sqlalchemy import select

from emr import EmrSettings, open_session
from emr.catalogues import has_versions
from emr.core.clock import to_local
from emr.demo.records import DEMO_EXPORT_DIR
from emr.demo.seed import seed
from emr.exports.envelope import read_envelope
from emr.exports.records import fmt_datetime
from emr.exports.xml130 import XSD_DIR, validate_table
from emr.models import Encounter
from tests.emr.demo_support import assert_demo_is_coherent


def test_demo_exports_both_visits_and_the_record(tmp_path: Path) -> None:
    settings = EmrSettings(
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path}/emr.sqlite3",
        secret_key_file=tmp_path / "key",
        public_url="https://pacs.benhvien.example.vn",
        facility_code="79001",
    )
    seed(settings, None)
    folder = tmp_path / DEMO_EXPORT_DIR
    with open_session(settings) as s:
        # Without a PACS too, no exam is reported without a study, and the stay's papers follow its days.
        assert_demo_is_coherent(s)
        # the demo's visits passed the pre-submission check against the catalogues it loads (issue 15 §4)
        assert all(has_versions(s, k) for k in ("icd10", "dvkt", "facility", "department", "admin_unit"))
        visits = {e.kind: e for e in s.scalars(select(Encounter).where(Encounter.status == "closed"))}
        assert set(visits) == {"outpatient", "inpatient"}
        for kind, enc in visits.items():
            envelope = folder / f"{enc.visit_code}.xml"
            _root, tables = read_envelope(envelope.read_bytes())
            assert list(tables) == ["XML1", "XML3", "XML4", "XML5"], kind
            for name, doc in tables.items():
                assert validate_table(name, doc) == [], (kind, name)
                path = tmp_path / f"{kind}-{name}.xml"
                path.write_bytes(doc)
                r = subprocess.run(
                    ["xmllint", "--noout", "--schema", str(XSD_DIR / f"{name.lower()}.xsd"), str(path)],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert r.returncode == 0, r.stderr
            xml1 = etree.fromstring(tables["XML1"])
            # Vietnam local time: the stored UTC instants + 7 h
            assert xml1.findtext("NGAY_VAO") == fmt_datetime(enc.admitted_at)
            assert xml1.findtext("NGAY_RA") == fmt_datetime(enc.discharged_at)
            assert enc.discharged_at is not None
            local = enc.discharged_at.hour + 7
            assert xml1.findtext("NGAY_RA")[8:10] == f"{local % 24:02d}"
            assert len(etree.fromstring(tables["XML5"])[0]) >= 1  # progress notes
            if kind == "inpatient":
                assert xml1.findtext("MA_LOAI_KCB") == "03" and xml1.findtext("PP_DIEU_TRI")
                assert len(etree.fromstring(tables["XML5"])[0]) == 2
                # The papers tell a five-day stay: admitted 5 days (facility local time) before the discharge,
                # not in the same minute; both days counted for an inpatient stay (annex table 1, field 38).
                # Admitted at 08:30 facility time, discharged when the demo ran (emr.demo.records.STAY_TIMELINE).
                admitted, discharged = to_local(enc.admitted_at), to_local(enc.discharged_at)
                assert admitted.strftime("%H:%M") == "08:30" and admitted < discharged
                assert (discharged.date() - admitted.date()).days == 5
                assert enc.inpatient_at == enc.admitted_at
                assert xml1.findtext("SO_NGAY_DTRI") == "6"
                assert xml1.findtext("NGAY_VAO_NOI_TRU") == xml1.findtext("NGAY_VAO")
        stay = visits["inpatient"]
    record = json.loads((folder / f"HoSoBenhAn_{stay.visit_code}.json").read_text(encoding="utf-8"))["HoSoBenhAn"]
    assert (folder / f"HoSoBenhAn_{stay.visit_code}.xml").read_bytes().startswith(b"<?xml")
    paper = record["GiayRaVien"]
    assert paper["soluutru"] == "LT-2026-00001" and paper["mayte"] == "4812345678"
    # MA_BS / TEN_BS: the head of department, who signs the discharge paper last; the treating physician first
    assert paper["bacsi_ravien"] == "Hoàng Minh Tuấn" and paper["ngaychungtu"]
    assert paper["bacsi_dieutri"] == "Nguyễn Văn An"
    # Every paper the export calls signed carries its signatures (the demo signs with its token).
    assert record["ChuKy"] and all(s["trangthai"] == "da_ky" and s["cms_base64"] for s in record["ChuKy"])
    assert paper["hoten_cha"] == "Lê Văn Hải" and paper["hoten_me"] == "Nguyễn Thị Thu"
    assert record["ThongTinVaoVien"]["PhieuKhamVaoVien"]["nguoiky_hoten"] == "Nguyễn Văn An"
    assert record["ThongTinDieuTri"]["PhieuChanDoan"]["maicd_chinh"] == "J18.9"
    assert record["ThongTinBenhNhan"]["tongiao"] == "02"
    # links use the configured public URL, not a default port
    links = [r["link_hinhanh"] for r in record["KetQuaChanDoanHinhAnh"]]
    assert links and all(u.startswith("https://pacs.benhvien.example.vn/viewer/") for u in links)
    assert ":8080" not in json.dumps(record)
