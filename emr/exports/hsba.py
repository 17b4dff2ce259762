"""The ``HoSoBenhAn`` export (Circular 13/2025, guideline CV 365/TTYQG 2025) as JSON and XML.

The groups written are those the EMR holds: ThongTinBenhNhan,
ThongTinVaoVien, ThongTinDieuTri, BenhAnNgoaiTru and GiayRaVien (when the
visit has them, see below), PhieuChiDinh, KetQuaChanDoanHinhAnh (with
a link to the viewer and the DICOMweb endpoint), and ChuKy — the status of
every signature (``da_ky`` only once every signature a form requires is
there; ``chua_ky_du`` while some are missing, and such a version's content is
not exported as the signed paper). Groups the EMR does not keep (medication orders, lab
results, referral, emergency, procedure and surgery forms) are left out
rather than sent empty. Field names are lower-case as in the guideline's
appendix (LOW confidence for some names; see shared/vn-exchange-formats.md).
The admission note (PhieuKhamVaoVien), the diagnosis (PhieuChanDoan), the
outpatient record (BenhAnNgoaiTru, every field of the signed form) and the
discharge paper (GiayRaVien, the QĐ 4750 XML7/XML8 fields: storage number,
health ID, treatment method, summary of results, doctor's advice, discharging
doctor, document date, parents) each carry their own signer.

``chandoanvaovien`` (CHAN_DOAN_VAO, QĐ 4750 Bảng 1: the diagnosis when the
patient was received) is the signed admission note's initial diagnosis, else
the one typed when the visit was opened (:func:`.records.admission_diagnosis`).
GiayRaVien is written only for a visit that has ended and has a signed
discharge paper: QĐ 4750 Bảng 7 makes NGAY_RA (the end of treatment), MA_BS /
TEN_BS (the head of department who signs it) and NGAY_CT (the day it was
issued, the discharge day) mandatory, so a visit still open, or one without a
signed paper, has no discharge paper to export rather than an empty one.

Offline verification: the JSON carries the RFC 8785 canonical form's
SHA-256 and a detached CMS signature over exactly those bytes made with the
facility key, plus each signed version's own CMS when the signing workflow
provides one. ``openssl cms -verify -binary -inform DER -content
canonical.json`` checks it without this software.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from typing import Any

import rfc8785
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import pkcs7
from lxml import etree

from ..core.clock import local_isoformat
from ..i18n import t
from .artifacts import ArtifactSource, NoArtifacts
from .config import ExportConfig
from .envelope import sign_enveloped
from .facility_key import FacilityKey
from .records import SignedDocument, VisitRecord, admission_diagnosis, latest_of, local

__all__ = ["build_hsba", "canonical_bytes", "hsba_json", "hsba_xml", "detached_cms", "FORMAT_VERSION"]

FORMAT_VERSION = "TT13-2025/CV365-2025"
_SEX = {"M": "1", "F": "2", "O": "3"}
_KIND = {"outpatient": "ngoai_tru", "inpatient": "noi_tru", "emergency": "cap_cuu"}
# XML: the element for one item of each list.
_ITEM = {
    "PhieuChiDinh": "ChiDinh",
    "KetQuaChanDoanHinhAnh": "KetQua",
    "ChuKy": "ChuKySo",
    "dienbien": "DienBien",
    "maicd_kemtheo": "maicd",
    "tailieu": "TaiLieu",
}


def _iso(value: datetime | None) -> str | None:
    """ISO 8601 in the facility's zone with its offset (the offset follows the zone, e.g. +07:00)."""
    return None if value is None else local_isoformat(value)


# Version status → ChuKy.trangthai; "chua_ky_du": some of the form's required signatures are still missing.
_SIGNATURE_STATUS = {"signed": "da_ky", "superseded": "da_thay_the", "signing": "chua_ky_du"}


def _signature(item: SignedDocument, artifacts: ArtifactSource) -> dict[str, Any]:
    d, v = item.document, item.version
    cms = artifacts.version_cms(d, v)
    return {
        "sophieu": str(d.id),
        "loaiphieu": d.form_type,
        "phienban": v.number,
        "trangthai": _SIGNATURE_STATUS.get(v.status, v.status),
        "trangthai_tailieu": d.status,
        "chuky_hoten": item.signer.full_name if item.signer else None,
        "chuky_cchn": item.signer.practising_cert_no if item.signer else None,
        "chuky_thoigian": _iso(v.signed_at),
        "noidung_sha256": v.content_sha256,
        "cms_base64": base64.b64encode(cms).decode("ascii") if cms else None,
    }


def _signer(item: SignedDocument | None) -> dict[str, Any]:
    """Who signed a document and when: each record part names its own responsible person."""
    if item is None:
        return {"sophieu": None, "nguoiky_hoten": None, "nguoiky_cchn": None, "ngayky": None}
    return {
        "sophieu": str(item.document.id),
        "nguoiky_hoten": item.signer.full_name if item.signer else None,
        "nguoiky_cchn": item.signer.practising_cert_no if item.signer else None,
        "ngayky": _iso(item.version.signed_at),
    }


def _date(value: datetime | None) -> str | None:
    v = local(value)
    return None if v is None else v.date().isoformat()


def build_hsba(record: VisitRecord, config: ExportConfig, artifacts: ArtifactSource | None = None) -> dict[str, Any]:
    """The ``HoSoBenhAn`` object (plain JSON types; None where unknown)."""
    artifacts = artifacts or NoArtifacts()
    e, p = record.encounter, record.patient
    codes = [c for c, _ in record.diagnoses]
    titles = dict(record.diagnoses)
    public = config.public_url.rstrip("/")
    orders = []
    results = []
    for o in record.orders:
        orderer = record.user(o.ordered_by)
        orders.append(
            {
                "machidinh": o.accession_number,
                "madichvu": o.procedure_code,
                "tendichvu": o.procedure_name,
                "loaimay": o.modality,
                "vungchup": o.body_part,
                "mucdo": o.urgency,
                "thongtinlamsang": o.clinical_info,
                "ngaychidinh": _iso(o.ordered_at),
                "bacsichidinh": orderer.full_name if orderer else None,
                "mabacsichidinh": orderer.practising_cert_no if orderer else None,
                "trangthai": o.status,
            }
        )
        report = record.reports.get(o.id)
        if report is None:
            continue
        c = report.content
        studies = record.studies.get(o.id, [])
        results.append(
            {
                "sophieu": str(report.document.id),
                "machidinh": o.accession_number,
                "madichvu": o.procedure_code,
                "tendichvu": o.procedure_name,
                "mabacsithuchien": report.signer.practising_cert_no if report.signer else None,
                "bacsithuchien": report.signer.full_name if report.signer else None,
                "ngayketqua": _iso(report.version.signed_at),
                "kqcls_kythuat": c.get("technique") or None,
                "kqcls_mota": c.get("findings"),
                "kqcls_ketluan": c.get("conclusion"),
                "kqcls_denghi": c.get("recommendation") or None,
                "studyinstanceuid": o.study_instance_uid,
                "link_hinhanh": f"{public}/viewer/?study={o.study_instance_uid}",
                "dicomweb": f"{config.dicomweb_url}/studies/{o.study_instance_uid}",
                "soluong_ca_chup": len(studies),
            }
        )
    attending = record.attending
    admission = latest_of(record, "admission_note")
    diagnosis = latest_of(record, "diagnosis")
    discharge = latest_of(record, "discharge_summary")
    outpatient = latest_of(record, "outpatient_record")
    adm = admission.content if admission else {}
    dia = diagnosis.content if diagnosis else {}
    dis = discharge.content if discharge else {}
    signatures = [
        _signature(s, artifacts)
        for s in sorted(
            [*record.reports.values(), *record.progress_notes, *record.other_documents, *record.partially_signed],
            key=lambda s: (s.document.id, s.version.number),
        )
    ]
    record_out: dict[str, Any] = {
        "phienban_dinhdang": FORMAT_VERSION,
        "macskcb": config.facility_code,
        "ThongTinBenhNhan": {
            "mabn": p.code,
            "hoten": p.full_name,
            "ngaysinh": p.birth_date.isoformat() if not p.birth_year_only else str(p.birth_date.year),
            "gioitinh": _SEX.get(p.sex),
            "cccd_so": p.cccd,
            "sothebhyt": p.bhyt_number,
            "bhyt_tungay": p.bhyt_valid_from.isoformat() if p.bhyt_valid_from else None,
            "bhyt_denngay": p.bhyt_valid_to.isoformat() if p.bhyt_valid_to else None,
            "noidangky_kcbbd": p.bhyt_registered_facility,
            "quoctich": p.nationality_code,
            "dantoc": p.ethnicity_code,
            "nghenghiep": p.occupation_code,
            "diachi": p.address,
            "matinh": p.province_code,
            "maxa": p.ward_code,
            "dienthoai": p.phone,
            "nhommau": p.blood_type,
            "tongiao": p.religion_code,
            "madinhdanhyte": p.health_id,
            "hoten_cha": p.father_name,
            "hoten_me": p.mother_name,
            "nguoigiamho": p.guardian_name,
        },
        "ThongTinVaoVien": {
            "sovaovien": e.visit_code,
            "sobenhan": e.record_no,
            "loaikcb": _KIND.get(e.kind, e.kind),
            "ngayvaovien": _iso(e.admitted_at),
            "ngayvaonoitru": _iso(e.inpatient_at),
            "lydovaovien": e.reason,
            "chandoanvaovien": admission_diagnosis(e, adm),
            "makhoa": record.department.code if record.department else None,
            "tenkhoa": record.department.name if record.department else None,
            "bacsidieutri": attending.full_name if attending else None,
            "mabacsidieutri": attending.practising_cert_no if attending else None,
            "doituong": e.insurance_object,
            "PhieuKhamVaoVien": {
                **_signer(admission),
                "lydovaovien": adm.get("reason"),
                "benhsu": adm.get("history") or None,
                "khamlamsang": adm.get("examination"),
                "chandoanbandau": adm.get("initial_diagnosis"),
                "huongxutri": adm.get("plan") or None,
            },
        },
        "ThongTinDieuTri": {
            "maicd": codes[0] if codes else None,
            "tenicd": titles.get(codes[0]) if codes else None,
            "maicd_kemtheo": codes[1:],
            "chandoanravien": e.discharge_diagnosis,
            "ketquadieutri": e.treatment_result,
            "loairavien": e.discharge_type,
            "ngayravien": _iso(e.discharged_at),
            "trangthai": e.status,
            "PhieuChanDoan": {
                **_signer(diagnosis),
                "maicd_chinh": dia.get("main_code"),
                "chandoan_chinh": dia.get("main_text"),
                "maicd_kemtheo": dia.get("secondary_codes") or None,
                "chandoan_kemtheo": dia.get("secondary_text") or None,
            },
            "quatrinhbenhly": dis.get("summary"),
            "tomtat_kqcls": dis.get("test_results") or None,
            "phuongphapdieutri": dis.get("treatment"),
            "loidan_bacsi": dis.get("doctor_advice") or None,
            "dienbien": [
                {
                    "thoidiem": _iso(n.version.created_at),
                    "noidung": n.content.get("note"),
                    "giaidoanbenh": n.content.get("stage") or None,
                    "hoichan": n.content.get("consultation") or None,
                    "phauthuat": n.content.get("surgery") or None,
                    "nguoithuchien": n.signer.full_name if n.signer else None,
                }
                for n in record.progress_notes
            ],
        },
    }
    if outpatient is not None:
        record_out["BenhAnNgoaiTru"] = _outpatient_record(outpatient)
    if discharge is not None and e.status == "closed" and e.discharged_at is not None:
        record_out["GiayRaVien"] = _discharge_paper(record, discharge, config)
    record_out["PhieuChiDinh"] = orders
    record_out["KetQuaChanDoanHinhAnh"] = results
    record_out["ChuKy"] = signatures
    return record_out


def _outpatient_record(item: SignedDocument) -> dict[str, Any]:
    """The signed outpatient record (bệnh án ngoại trú), every field of the form, with its signer."""
    c = item.content
    return {
        **_signer(item),
        "lydokham": c.get("chief_complaint"),
        "benhsu": c.get("history") or None,
        "khamlamsang": c.get("examination"),
        "ketluan": c.get("conclusion"),
        "huongdieutri": c.get("treatment_plan") or None,
    }


def _discharge_paper(record: VisitRecord, discharge: SignedDocument, config: ExportConfig) -> dict[str, Any]:
    """GiayRaVien (QĐ 4750 Bảng 7, XML7) of a visit that has ended, from its signed discharge paper."""
    e, p, dis = record.encounter, record.patient, discharge.content
    author = record.user(discharge.version.created_by) or discharge.author
    return {
        **_signer(discharge),
        "soluutru": dis.get("storage_number") or None,
        "mayte": p.health_id or p.code,
        "makhoa_rv": record.department.code if record.department else None,
        "ngayvao": _iso(e.admitted_at),
        "ngayra": _iso(e.discharged_at),
        "chandoan_rv": dis.get("discharge_diagnosis"),
        "pp_dieutri": dis.get("treatment"),
        "ketquadieutri": dis.get("result"),
        "ghichu": dis.get("doctor_advice") or None,
        "huongdan_sauravien": dis.get("follow_up") or None,
        "ma_ttdv": config.head_code,
        "bacsi_dieutri": author.full_name if author else None,
        "bacsi_dieutri_cchn": author.practising_cert_no if author else None,
        # MA_BS / TEN_BS: the head of department (or who signed in the head's place) who signs the paper last.
        "bacsi_ravien": discharge.signer.full_name if discharge.signer else None,
        "bacsi_ravien_cchn": discharge.signer.practising_cert_no if discharge.signer else None,
        # The capacity they signed in: "Trưởng khoa", "KT. Trưởng khoa" (a deputy for the head) or "Q. Trưởng
        # khoa" (acting head), Decree 30/2020/NĐ-CP Annex I; None for a paper signed outside the workflow.
        "bacsi_ravien_tucach": t(f"signing.capacity.{discharge.signer_capacity}") if discharge.signer_capacity
        else None,
        "ngaychungtu": _date(discharge.version.signed_at),  # NGAY_CT
        "hoten_cha": p.father_name,
        "hoten_me": p.mother_name,
    }


def canonical_bytes(hsba: dict[str, Any]) -> bytes:
    """RFC 8785 (JCS) canonical JSON of the ``HoSoBenhAn`` object: what the CMS signs."""
    return bytes(rfc8785.dumps(hsba))


def detached_cms(data: bytes, key: FacilityKey) -> bytes | None:
    """A detached CMS SignedData (DER, SHA-256) over ``data``; None for a key that stays on a token."""
    if not isinstance(key.key, RSAPrivateKey):
        return None
    builder = pkcs7.PKCS7SignatureBuilder().set_data(data).add_signer(key.certificate, key.key, hashes.SHA256())
    for cert in key.chain:
        builder = builder.add_certificate(cert)
    return builder.sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary])


def hsba_json(hsba: dict[str, Any], key: FacilityKey | None, exported_at: datetime) -> dict[str, Any]:
    """The JSON export: the record, its canonical hash and the detached signature for offline checks."""
    canonical = canonical_bytes(hsba)
    cms = detached_cms(canonical, key) if key is not None else None
    return {
        "HoSoBenhAn": hsba,
        "xuat_luc": _iso(exported_at),
        "chuky_xuat": {
            "dinhdang": t("exports.hsba.signature_format"),
            "canonical_sha256": hashlib.sha256(canonical).hexdigest(),
            "cms_base64": base64.b64encode(cms).decode("ascii") if cms else None,
            "nguoiky": key.certificate.subject.rfc4514_string() if key is not None else None,
        },
    }


def _to_xml(parent: etree._Element, name: str, value: Any) -> None:
    el = etree.SubElement(parent, name)
    if isinstance(value, dict):
        for k, v in value.items():
            _to_xml(el, k, v)
    elif isinstance(value, list):
        for item in value:
            _to_xml(el, _ITEM.get(name, "item"), item)
    elif value is not None:
        el.text = str(value)


def hsba_xml(hsba: dict[str, Any], key: FacilityKey | None, exported_at: datetime) -> bytes:
    """The XML export (root ``HoSoBenhAn``), enveloped-signed by the facility when a key is given."""
    root = etree.Element("HoSoBenhAn", xuat_luc=_iso(exported_at) or "")
    for k, v in hsba.items():
        if isinstance(v, dict | list):
            _to_xml(root, k, v)
        else:
            root.set(k, "" if v is None else str(v))
    if key is None:
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    return sign_enveloped(root, key)
