"""Ingest speed: DCMTK storescu → Orthanc directly vs. → filmless gateway → Orthanc.

Prints, for the same generated CT series sent in the same run:
  - direct:   instances/s of storescu straight into a managed Orthanc (the baseline)
  - gateway acknowledge rate: instances/s until storescu has every C-STORE answered
  - gateway end-to-end rate:  instances/s until every instance is in Orthanc
  - the same three with four modalities sending at once (the series split
    into four folders, four storescu processes started together)
  - ratios against the baseline, and the targets (ack >= 1.0x, end-to-end >= 0.8x)
  - the gateway's CPU time per instance (receiving and forwarding, all
    threads): a figure that moves less than rates when other work shares
    the machine
  - the gateway's peak RSS while it receives about 1 GB of large multi-frame
    instances (target < 300 MB).

Every part is real: Orthanc processes on free ports, the gateway run as
`python -m filmless gateway` (as in production), DCMTK storescu with
TCP_NODELAY=1. Only public APIs of filmless are used.

    .venv/bin/python benchmarks/ingest.py [--slices 200] [--rounds 3] [--big-mb 1024]
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
import threading
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storage import OrthancProcess, OrthancStore, StorageSettings  # noqa: E402
from tests.corpus import make_ct_series  # noqa: E402

BENCH_AET = "BENCHSCU"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def storescu(folders: list[Path], port: int, called: str) -> float:
    """Seconds until every folder is sent, one storescu (one association) per folder, all at once."""
    env = dict(os.environ, TCP_NODELAY="1")
    started = time.perf_counter()
    procs = [subprocess.Popen(["storescu", "-aet", BENCH_AET, "-aec", called, "+sd", "+r", "-nh",
                               "127.0.0.1", str(port), str(folder)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for folder in folders]
    errors = [(p.returncode, err) for p in procs for _, err in [p.communicate()] if p.returncode != 0]
    elapsed = time.perf_counter() - started
    if errors:
        raise SystemExit(f"storescu failed ({errors[0][0]}):\n{errors[0][1][-2000:]}")
    return elapsed


def split(series: Path, parts: int) -> list[Path]:
    """The series' files hard-linked into ``parts`` folders of about equal size (one per modality)."""
    files = sorted(series.iterdir())
    folders = [series.parent / f"{series.name}-part{i}" for i in range(parts)]
    for i, folder in enumerate(folders):
        folder.mkdir(exist_ok=True)
        for path in files[i::parts]:
            os.link(path, folder / path.name)
    return folders


def start_orthanc(root: Path, gateway_port: int) -> OrthancProcess:
    settings = replace(
        StorageSettings(), data_dir=root, http_port=free_port(), dicom_port=free_port(),
        # Orthanc's DICOM server is off in filmless; the baseline turns it on
        # and lets storescu in directly (by AE title and host, like the gateway).
        dicom_server=True,
        config_overrides={"DicomModalities": {"bench": [BENCH_AET, "127.0.0.1", 104],
                                              "filmless-gateway": ["FILMLESS", "127.0.0.1", gateway_port]}},
    )
    proc = OrthancProcess(settings, gateway_port=gateway_port)
    proc.start()
    return proc


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Gateway:
    """`python -m filmless gateway` forwarding to one Orthanc, as a child process."""

    def __init__(self, root: Path, orthanc: OrthancProcess, port: int) -> None:
        self.port = port
        env = dict(os.environ)
        env.update({
            "FILMLESS_DATA_DIR": str(root),
            "FILMLESS_GATEWAY_PORT": str(port),
            "FILMLESS_GATEWAY_MIN_FREE_MB": "64",
            "FILMLESS_ORTHANC_URL": orthanc.settings.url,
            "FILMLESS_ORTHANC_USER": orthanc.credentials.username,
            "FILMLESS_ORTHANC_PASSWORD": orthanc.credentials.password,
            "FILMLESS_DATABASE_URL": f"sqlite:///{root / 'emr.sqlite3'}",
        })
        root.mkdir(parents=True, exist_ok=True)
        self.log = open(root / "gateway.log", "wb")  # noqa: SIM115
        # A migrated (empty) EMR database, as in production: every identity
        # lookup is answered ("no order"), so coercion costs what it really costs.
        subprocess.run([sys.executable, "-m", "filmless", "emr", "migrate"], env=env, stdout=self.log,
                       stderr=subprocess.STDOUT, check=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "filmless", "gateway"], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.05)
        # The work folder goes when the benchmark ends: say what the log says now.
        how = "did not listen within 30 s" if self.proc.poll() is None else f"exited with {self.proc.returncode}"
        self.stop()
        tail = (root / "gateway.log").read_text(errors="replace")[-3000:]
        raise SystemExit(f"gateway {how}; the end of its log:\n{tail}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_count(store: OrthancStore, expected: int, timeout: float = 600) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if store.count_instances() >= expected:
            return time.perf_counter()
        time.sleep(0.01)
    raise SystemExit(f"only {store.count_instances()} of {expected} instances reached Orthanc")


def one_round(work: Path, series: list[Path], count: int) -> tuple[float, float, float, float]:
    """(direct s, gateway ack s, gateway end-to-end s, gateway CPU s) for one send of the series' folders."""
    gw_port = free_port()
    with ExitStack() as cleanup:
        direct = start_orthanc(work / "direct", gw_port)
        cleanup.callback(direct.stop)
        t_direct = storescu(series, direct.settings.dicom_port, "ORTHANC")
        assert direct.store().count_instances() == count

    with ExitStack() as cleanup:
        behind = start_orthanc(work / "behind", gw_port)
        cleanup.callback(behind.stop)
        gateway = Gateway(work / "gw", behind, gw_port)
        cleanup.callback(gateway.stop)
        store = behind.store()
        cpu_before = cpu_seconds(gateway.proc.pid)
        started = time.perf_counter()
        t_ack = storescu(series, gw_port, "FILMLESS")
        done = wait_count(store, count)
        t_e2e = done - started
        cpu = cpu_seconds(gateway.proc.pid) - cpu_before
    return t_direct, t_ack, t_e2e, cpu


def memory_round(work: Path, big: Path, count: int) -> tuple[float, float]:
    """Peak gateway RSS (MB) and seconds while receiving the large instances."""
    gw_port = free_port()
    peak = 0.0
    stop = threading.Event()
    with ExitStack() as cleanup:
        behind = start_orthanc(work / "mem-orthanc", gw_port)
        cleanup.callback(behind.stop)
        gateway = Gateway(work / "mem-gw", behind, gw_port)
        cleanup.callback(gateway.stop)

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, rss_mb(gateway.proc.pid))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        cleanup.callback(sampler.join)
        cleanup.callback(stop.set)
        started = time.perf_counter()
        storescu([big], gw_port, "FILMLESS")
        wait_count(behind.store(), count)
        elapsed = time.perf_counter() - started
    return peak, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--big-mb", type=int, default=1024, help="size of the memory send (0 to skip)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    for tool in ("storescu",):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: run `make bench` or install dcmtk")

    work = Path(tempfile.mkdtemp(prefix="filmless-bench-"))
    try:
        series = work / "series"
        make_ct_series(series, args.slices, patient_name="Nguyễn^Văn Bench", accession="BENCH1",
                       patient_id="BENCH")
        size_mb = sum(p.stat().st_size for p in series.iterdir()) / 1e6
        print(f"series: {args.slices} CT slices 512x512 16-bit, {size_mb:.0f} MB; {args.rounds} rounds; "
              f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} (other work skews the ratios)")
        results = []
        for label, folders in (("one association", [series]), ("four at once", split(series, 4))):
            rows = []
            for r in range(args.rounds):
                round_dir = work / f"round{r}"
                t_direct, t_ack, t_e2e, cpu = one_round(round_dir, folders, args.slices)
                shutil.rmtree(round_dir, ignore_errors=True)
                rows.append((t_direct, t_ack, t_e2e, cpu))
                print(f"  {label}, round {r + 1}: direct {args.slices / t_direct:6.1f}/s"
                      f"   gateway ack {args.slices / t_ack:6.1f}/s   gateway end-to-end {args.slices / t_e2e:6.1f}/s"
                      f"   gateway CPU {1000 * cpu / args.slices:5.2f} ms/instance")
            results.append((label, rows))
        for label, rows in results:
            direct = args.slices / statistics.median(r[0] for r in rows)
            ack = args.slices / statistics.median(r[1] for r in rows)
            e2e = args.slices / statistics.median(r[2] for r in rows)
            cpu_ms = 1000 * statistics.median(r[3] for r in rows) / args.slices
            print()
            print(f"{label}:")
            print(f"  storescu -> Orthanc (baseline)        {direct:7.1f} instances/s")
            print(f"  storescu -> gateway, acknowledged     {ack:7.1f} instances/s   ratio {ack / direct:4.2f}x"
                  f"  (target >= 1.00x) {'OK' if ack / direct >= 1.0 else 'BELOW TARGET'}")
            print(f"  storescu -> gateway -> Orthanc        {e2e:7.1f} instances/s   ratio {e2e / direct:4.2f}x"
                  f"  (target >= 0.80x) {'OK' if e2e / direct >= 0.8 else 'BELOW TARGET'}")
            print(f"  gateway CPU time (all threads, receive + forward) {cpu_ms:5.2f} ms per instance"
                  " (steadier than rates on a busy machine)")

        if args.big_mb:
            frames = 256  # 512x512x256x2 bytes = 128 MiB per instance
            count = max(1, args.big_mb // 128)
            big = work / "big"
            make_ct_series(big, count, frames=frames, patient_name="Trần^Thị Lớn", accession="BENCH2",
                           patient_id="BENCH")
            total = sum(p.stat().st_size for p in big.iterdir()) / 1e6
            peak, elapsed = memory_round(work, big, count)
            verdict = "OK" if peak < 300 else "ABOVE TARGET"
            print(f"gateway peak RSS receiving {count} x 128 MiB instances ({total:.0f} MB): {peak:.0f} MB"
                  f"  (target < 300 MB) {verdict}; {total / elapsed:.0f} MB/s end-to-end")
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
