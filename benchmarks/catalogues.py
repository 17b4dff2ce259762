"""The ICD-10 catalogue at full size (≈40,000 lines) in PostgreSQL: loading it, and its admin page.

Creates a throw-away database (FILMLESS_BENCH_PG, default
postgresql://postgres@127.0.0.1:5432/), migrates it, writes a 40,000-line
ICD-10 file in the Ministry's layout and loads it with
``emr.catalogues.load_catalogue`` (one version, all lines or none), then a
second version of it (closing the first). Then the catalogue page
(/admin/catalogues/<version>) through the logged-in web UI (Flask test
client, no network): the first page, a page deep in the list, a code prefix,
a word without diacritics, a word matching nothing. The baseline measured in
the same run is the same page of a 5-line department catalogue, so the
ratio is what the 40,000 lines cost. Prints p50/p95 in ms.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emr import Actor, EmrSettings, create_app, open_session, upgrade_database  # noqa: E402
from emr.access.login_guard import LoginGuard  # noqa: E402
from emr.access.users import create_user  # noqa: E402
from emr.catalogues import load_catalogue  # noqa: E402

WORDS = ["Viêm", "phổi", "gan", "thận", "cấp", "mạn tính", "không xác định", "do vi khuẩn", "tổn thương", "u ác"]


def _icd_file(path: Path, lines: int, salt: str) -> None:
    with path.open("w", encoding="utf-8") as fh:
        fh.write("Danh mục mã bệnh theo ICD-10\nSố TT,Mã bệnh,Tên bệnh\n")
        for i in range(lines):
            letter = chr(ord("A") + i // 2000 % 26)
            code = f"{letter}{i // 20 % 100:02d}.{i % 20}"  # unique: .0-.9 and .10-.19 under 100 categories
            name = " ".join(WORDS[(i * k) % len(WORDS)] for k in (1, 3, 7)) + f" {salt} {i}"
            fh.write(f'{i + 1},{code},"{name}"\n')


def _timed(client, url: str, runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = client.get(url)
        times.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, (url, r.status_code)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lines", type=int, default=40000)
    ap.add_argument("--runs", type=int, default=40)
    args = ap.parse_args()
    admin_url = os.environ.get("FILMLESS_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/").rstrip("/")
    name = f"filmless_bench_cat_{uuid.uuid4().hex[:8]}"
    admin = create_engine(
        admin_url.replace("postgresql://", "postgresql+psycopg://", 1) + "/postgres", isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings = EmrSettings(
                data_dir=Path(tmp), database_url=f"{admin_url}/{name}", secret_key_file=Path(tmp) / "key"
            )
            upgrade_database(settings)
            actor = Actor(None, "bench", "admin", None)
            first, second, deps = Path(tmp) / "icd-a.csv", Path(tmp) / "icd-b.csv", Path(tmp) / "khoa.csv"
            _icd_file(first, args.lines, "a")
            _icd_file(second, args.lines, "b")
            deps.write_text("MA_KHOA,TEN_KHOA\nK01,Khám bệnh\nK02,Hồi sức\nK03,Nội\nK19,Ngoại\nK48,CĐHA\n", "utf-8")
            with open_session(settings) as s:
                create_user(s, actor, "bench", "bench-password-2026", "admin", "Bench")
                s.commit()
                t0 = time.perf_counter()
                v1 = load_catalogue(s, actor, "icd10", first, valid_from=date(2020, 1, 1))
                load_a = time.perf_counter() - t0
                t0 = time.perf_counter()
                v2 = load_catalogue(s, actor, "icd10", second, valid_from=date(2026, 1, 1))
                load_b = time.perf_counter() - t0
                dep = load_catalogue(s, actor, "department", deps, valid_from=date(2020, 1, 1)).version_id
            print(f"load {args.lines} ICD-10 lines: first version {load_a:.1f} s, second (closes it) {load_b:.1f} s")
            print(f"versions: {v1.version_id} ({v1.entries} lines), {v2.version_id} ({v2.entries} lines)")
            app = create_app(settings)
            app.extensions["emr.login_guard"] = LoginGuard(rate_per_minute=10**6, burst=10**6)
            client = app.test_client()
            page = client.get("/login").get_data(as_text=True)
            token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
            client.post("/login", data={"username": "bench", "password": "bench-password-2026", "csrf_token": token})
            base50, base95 = _timed(client, f"/admin/catalogues/{dep}", args.runs)
            print(f"baseline: 5-line catalogue page  p50 {base50:6.1f} ms  p95 {base95:6.1f} ms")
            vid = v2.version_id
            cases = {
                "first page": f"/admin/catalogues/{vid}",
                "page 700 of 800": f"/admin/catalogues/{vid}?page=700",
                "code prefix 'K2'": f"/admin/catalogues/{vid}?q=K2",
                "word 'viem phoi'": f"/admin/catalogues/{vid}?q=viem+phoi",
                "no match": f"/admin/catalogues/{vid}?q=zzzz",
            }
            for label, url in cases.items():
                p50, p95 = _timed(client, url, args.runs)
                print(f"{label:18s} p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  (x{p50 / base50:.1f} the baseline p50)")
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
