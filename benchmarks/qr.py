"""Retrieve speed: C-MOVE of a CT study to a workstation, via the filmless gateway vs. a stock Orthanc.

Both run in the same process tree and the same run, on the same generated
study (default 50 slices of 512x512 16-bit):

  - baseline: a stock Orthanc with its DICOM server on, asked by DCMTK
    `movescu` to C-MOVE the study to a `storescp` workstation (Orthanc's own
    C-MOVE SCP, synchronous);
  - filmless: `python -m filmless gateway` (as in production: reading from
    its own Orthanc over HTTP, auditing into a migrated EMR database), asked
    the same by the same `movescu`, sending to the same `storescp`.

Timed from `movescu` start until it has the final response (every image is
then on the workstation's disk). Prints each round, the medians in
instances/s and the ratio gateway / Orthanc (target >= 1.0x).

    .venv/bin/python benchmarks/qr.py [--slices 50] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storage import OrthancProcess, StorageSettings  # noqa: E402
from tests.corpus import make_ct_series  # noqa: E402
from tests.helpers import free_port  # noqa: E402

BENCH_AET = "BENCHSCU"
WS_AET = "WS01"


def wait_port(port: int, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"{what} did not start")


def start_orthanc(root: Path, ws_port: int) -> OrthancProcess:
    """A stock Orthanc (filmless's generated config) that knows the bench SCU and the workstation."""
    settings = replace(
        StorageSettings(), data_dir=root, http_port=free_port(), dicom_port=free_port(),
        # Orthanc's DICOM server is off in filmless; the stock baseline needs it.
        dicom_server=True,
        config_overrides={"DicomModalities": {"bench": [BENCH_AET, "127.0.0.1", 104],
                                              "ws01": [WS_AET, "127.0.0.1", ws_port]}},
    )
    proc = OrthancProcess(settings)
    proc.start()
    return proc


class GatewayProcess:
    """`python -m filmless gateway` in front of one Orthanc, with WS01 as move destination."""

    def __init__(self, root: Path, orthanc: OrthancProcess, port: int, ws_port: int) -> None:
        env = dict(os.environ)
        # As `filmless up` runs it: the Orthanc in FILMLESS_DATA_DIR/orthanc is the managed one.
        assert orthanc.settings.data_dir == root / "orthanc"
        env.update({
            "FILMLESS_DATA_DIR": str(root),
            "FILMLESS_GATEWAY_PORT": str(port),
            "FILMLESS_GATEWAY_MIN_FREE_MB": "64",
            "FILMLESS_GATEWAY_DESTINATIONS": f"{WS_AET}@127.0.0.1:{ws_port}",
            "FILMLESS_ORTHANC_HTTP_PORT": str(orthanc.settings.http_port),
            "FILMLESS_DATABASE_URL": f"sqlite:///{root / 'emr.sqlite3'}",
        })
        for name in ("FILMLESS_ORTHANC_URL", "FILMLESS_ORTHANC_USER", "FILMLESS_ORTHANC_PASSWORD"):
            env.pop(name, None)
        root.mkdir(parents=True, exist_ok=True)
        self.log = open(root / "gateway.log", "wb")  # noqa: SIM115
        # A migrated EMR database: every retrieve is audited, as in production.
        subprocess.run([sys.executable, "-m", "filmless", "emr", "migrate"], env=env, stdout=self.log,
                       stderr=subprocess.STDOUT, check=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "filmless", "gateway"], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_port(port, "gateway")
        except SystemExit as exc:  # the work folder goes when the benchmark ends: show the log now
            self.stop()
            tail = (root / "gateway.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"{exc}; the end of its log:\n{tail}") from None

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


class Workstation:
    """DCMTK storescp writing what it receives to a folder."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(["storescp", "-aet", WS_AET, "-od", str(folder), str(port)],
                                     env=dict(os.environ, TCP_NODELAY="1"),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port, "storescp")

    def clear(self) -> None:
        for path in self.folder.iterdir():
            path.unlink()

    def count(self) -> int:
        return sum(1 for _ in self.folder.iterdir())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def movescu(port: int, called: str, study_uid: str) -> float:
    env = dict(os.environ, TCP_NODELAY="1")
    started = time.perf_counter()
    result = subprocess.run(["movescu", "-S", "-aet", BENCH_AET, "-aec", called, "-aem", WS_AET,
                             "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
                             "127.0.0.1", str(port)], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"movescu to {called} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    for tool in ("movescu", "storescp"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: install dcmtk")

    work = Path(tempfile.mkdtemp(prefix="filmless-bench-qr-"))
    try:
        series = work / "series"
        paths = make_ct_series(series, args.slices, patient_name="Phạm^Văn Bench", accession="QRBENCH",
                               patient_id="QRBENCH")
        import pydicom

        study_uid = str(pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)
        size_mb = sum(p.stat().st_size for p in paths) / 1e6
        print(f"study: {args.slices} CT slices 512x512 16-bit, {size_mb:.0f} MB; {args.rounds} rounds; "
              f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} (other work skews the ratios)")
        with ExitStack() as cleanup:
            ws_port = free_port()
            ws = Workstation(work / "ws", ws_port)
            cleanup.callback(ws.stop)
            stock = start_orthanc(work / "stock", ws_port)
            cleanup.callback(stock.stop)
            behind = start_orthanc(work / "gw" / "orthanc", ws_port)
            cleanup.callback(behind.stop)
            for path in paths:
                data = path.read_bytes()
                stock.store().upload(data)
                behind.store().upload(data)
            gw_port = free_port()
            gateway = GatewayProcess(work / "gw", behind, gw_port, ws_port)
            cleanup.callback(gateway.stop)

            rows: list[tuple[float, float]] = []
            for r in range(args.rounds):
                # Alternate who goes first, so neither always gets the warmer cache.
                order = [("orthanc", stock.settings.dicom_port, "ORTHANC"), ("gateway", gw_port, "FILMLESS")]
                if r % 2:
                    order.reverse()
                times: dict[str, float] = {}
                for name, port, called in order:
                    ws.clear()
                    times[name] = movescu(port, called, study_uid)
                    if ws.count() != args.slices:
                        raise SystemExit(f"{name}: the workstation got {ws.count()} of {args.slices} images")
                rows.append((times["orthanc"], times["gateway"]))
                print(f"  round {r + 1}: stock Orthanc C-MOVE {args.slices / times['orthanc']:6.1f}/s"
                      f"   gateway C-MOVE {args.slices / times['gateway']:6.1f}/s")
        orthanc = args.slices / statistics.median(r[0] for r in rows)
        gateway_rate = args.slices / statistics.median(r[1] for r in rows)
        ratio = gateway_rate / orthanc
        print()
        print(f"stock Orthanc C-MOVE -> storescp (baseline)  {orthanc:7.1f} instances/s "
              f"({statistics.median(r[0] for r in rows):.2f} s for the study)")
        print(f"filmless gateway C-MOVE -> storescp          {gateway_rate:7.1f} instances/s "
              f"({statistics.median(r[1] for r in rows):.2f} s)   ratio {ratio:4.2f}x  (target >= 1.00x) "
              f"{'OK' if ratio >= 1.0 else 'BELOW TARGET'}")
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
