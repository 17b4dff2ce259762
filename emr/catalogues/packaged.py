"""The administrative units from the ``vietnam-provinces`` package instead of a hand-typed list.

Its data (the National Statistics Office's codes after the 1 July 2025
reorganisation: 34 provinces, communes directly under them) is the list
``filmless emr load-catalogue admin_unit --package`` loads. The package has
no old-to-new table; the mapping is loaded from the Statistics Office's
conversion file (kind ``admin_unit_map``).
"""

from __future__ import annotations

import hashlib

from .loader import Line

__all__ = ["admin_units_from_package"]


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
