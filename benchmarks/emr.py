"""Patient search on 1,000,000 patients in PostgreSQL, through the HTTP API.

Creates a throw-away database (FILMLESS_BENCH_PG, default
postgresql://postgres@127.0.0.1:5432/), migrates it, bulk-loads patients with
COPY, serves the EMR with waitress on a free port and measures
``GET /api/patients?q=...`` for name prefixes with and without diacritics
and for CCCD numbers. Prints p50/p95 per kind (target p95 < 50 ms).
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

import requests
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emr import Actor, EmrSettings, create_app, open_session, upgrade_database  # noqa: E402
from emr.access.users import create_token, create_user  # noqa: E402
from emr.core.identifiers import PROVINCE_CODES, cccd_sex_century_digit  # noqa: E402
from emr.core.normalize import fold  # noqa: E402

FAMILY = [
    "Nguyễn",
    "Trần",
    "Lê",
    "Phạm",
    "Hoàng",
    "Huỳnh",
    "Phan",
    "Vũ",
    "Võ",
    "Đặng",
    "Bùi",
    "Đỗ",
    "Hồ",
    "Ngô",
    "Dương",
    "Lý",
    "Đinh",
    "Lâm",
    "Mai",
    "Trịnh",
    "Đoàn",
    "Cao",
    "Tạ",
    "Hà",
    "Châu",
    "Quách",
    "Lương",
    "Tô",
]
MIDDLE = [
    "Văn",
    "Thị",
    "Hữu",
    "Đức",
    "Minh",
    "Ngọc",
    "Thanh",
    "Quốc",
    "Gia",
    "Hoàng",
    "Xuân",
    "Thu",
    "Kim",
    "Bảo",
    "Anh",
    "Mạnh",
    "Thành",
    "Hải",
    "Hồng",
    "Phương",
]
GIVEN = [
    "An",
    "Anh",
    "Bình",
    "Châu",
    "Cường",
    "Dũng",
    "Dung",
    "Đạt",
    "Giang",
    "Hà",
    "Hải",
    "Hạnh",
    "Hiếu",
    "Hòa",
    "Hùng",
    "Hương",
    "Huy",
    "Khánh",
    "Khoa",
    "Lan",
    "Linh",
    "Long",
    "Mai",
    "Minh",
    "My",
    "Nam",
    "Ngân",
    "Nghĩa",
    "Ngọc",
    "Nhung",
    "Oanh",
    "Phúc",
    "Phương",
    "Quân",
    "Quang",
    "Quyên",
    "Sơn",
    "Tâm",
    "Thảo",
    "Thắng",
    "Thành",
    "Thủy",
    "Tiến",
    "Trang",
    "Trinh",
    "Trung",
    "Tú",
    "Tuấn",
    "Tuyết",
    "Uyên",
    "Vân",
    "Việt",
    "Vinh",
    "Xuân",
    "Yến",
]
PROVINCES = sorted(PROVINCE_CODES)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rows(n: int, rng: random.Random):  # type: ignore[no-untyped-def]
    base = date(1930, 1, 1)
    for i in range(1, n + 1):
        family, given = rng.choice(FAMILY), f"{rng.choice(MIDDLE)} {rng.choice(MIDDLE)} {rng.choice(GIVEN)}"
        if rng.random() < 0.4:
            given = f"{rng.choice(MIDDLE)} {rng.choice(GIVEN)}"
        full = f"{family} {given}"
        sex = rng.choice("MF")
        born = base + timedelta(days=rng.randrange(0, 34000))
        # Unique: two rows share province (i mod 63) and serial (i mod 10^6) only 63 million rows apart.
        digit = cccd_sex_century_digit(sex, born.year)
        cccd = f"{PROVINCES[i % len(PROVINCES)]}{digit}{born.year % 100:02d}{i % 10**6:06d}"
        yield (f"BN{i:08d}", full, family, given, fold(full), fold(given), born.isoformat(), sex, cccd)


def load(url: str, n: int) -> float:
    eng = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    rng = random.Random(7)
    start = time.perf_counter()
    with eng.begin() as conn:
        raw = conn.connection.driver_connection
        with raw.cursor() as cur:
            cur.execute("DROP INDEX ix_patients_search_name, ix_patients_search_given")
            with cur.copy(
                "COPY patients (code, full_name, family_name, given_name, search_name, search_given, "
                "birth_date, sex, cccd, birth_year_only, nationality_code, ethnicity_code, status, "
                "created_at, updated_at) FROM STDIN"
            ) as copy:
                for row in _rows(n, rng):
                    copy.write_row((*row, False, "000", "01", "active", "2026-01-01", "2026-01-01"))
            cur.execute("CREATE INDEX ix_patients_search_name ON patients (search_name)")
            cur.execute("CREATE INDEX ix_patients_search_given ON patients (search_given)")
            cur.execute("INSERT INTO counters (name, value) VALUES ('patient', %s)", (n,))
    with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE patients"))
    eng.dispose()
    return time.perf_counter() - start


def measure(base: str, token: str, queries: list[str], warm: int = 20) -> list[float]:
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {token}"
    for q in queries[:warm]:
        s.get(f"{base}/api/patients", params={"q": q}).raise_for_status()
    times = []
    for q in queries:
        t0 = time.perf_counter()
        r = s.get(f"{base}/api/patients", params={"q": q})
        times.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--patients", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=300)
    args = ap.parse_args()
    admin_url = os.environ.get("FILMLESS_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/").rstrip("/")
    name = f"filmless_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(
        admin_url.replace("postgresql://", "postgresql+psycopg://", 1) + "/postgres", isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"{admin_url}/{name}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings = EmrSettings(
                data_dir=Path(tmp), database_url=url, secret_key_file=Path(tmp) / "key", port=_free_port()
            )
            upgrade_database(settings)
            secs = load(url, args.patients)
            print(f"loaded {args.patients:,} patients with COPY in {secs:.1f} s")
            with open_session(settings) as s:
                user = create_user(
                    s, Actor(None, "bench", "admin", None), "bench", "bench-password-1", "records_clerk", "Benchmark"
                )
                token = create_token(s, Actor(None, "bench", "admin", None), user.id, "bench")
            from waitress.server import create_server

            server = create_server(create_app(settings), host="127.0.0.1", port=settings.port, threads=4)
            threading.Thread(target=server.run, daemon=True).start()
            base = f"http://127.0.0.1:{settings.port}"
            rng = random.Random(11)
            names = [f"{rng.choice(FAMILY)} {rng.choice(MIDDLE)}" for _ in range(args.queries)]
            kinds = {
                "name prefix, diacritics": names,
                "name prefix, no diacritics": [fold(n) for n in names],
                "given-name prefix": [fold(rng.choice(GIVEN)) for _ in range(args.queries)],
                "family name only": [rng.choice(FAMILY) for _ in range(args.queries)],
                "CCCD": [],
            }
            with open_session(settings) as s:
                kinds["CCCD"] = [
                    r[0] for r in s.execute(text(f"SELECT cccd FROM patients ORDER BY random() LIMIT {args.queries}"))
                ]
            print(f"{'query':<28} {'p50 ms':>8} {'p95 ms':>8}")
            for label, qs in kinds.items():
                times = measure(base, token, qs)
                p95 = statistics.quantiles(times, n=20)[18]
                print(f"{label:<28} {statistics.median(times):8.1f} {p95:8.1f}")
            # Let the worker threads finish before the trigger socket goes away.
            server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
            server.close()
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
