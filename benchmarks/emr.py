"""Patient search on 1,000,000 patients in PostgreSQL, through the HTTP API.

Creates a throw-away database (FILMLESS_BENCH_PG, default
postgresql://postgres@127.0.0.1:5432/), migrates it, bulk-loads patients with
COPY, serves the EMR with waitress on a free port and measures
``GET /api/patients?q=...`` for name prefixes with and without diacritics
and for CCCD numbers. Prints p50/p95 per kind (target p95 < 50 ms).

Then the admin's audit page (issue 13) on a year of audit rows (1,000,000 by
default, COPY-loaded): the newest page, each filter (user, patient, action,
a month's date range), an old page by id, and the CSV export's first 2,000
rows, through the logged-in web UI; the baseline measured in the same run is
the login page (what any page costs on this server). Target p95 < 100 ms.

Then the operations page (issue 16 §3) on a year of a provincial hospital's
imaging (``--ops-per-day`` studies a day, 600 by default: 219,000 orders,
studies, reports and signed versions, COPY-loaded): the page through the web
UI, its service functions one by one, and a /metrics scrape, against the same
login-page baseline. ``--only-ops`` skips the patient search and audit parts
(it still loads ``--patients`` patients for the orders to point at).
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


ACTIONS = ["patient.view", "patient.search", "study.view", "document.view", "order.create", "document.sign_step",
           "login", "share.view", "encounter.view", "audit.view"]  # fmt: skip


def load_audit(url: str, rows: int, patients: int) -> float:
    """A year of audit rows (oldest first, as the log grows), COPY-loaded (the hash chain is not
    what is measured here)."""
    eng = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    rng = random.Random(13)
    start = time.perf_counter()
    first = time.mktime((2025, 12, 1, 0, 0, 0, 0, 0, 0))
    step = 365 * 86400 / rows
    with eng.begin() as conn:
        raw = conn.connection.driver_connection
        with raw.cursor() as cur:
            cur.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
            cur.execute("SELECT coalesce(max(id), 0) FROM audit_log")
            start_id = int(cur.fetchone()[0])  # type: ignore[index]
            with cur.copy(
                "COPY audit_log (id, at, user_id, username, role, action, outcome, patient_id, object_type, "
                "object_id, client_ip, details, prev_hash, hash) FROM STDIN"
            ) as copy:
                for i in range(rows):
                    at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(first + i * step)) + ".000000Z"
                    user = rng.randrange(1, 60)
                    copy.write_row((start_id + 1 + i, at, user, f"user{user}", "physician", rng.choice(ACTIONS),
                                    "denied" if rng.random() < 0.01 else "success", rng.randrange(1, patients + 1),
                                    "patient", str(i), "10.0.0.5", "{}", "0" * 64, "0" * 64))  # fmt: skip
            cur.execute("ALTER TABLE audit_log ENABLE TRIGGER USER")
            # New rows (each audit page view is audited) continue after the loaded ones.
            cur.execute("UPDATE audit_head SET last_id = %s, count = count + %s", (start_id + rows, rows))
    with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE audit_log"))
    eng.dispose()
    return time.perf_counter() - start


def _web_login(base: str, username: str, password: str) -> requests.Session:
    import re

    http = requests.Session()
    form = http.get(f"{base}/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
    r = http.post(f"{base}/login", data={"username": username, "password": password, "csrf_token": token},
                  allow_redirects=False)  # fmt: skip
    assert r.status_code == 302, r.status_code
    return http


def measure_pages(http: requests.Session, url: str, params: list[dict[str, str]], warm: int = 5,
                  stream_bytes: int = 0) -> list[float]:  # fmt: skip
    """Milliseconds per request (for a stream: until ``stream_bytes`` arrived)."""
    for p in params[:warm]:
        http.get(url, params=p).raise_for_status()
    times = []
    for p in params:
        t0 = time.perf_counter()
        if stream_bytes:
            with http.get(url, params=p, stream=True) as r:
                r.raise_for_status()
                got = 0
                for chunk in r.iter_content(65536):
                    got += len(chunk)
                    if got >= stream_bytes:
                        break
        else:
            http.get(url, params=p).raise_for_status()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def _p95(times: list[float]) -> float:
    return statistics.quantiles(times, n=20)[18]


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
    ap.add_argument("--audit-rows", type=int, default=1_000_000)
    ap.add_argument("--pages", type=int, default=60, help="requests per audit-page kind")
    ap.add_argument("--ops-per-day", type=int, default=600, help="studies a day for the operations page year")
    ap.add_argument("--only-ops", action="store_true", help="only the operations page figures")
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
            if not args.only_ops:
                print(f"{'query':<28} {'p50 ms':>8} {'p95 ms':>8}")
                for label, qs in kinds.items():
                    times = measure(base, token, qs)
                    p95 = statistics.quantiles(times, n=20)[18]
                    print(f"{label:<28} {statistics.median(times):8.1f} {p95:8.1f}")
                audit_page_figures(settings, base, args)
            ops_page_figures(settings, base, args, user.id)
            # Let the worker threads finish before the trigger socket goes away.
            server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
            server.close()
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return 0


def audit_page_figures(settings: EmrSettings, base: str, args: argparse.Namespace) -> None:
    secs = load_audit(settings.database_url, args.audit_rows, args.patients)
    print(f"\nloaded {args.audit_rows:,} audit rows with COPY in {secs:.1f} s")
    with open_session(settings) as s:
        create_user(s, Actor(None, "bench", "admin", None), "benchadmin", "bench-password-1", "admin", "Benchmark")
    http = _web_login(base, "benchadmin", "bench-password-1")
    rng = random.Random(17)
    n = args.pages
    with open_session(settings) as s:
        mid = int(s.execute(text("SELECT max(id) / 2 FROM audit_log")).scalar_one())
    months = [f"2026-{m:02d}" for m in range(1, 12)]
    kinds: dict[str, list[dict[str, str]]] = {
        "newest page": [{} for _ in range(n)],
        "user": [{"user": f"user{rng.randrange(1, 60)}"} for _ in range(n)],
        "patient (code)": [{"patient": f"BN{rng.randrange(1, args.patients + 1):08d}"} for _ in range(n)],
        "action": [{"action": rng.choice(ACTIONS)} for _ in range(n)],
        "one month": [{"date_from": f"{m}-01", "date_to": f"{m}-28"} for m in (rng.choice(months) for _ in range(n))],
        "user + month": [
            {"user": f"user{rng.randrange(1, 60)}", "date_from": f"{m}-01", "date_to": f"{m}-28"}
            for m in (rng.choice(months) for _ in range(n))
        ],
        "old page (before=id)": [{"before": str(rng.randrange(2, mid * 2))} for _ in range(n)],
    }
    floor = measure_pages(http, f"{base}/login", [{} for _ in range(n)])
    print(f"baseline (login page, same server): p50 {statistics.median(floor):.1f} ms, p95 {_p95(floor):.1f} ms")
    print(f"{'audit page':<28} {'p50 ms':>8} {'p95 ms':>8} {'p95 / baseline':>15}")
    for label, params in kinds.items():
        times = measure_pages(http, f"{base}/admin/audit", params)
        print(f"{label:<28} {statistics.median(times):8.1f} {_p95(times):8.1f} {_p95(times) / _p95(floor):14.1f}x")
    times = measure_pages(http, f"{base}/admin/audit.csv", [{"action": rng.choice(ACTIONS)} for _ in range(10)],
                          warm=1, stream_bytes=2000 * 60)  # fmt: skip
    print(f"{'CSV, first ~2,000 rows':<28} {statistics.median(times):8.1f} {_p95(times):8.1f} "
          f"{_p95(times) / _p95(floor):14.1f}x")  # fmt: skip


MODALITY_MIX = ["CT"] * 30 + ["DX"] * 35 + ["US"] * 20 + ["MR"] * 8 + ["MG"] * 4 + ["XA"] * 3


def load_ops_year(url: str, per_day: int, patients: int, user_id: int) -> tuple[float, int]:
    """A year of imaging, oldest first: order → study (minutes to hours later) → report → signature.
    The last two days' studies are not reported yet (the unread queue). Returns (seconds, orders)."""
    from datetime import datetime

    eng = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    rng = random.Random(23)
    now = datetime.utcnow().replace(microsecond=0)
    first = now - timedelta(days=365)
    n = per_day * 365
    start = time.perf_counter()
    with eng.begin() as conn:
        raw = conn.connection.driver_connection
        with raw.cursor() as cur:
            cur.execute("SELECT id FROM departments LIMIT 1")
            dep = cur.fetchone()
            if dep is None:
                cur.execute("INSERT INTO departments (code, name) VALUES ('K19', 'Khoa Nội') RETURNING id")
                dep = cur.fetchone()
            cur.execute(
                "INSERT INTO encounters (patient_id, visit_code, kind, department_id, attending_id, status, "
                "admitted_at, record_type, created_by, created_at) VALUES (1, 'BENCH-OPS', 'outpatient', %s, %s, "
                "'open', %s, 'ordinary', %s, %s) RETURNING id", (dep[0], user_id, first, user_id, first))  # fmt: skip
            encounter = cur.fetchone()[0]  # type: ignore[index]
            orders, studies, docs, versions = [], [], [], []
            for i in range(1, n + 1):
                ordered = first + timedelta(seconds=i * 365 * 86400 / n)
                modality = rng.choice(MODALITY_MIX)
                imaged = ordered + timedelta(minutes=rng.expovariate(1 / 45))
                uid = f"1.2.826.0.1.3680043.10.1{i}"
                recent = (now - imaged).total_seconds() < 2 * 86400
                status = "images_available" if recent else "reported"
                orders.append((i, rng.randrange(1, patients + 1), encounter, f"B{i:09d}", uid, modality, "Chụp",
                               "routine", status, user_id, ordered, ordered))  # fmt: skip
                studies.append((i, f"bench-{i}", uid, f"B{i:09d}", imaged.strftime("%Y%m%d"), modality, i,
                                orders[-1][1], "linked", imaged, "accession"))  # fmt: skip
                if not recent:
                    reported = imaged + timedelta(minutes=rng.expovariate(1 / 240))
                    signed = reported + timedelta(minutes=rng.expovariate(1 / 20))
                    docs.append((i, orders[-1][1], encounter, i, "radiology_report", "signed", 1, "ordinary", "10y",
                                 user_id, reported))  # fmt: skip
                    versions.append((i, i, 1, "{}", "0" * 64, "signed", True, user_id, reported, signed, user_id))
            for table, columns, rows in (
                ("imaging_orders", "id, patient_id, encounter_id, accession_number, study_instance_uid, modality, "
                 "procedure_name, urgency, status, ordered_by, ordered_at, scheduled_at", orders),
                ("studies", "id, orthanc_id, study_instance_uid, accession_number, study_date, modalities, order_id, "
                 "patient_id, state, first_seen_at, link_method", studies),
                ("documents", "id, patient_id, encounter_id, order_id, form_type, status, current_version, "
                 "record_type, retention_class, created_by, created_at", docs),
                ("document_versions", "id, document_id, number, content_json, content_sha256, status, locked, "
                 "created_by, created_at, signed_at, signed_by", versions),
            ):
                with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
    with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ("imaging_orders", "studies", "documents", "document_versions"):
            conn.execute(text(f"VACUUM ANALYZE {table}"))
    eng.dispose()
    return time.perf_counter() - start, n


def ops_page_figures(settings: EmrSettings, base: str, args: argparse.Namespace, user_id: int) -> None:
    from emr.ops import service as ops
    from emr.ops.metrics import exposition

    secs, n = load_ops_year(settings.database_url, args.ops_per_day, args.patients, user_id)
    print(f"\nloaded a year of imaging ({n:,} orders, studies, reports, signatures) with COPY in {secs:.1f} s")
    with open_session(settings) as s:
        if s.execute(text("SELECT 1 FROM users WHERE username = 'benchadmin'")).first() is None:
            create_user(s, Actor(None, "bench", "admin", None), "benchadmin", "bench-password-1", "admin", "Benchmark")
    http = _web_login(base, "benchadmin", "bench-password-1")
    n_pages = max(10, args.pages // 3)
    floor = measure_pages(http, f"{base}/login", [{} for _ in range(n_pages)])
    print(f"baseline (login page, same server): p50 {statistics.median(floor):.1f} ms, p95 {_p95(floor):.1f} ms")
    print(f"{'operations page':<28} {'p50 ms':>8} {'p95 ms':>8} {'p95 / baseline':>15}")
    times = measure_pages(http, f"{base}/admin/ops", [{} for _ in range(n_pages)], warm=2)
    print(f"{'/admin/ops (whole page)':<28} {statistics.median(times):8.1f} {_p95(times):8.1f} "
          f"{_p95(times) / _p95(floor):14.1f}x")  # fmt: skip
    token = (settings.data_dir / "metrics-token").read_text().strip()
    scrape = requests.Session()
    scrape.headers["Authorization"] = f"Bearer {token}"
    times = measure_pages(scrape, f"{base}/metrics", [{} for _ in range(n_pages)], warm=2)
    print(f"{'/metrics (scrape)':<28} {statistics.median(times):8.1f} {_p95(times):8.1f} "
          f"{_p95(times) / _p95(floor):14.1f}x")  # fmt: skip
    parts = {
        "studies_per_day": lambda s: ops.studies_per_day(s, 30),
        "turnaround": lambda s: ops.turnaround(s, 30),
        "unread_by_age": ops.unread_by_age,
        "storage_outlook": lambda s: ops.storage_outlook(s, used_bytes=10**12, stored_studies=n, free_bytes=10**13),
        "outbox_health": ops.outbox_health,
        "exposition (no HTTP)": exposition,
        # What the page's first visit of a minute costs (the turnaround not reused): its cold figure.
        "whole page, uncached": lambda s: ops.operations_overview(s, turnaround_ttl=0),
    }
    with open_session(settings) as s:
        for label, fn in parts.items():
            runs = []
            for _ in range(7):
                t0 = time.perf_counter()
                fn(s)
                runs.append((time.perf_counter() - t0) * 1000)
            print(f"{'  ' + label:<28} {statistics.median(runs):8.1f} {max(runs):8.1f}")


if __name__ == "__main__":
    sys.exit(main())
