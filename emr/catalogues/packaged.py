"""The administrative units from the ``vietnam-provinces`` package instead of a hand-typed list.

Its data (the National Statistics Office's codes after the 1 July 2025
reorganisation: 34 provinces, communes directly under them) is the list
``filmless emr load-catalogue admin_unit --package`` loads. That package has
no old-to-new table: ``data/admin_unit_map_2025.csv.gz`` is made from the
``vietnamadminunits`` package's conversion data (MIT, notice in
``data/LICENSE.vietnamadminunits``) by ``scripts/admin_unit_map.py`` and is
what ``load-catalogue admin_unit_map --package`` loads; a hospital may load
the Statistics Office's own conversion file instead.

Two short lists of the patient's demographics are shipped as published
(``load-catalogue ethnicity|religion --package``), and their names are shown
even before a site loads them (:func:`shipped_name`):

- ``data/ethnicity_vn_core_race.csv``: MA_DANTOC, the Statistics Office's
  list of QĐ 121-TCTK/PPCĐ (02/03/1979) that the QĐ 130/4750 annex names, as
  the Ministry's VN Core FHIR IG publishes it (CodeSystem vn-core-race,
  http://fhir.ehealth.gov.vn/core/CodeSystem/vn-core-race, github.com/hl7vn/vn-core-ig,
  input/resources/CodeSystem-vn-core-race-v1.0.xml): 54 groups plus 55 "Người
  nước ngoài" and 99 "Không rõ". Not the 2008 re-ordering (QĐ 1019/QĐ-TCTK:
  04 Mường, 06 Hoa), which MA_DANTOC does not use.
- ``data/religion_gso_2008.csv``: the Statistics Office's list of religions
  (QĐ 1019/QĐ-TCTK, 12/11/2008, with Mặc Môn added by QĐ 132/QĐ-TGCP 2014) as
  reprinted in QCVN 109 annex G (qcvn109.gov.vn). The VN Core IG's own religion
  list (vn-core-ethic, 1-digit codes) is unfinished and agrees with it for codes 1-3
  (its 4, "Hồi giáo", is defined with four Cao Đài branches; see emr.exports.fhir).

No occupation list is shipped: the MA_NGHE_NGHIEP list of QĐ 34/2020/QĐ-TTg
was not found as a published table; a site loads it as a file.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
from functools import cache
from pathlib import Path

from .loader import Line

__all__ = [
    "admin_units_from_package",
    "admin_unit_map_from_package",
    "demographics_from_package",
    "shipped_name",
    "MAP_FILE",
    "SHIPPED",
]

MAP_FILE = Path(__file__).with_name("data") / "admin_unit_map_2025.csv.gz"
MAP_SOURCE = "vietnamadminunits 1.0.4 (converter_2025), scripts/admin_unit_map.py"
_DATA = Path(__file__).with_name("data")
# kind -> (file, source label stored with the version)
SHIPPED: dict[str, tuple[Path, str]] = {
    "ethnicity": (_DATA / "ethnicity_vn_core_race.csv", "GSO QD 121-TCTK/PPCD 1979 (VN Core IG vn-core-race 1.0)"),
    "religion": (_DATA / "religion_gso_2008.csv", "GSO QD 1019/QD-TCTK 2008 (QCVN 109 annex G)"),
}


def admin_units_from_package() -> tuple[list[Line], str, str]:
    """(lines, source label, sha256 of the package's data file)."""
    import vietnam_provinces as vp
    from vietnam_provinces import Province, Ward

    provinces = {p.code: p.name for p in Province.iter_all()}
    lines = [
        Line(i, f"{int(w.code):05d}", w.name, f"{int(w.province_code):02d}", provinces[w.province_code])
        for i, w in enumerate(sorted(Ward.iter_all(), key=lambda w: int(w.code)), start=1)
    ]
    digest = hashlib.sha256(vp.FLAT_DIVISIONS_JSON_PATH.read_bytes()).hexdigest()
    return lines, f"vietnam-provinces {vp.__version__} (data {vp.__data_version__})", digest


def admin_unit_map_from_package() -> tuple[list[Line], str, str]:
    """(lines, source label, sha256) of the shipped old-to-new commune mapping."""
    data = MAP_FILE.read_bytes()
    rows = csv.reader(gzip.decompress(data).decode("utf-8").splitlines())
    next(rows)  # MA_XA_CU, TEN_XA_CU, MA_XA_MOI
    lines = [Line(i, old, name, new) for i, (old, name, new) in enumerate(rows, start=2)]
    return lines, MAP_SOURCE, hashlib.sha256(data).hexdigest()


def demographics_from_package(kind: str) -> tuple[list[Line], str, str]:
    """(lines, source label, sha256) of a shipped demographic list (``SHIPPED``: ethnicity, religion)."""
    path, source = SHIPPED[kind]
    data = path.read_bytes()
    rows = csv.reader(data.decode("utf-8").splitlines())
    next(rows)  # code, name
    lines = [Line(i, code, name) for i, (code, name) in enumerate(rows, start=2)]
    return lines, source, hashlib.sha256(data).hexdigest()


@cache
def _shipped_names(kind: str) -> dict[str, str]:
    return {ln.code: ln.name for ln in demographics_from_package(kind)[0]} if kind in SHIPPED else {}


def shipped_name(kind: str, code: str) -> str | None:
    """The name of ``code`` in the list shipped for ``kind`` (None: not shipped, or not in it)."""
    return _shipped_names(kind).get(code)
