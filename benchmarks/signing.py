"""Signing latency: PAdES B-LT with an RFC 3161 timestamp from a local TSA.

Prints p50/p95 latency and signatures per second for (a) a PKCS#12 key and
(b) a key on a SoftHSM2 token (PKCS#11). Each signature is a full
``emr.signing.sign_pdf`` call: certificate status check against the CRL,
CMS signature, timestamp request over HTTP to a TSA running in another
process, revocation data embedded, incremental update written. Target: p95
< 300 ms. Usage: ``python benchmarks/signing.py [N]`` (default 40 per signer).
"""

from __future__ import annotations

import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emr.signing import (  # noqa: E402
    SOFTHSM_LIBRARY,
    RenderInput,
    SignerSlot,
    SigningContext,
    enroll_dev_token_key,
    init_dev_pki,
    load_pkcs12_signer,
    open_token_signer,
    render_document_pdf,
    sign_pdf,
    verify_pdf,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _measure(label: str, n: int, sign: Callable[[], bytes]) -> None:
    sign()  # warm-up: imports, font cut, TSA client
    times = []
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(n):
        t0 = time.perf_counter()
        sign()
        times.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    cpu = (time.process_time() - cpu_start) / n
    times.sort()
    p95 = times[max(0, int(round(0.95 * n)) - 1)]
    print(f"{label:<34} n={n:<4} p50 {statistics.median(times) * 1000:6.1f} ms   "
          f"p95 {p95 * 1000:6.1f} ms   {n / total:5.1f} signatures/s   "
          f"CPU {cpu * 1000:5.1f} ms/signature   "
          f"{'OK' if p95 < 0.300 else 'ABOVE TARGET'} (p95 < 300 ms)")


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    logging.disable(logging.WARNING)
    load = os.getloadavg()[0]
    busy = "  (busy machine: latencies inflated)" if load > (os.cpu_count() or 1) else ""
    print(f"load average {load:.1f} on {os.cpu_count()} CPUs{busy}")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        port = _free_port()
        tsa = subprocess.Popen(
            [sys.executable, "-m", "emr.signing", "tsa", str(base / "pki"), str(port)],
            stdout=subprocess.PIPE, text=True,
        )
        try:
            url = (tsa.stdout.readline() if tsa.stdout else "").strip()
            pki = init_dev_pki(base / "pki", crl_url=f"{url}/crl")
            context = SigningContext(
                trust_anchors=[pki.ca_certificate()], tsa_url=f"{url}/tsa",
                crls=[pki.crl()], allow_fetching=False,
            )
            pdf = render_document_pdf(RenderInput(
                hospital_name="Bệnh viện filmless", patient_name="Nguyễn Thị Hồng Nhung",
                patient_code="BN000123", patient_birth_date="14/03/1985", patient_sex="F",
                title="Kết quả chụp cắt lớp vi tính", document_type="Phiếu kết quả CĐHA", version=1,
                sections=[("Mô tả", "Nhu mô não không thấy bất thường."), ("Kết luận", "Bình thường.")],
                signers=[SignerSlot("radiologist", "Bác sĩ đọc kết quả", "BS. Nguyễn Văn An")],
                verification_code="bench0001", public_url="http://127.0.0.1:8080",
            ))
            print(f"one-page report {len(pdf)} bytes; local TSA in a separate process at {url}")
            user = pki.users["bs.an"]
            signer = load_pkcs12_signer(user.p12_bytes(), user.password())
            signed = sign_pdf(pdf, "radiologist", signer, context)
            assert verify_pdf(signed, [pki.ca_certificate()]).valid
            _measure("PKCS#12 + timestamp (B-LT)", n, lambda: sign_pdf(pdf, "radiologist", signer, context))

            if not Path(SOFTHSM_LIBRARY).exists():
                print("SoftHSM2 not installed: token figures skipped (apt-get install softhsm2)")
                return 0
            (base / "tokens").mkdir()
            conf = base / "softhsm2.conf"
            conf.write_text(f"directories.tokendir = {base / 'tokens'}\nobjectstore.backend = file\n")
            os.environ["SOFTHSM2_CONF"] = str(conf)
            subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "bench",
                            "--pin", "246810", "--so-pin", "13579246"], check=True, capture_output=True)
            enroll_dev_token_key(pki, "bench", "246810", "bench.key", "BS. Phạm Minh Đức")
            with open_token_signer("bench", "246810", "bench.key", chain=[pki.ca_certificate()]) as token:
                signed = sign_pdf(pdf, "radiologist", token, context)
                assert verify_pdf(signed, [pki.ca_certificate()]).valid
                _measure("SoftHSM2 token + timestamp (B-LT)", n,
                         lambda: sign_pdf(pdf, "radiologist", token, context))
            t0 = time.perf_counter()
            for _ in range(10):
                verify_pdf(signed, [pki.ca_certificate()])
            print(f"verification of one signature: {(time.perf_counter() - t0) * 100:.1f} ms average")
        finally:
            tsa.terminate()
            tsa.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
