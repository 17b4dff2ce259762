"""HL7 MLLP listener throughput, alone and beside stuck clients (issue 15 §5).

Starts the real listener on a throw-away SQLite database, sends N ADT^A04
messages over MLLP one after another and reports
messages/s and p50/p95 round trip (message → ACK). Then the same with S
connections that sent half a message and stalled (a broken HIS, a port scan)
and the ratio against the first run, measured in the same run. The stalled ones
must cost nothing but their sockets. (SQLite only.)

    PYTHONPATH=. .venv/bin/python benchmarks/hl7_listener.py --messages 500 --stalled 50
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.emr.hl7_support import adt, mllp, msa, site, sqlite_database  # noqa: E402


def _run(port: int, prefix: str, n: int) -> list[float]:
    times = []
    for i in range(n):
        start = time.perf_counter()
        ack = mllp(port, adt(f"{prefix}-{i}", "A04", f"{prefix}{i:06d}", "Nguyễn^An^Văn"))
        times.append(time.perf_counter() - start)
        assert msa(ack)[1] == "AA", ack
    return times


def _report(label: str, times: list[float]) -> float:
    rate = len(times) / sum(times)
    q = statistics.quantiles(times, n=20)
    print(f"{label:<28} {rate:8.1f} msg/s   p50 {statistics.median(times) * 1000:6.1f} ms   p95 {q[18] * 1000:6.1f} ms")
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--stalled", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = sqlite_database(Path(tmp), None)
        for s in site(url, Path(tmp), allowed=("BV01@127.0.0.0/8",), connections_per_ip=args.stalled + 8,
                      max_connections=args.stalled + 8, read_timeout=600.0):
            base = _report("alone", _run(s.port, "B", args.messages))
            stuck = []
            for _ in range(args.stalled):
                sock = socket.create_connection(("127.0.0.1", s.port))
                sock.sendall(b"\x0bMSH|^~\\&|HIS|BV01|FILMLESS|")
                stuck.append(sock)
            loaded = _report(f"beside {args.stalled} stalled clients", _run(s.port, "S", args.messages))
            print(f"ratio stalled/alone: {loaded / base:.2f} (1.00 = unaffected)")
            for sock in stuck:
                sock.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
