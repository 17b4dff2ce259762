"""Write the old-to-new commune mapping of 1 July 2025 as a catalogue file, from the
``vietnamadminunits`` package's data (MIT, https://github.com/tranngocminhhieu/vietnamadminunits).

That package keys its conversion table by unit names; this joins it with the
codes in its own datasets (63-province and 34-province lists) and keeps only
new communes that ``vietnam-provinces`` (the units filmless loads) also has,
so ``load-catalogue admin_unit_map`` accepts every line. Used once to make
``emr/catalogues/data/admin_unit_map_2025.csv.gz`` (loaded by
``filmless emr load-catalogue admin_unit_map --package``); run it again on a
newer release of the package:

    pip download --no-deps vietnamadminunits==1.0.4 && unzip vietnamadminunits-*.whl -d vau
    .venv/bin/python scripts/admin_unit_map.py vau/vietnamadminunits/data emr/catalogues/data/admin_unit_map_2025.csv.gz
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import sqlite3
import sys
from pathlib import Path


def main(data_dir: Path, out: Path) -> int:
    from vietnam_provinces import Ward

    known = {f"{int(w.code):05d}" for w in Ward.iter_all()}
    db = sqlite3.connect(data_dir / "dataset.db")
    converter = json.loads((data_dir / "converter_2025.json").read_text("utf-8"))
    old = {
        f"{pk}_{dk}_{wk}": (code, f"{w}, {d}, {p}")
        for p, d, w, pk, dk, wk, code in db.execute(
            "select province, district, ward, provinceKey, districtKey, wardKey, wardCode from admin_units_legacy"
        )
    }
    new = {(pk, wk): code for pk, wk, code in db.execute("select provinceKey, wardKey, wardCode from admin_units")}
    pairs: set[tuple[str, str, str]] = set()
    for province, wards in converter["DICT_PROVINCE_WARD_NO_DIVIDED"].items():
        for ward, old_keys in wards.items():
            for key in old_keys:
                if key in old and (province, ward) in new:
                    pairs.add((*old[key], new[(province, ward)]))
    for province, olds in converter["DICT_PROVINCE_WARD_DIVIDED"].items():
        for key, parts in olds.items():
            for part in parts:
                if key in old and (province, part["newWardKey"]) in new:
                    pairs.add((*old[key], new[(province, part["newWardKey"])]))
    kept = sorted(p for p in pairs if p[2] in known)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["MA_XA_CU", "TEN_XA_CU", "MA_XA_MOI"])
    writer.writerows(kept)
    out.write_bytes(gzip.compress(buf.getvalue().encode("utf-8"), mtime=0))
    print(
        f"{len(kept)} lines ({len({p[0] for p in kept})} old communes); left out {len(pairs) - len(kept)} "
        f"whose new code vietnam-provinces does not have"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1]), Path(sys.argv[2])))
