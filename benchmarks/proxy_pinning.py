"""What pinning every DICOMweb request to its study costs, against Orthanc itself, in the same run.

The proxy (issue 10) builds QIDO queries from an allow-list, filters every
QIDO and metadata answer to the pinned study, and relays a frame only after
checking that its series and instance belong to that study (one instance
search per series, cached 30 s). Measured over loopback on a small CT
(--slices × 256², 16-bit) in a local Orthanc:

* frames: --rounds passes fetching every frame of the series, through the
  proxy and straight from Orthanc's /dicom-web (ms per frame, ratio);
* series search and series metadata (ms per request, ratio).

    .venv/bin/python benchmarks/proxy_pinning.py [--slices 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from storage import OrthancProcess, StorageSettings  # noqa: E402
from tests.helpers import free_port  # noqa: E402
from tests.viewer.phantom import make_ct_series  # noqa: E402
from tests.viewer.server import AccessRules, make_app, serve  # noqa: E402

FRAME_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"


def per_request_ms(fetch: Callable[[str], requests.Response], urls: list[str]) -> float:
    t = time.perf_counter()
    for url in urls:
        r = fetch(url)
        if r.status_code != 200:
            raise SystemExit(f"{url}: HTTP {r.status_code}")
    return (time.perf_counter() - t) * 1000 / len(urls)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="filmless-bench-") as tmp:
        settings = replace(StorageSettings(), data_dir=Path(tmp), http_port=free_port(), dicom_port=free_port())
        proc = OrthancProcess(settings)
        store = proc.start()
        try:
            series = make_ct_series(count=args.slices, size=256)
            for blob in series.encoded():
                store.upload(blob)
            auth = (proc.credentials.username, proc.credentials.password)
            app = make_app(store.url, auth, AccessRules())
            with serve(app) as base:
                direct = requests.Session()
                direct.auth = auth
                direct.headers["Accept-Encoding"] = "identity"  # as the proxy asks upstream: no gzip
                proxied = requests.Session()
                study = f"/studies/{series.study_uid}"
                frames = [f"{study}/series/{series.series_uid}/instances/{sop}/frames/1" for sop in series.sop_uids]
                results = {}
                for name, paths, headers in (
                    ("frame", frames, {"Accept": FRAME_ACCEPT}),
                    ("series search", [f"{study}/series"] * 50, {}),
                    ("series metadata", [f"{study}/series/{series.series_uid}/metadata"] * 10, {}),
                ):
                    # Alternate the two paths round by round: a loaded machine slows both alike.
                    proxy_ms, orthanc_ms = [], []
                    for _ in range(args.rounds):
                        proxy_ms.append(
                            per_request_ms(
                                lambda p, h=headers: proxied.get(f"{base}/dicomweb{p}", headers=h, timeout=60), paths
                            )
                        )
                        orthanc_ms.append(
                            per_request_ms(
                                lambda p, h=headers: direct.get(f"{store.url}/dicom-web{p}", headers=h, timeout=60),
                                paths,
                            )
                        )
                    results[name] = (statistics.median(proxy_ms), statistics.median(orthanc_ms))
        finally:
            proc.stop()
    print(f"{args.slices} CT slices 256×256, median of {args.rounds} passes, loopback")
    for name, (via_proxy, via_orthanc) in results.items():
        print(
            f"{name:16s} proxy {via_proxy:7.2f} ms  Orthanc direct {via_orthanc:7.2f} ms  "
            f"ratio {via_proxy / via_orthanc:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
