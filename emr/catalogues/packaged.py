"""The administrative units from the ``vietnam-provinces`` package instead of a hand-typed list.

Its data (the National Statistics Office's codes after the 1 July 2025
reorganisation: 34 provinces, communes directly under them) is the list
``filmless emr load-catalogue admin_unit --package`` loads. That package has
no old-to-new table: ``data/admin_unit_map_2025.csv.gz`` is made from the
``vietnamadminunits`` package's conversion data (MIT, notice in
``data/LICENSE.vietnamadminunits``) by ``scripts/admin_unit_map.py`` and is
what ``load-catalogue admin_unit_map --package`` loads; a hospital may load
the Statistics Office's own conversion file instead.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
from pathlib import Path

from .loader import Line

__all__ = ["admin_units_from_package", "admin_unit_map_from_package", "MAP_FILE"]

MAP_FILE = Path(__file__).with_name("data") / "admin_unit_map_2025.csv.gz"
MAP_SOURCE = "vietnamadminunits 1.0.4 (converter_2025), scripts/admin_unit_map.py"


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
