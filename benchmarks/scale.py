"""Scale-out: instances per second with one node versus two, on one machine, and where the time goes.

A "node" is one gateway and one Orthanc server; every Orthanc is on the same
PostgreSQL index and storage folder (issue 16). Both runs send the same
number of generated CT instances from the same number of modalities (DCMTK
storescu, one association per study, in parallel):

  - one node:  every modality sends to the one gateway;
  - two nodes: half the modalities send to each gateway.

Printed for each: the acknowledge rate (instances/s until every modality has
its C-STORE answers) and the end-to-end rate (until every instance is in the
index), the ratio two-node / one-node (the figure to read: absolute speed
depends on the machine), and the CPU seconds each part used per 100
instances with the share of the machine's CPU that was busy: on one machine
two nodes can only go faster while the CPU is not already the limit, and the
part with the most CPU per instance is what to spread over more servers.

    .venv/bin/python benchmarks/scale.py [--modalities 4] [--studies 4] [--instances 25] [--size 256] [--rounds 3]

Needs PostgreSQL on 127.0.0.1:5432 (trust, user postgres), like the tests.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydicom.uid import generate_uid  # noqa: E402

from tests.dicom_factory import ct_instance  # noqa: E402
from tests.pg import throwaway_database  # noqa: E402
from tests.scale_cluster import Cluster, orthanc_pid, send_study  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    nodes: int
    instances: int
    ack_seconds: float
    stored_seconds: float
    cpu: dict[str, float]
    wall: float
    processes: dict[str, int]

    @property
    def ack_rate(self) -> float:
        return self.instances / self.ack_seconds

    @property
    def stored_rate(self) -> float:
        return self.instances / self.stored_seconds


def _cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def _postgres_cpu() -> float:
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    total += _cpu(int(entry.name))
            except OSError:
                continue
    return total


def _machine_busy() -> float:
    """Busy CPU seconds of the whole machine (all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / TICK


def _make_studies(root: Path, modalities: int, studies: int, instances: int, size: int) -> list[list[list[Path]]]:
    queues = []
    for m in range(modalities):
        queue = []
        for s in range(studies):
            study_uid, series_uid = generate_uid(), generate_uid()
            folder = root / f"m{m}" / f"s{s}"
            folder.mkdir(parents=True)
            files = []
            for n in range(instances):
                path = folder / f"{n}.dcm"
                path.write_bytes(ct_instance(patient_id=f"BENCH-{m}-{s}", patient_name="Benchmark^Scale",
                                             accession=f"B{m}{s:04d}", study_uid=study_uid, series_uid=series_uid,
                                             instance_number=n + 1, size=size))
                files.append(path)
            queue.append(files)
        queues.append(queue)
    return queues


def _start(nodes: int, workdir: Path, stack: ExitStack) -> Cluster:
    """A cluster of ``nodes`` gateway + Orthanc pairs on a fresh index, kept for every round."""
    index_db = stack.enter_context(throwaway_database("filmless_bench_index"))
    emr_db = stack.enter_context(throwaway_database("filmless_bench_emr"))
    cluster = Cluster(workdir / f"{nodes}-node", index_db, emr_db)
    stack.callback(cluster.close)
    for _ in range(nodes):
        cluster.add_orthanc()
    cluster.migrate_emr()
    for n in range(nodes):
        cluster.add_gateway(prefer=n)
    return cluster


def _measure(cluster: Cluster, queues: list[list[list[Path]]]) -> Run:
    """Send every modality's queue at once; time the acknowledgements and the last instance indexed."""
    nodes = len(cluster.gateways)
    total = sum(len(files) for queue in queues for files in queue)
    store = cluster.store(0)
    target = store.count_instances() + total
    pids = {
        "gateway": [g.proc.pid for g in cluster.gateways if g.proc],
        "orthanc": [p for p in (orthanc_pid(o) for o in cluster.orthancs) if p],
    }
    before = {part: sum(map(_cpu, ps)) for part, ps in pids.items()}
    before["postgres"] = _postgres_cpu()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_before = _machine_busy()
    errors: list[str] = []

    def modality(index: int) -> None:
        port = cluster.gateways[index % nodes].port
        for files in queues[index]:
            result = send_study(files, port, f"BENCH{index:02d}")
            if result.returncode != 0:
                errors.append(result.stderr[-500:])

    senders = [threading.Thread(target=modality, args=(i,)) for i in range(len(queues))]
    start = time.monotonic()
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    acked = time.monotonic() - start
    if errors:
        raise SystemExit(f"a modality failed: {errors[0]}")
    while store.count_instances() < target:
        time.sleep(0.05)
    stored = time.monotonic() - start
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = {part: sum(map(_cpu, ps)) - before[part] for part, ps in pids.items()}
    cpu["postgres"] = _postgres_cpu() - before["postgres"]
    cpu["storescu (modalities)"] = (children.ru_utime + children.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime)
    cpu["machine (all processes)"] = _machine_busy() - busy_before
    return Run(nodes, total, acked, stored, cpu, stored, {k: len(v) for k, v in pids.items()})


def _combine(runs: list[Run]) -> Run:
    """The median round's times, the CPU summed over every round (per instance it is the same)."""
    ordered = sorted(runs, key=lambda r: r.stored_seconds)
    median = ordered[len(ordered) // 2]
    acks = sorted(r.ack_seconds for r in runs)
    cpu = {k: sum(r.cpu[k] for r in runs) for k in runs[0].cpu}
    instances = sum(r.instances for r in runs)
    scale = median.instances / instances
    return Run(median.nodes, median.instances, acks[len(acks) // 2], median.stored_seconds,
               {k: v * scale for k, v in cpu.items()}, sum(r.wall for r in runs) * scale, median.processes)


def _report(run: Run) -> None:
    cores = os.cpu_count() or 1
    print(f"  {run.nodes} node(s): {run.instances} instances, acknowledged in {run.ack_seconds:.1f} s "
          f"({run.ack_rate:.1f}/s), all in the index after {run.stored_seconds:.1f} s ({run.stored_rate:.1f}/s)")
    for part, seconds in run.cpu.items():
        line = f"      CPU {part:<24} {seconds:6.1f} s  ({100 * seconds / run.instances:5.2f} s per 100 instances)"
        if part in run.processes:  # a Python gateway cannot use more than one core (the GIL)
            line += f", {100 * seconds / run.wall / run.processes[part]:.0f}% of one core per process"
        print(line)
    busy = run.cpu["machine (all processes)"] / (run.wall * cores)
    print(f"      machine CPU busy: {min(100.0, 100 * busy):.0f}% of {cores} cores during the run "
          "(other work on the machine included)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modalities", type=int, default=4)
    parser.add_argument("--studies", type=int, default=4, help="studies per modality")
    parser.add_argument("--instances", type=int, default=25, help="instances per study")
    parser.add_argument("--size", type=int, default=256, help="image rows and columns (16-bit)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, one node and two nodes taking turns")
    args = parser.parse_args()
    runs: dict[int, list[Run]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="filmless-scale-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        clusters = {1: _start(1, work, stack), 2: _start(2, work, stack)}
        for r in range(args.rounds):
            for nodes in (1, 2) if r % 2 == 0 else (2, 1):  # taking turns: a busy spell hits both
                folder = work / "studies" / f"{r}-{nodes}"
                queues = _make_studies(folder, args.modalities, args.studies, args.instances, args.size)
                runs[nodes].append(_measure(clusters[nodes], queues))
                shutil.rmtree(folder)
    one, two = _combine(runs[1]), _combine(runs[2])
    print(f"filmless scale-out benchmark: {args.modalities} modalities, {args.studies} studies each, "
          f"{args.instances} instances of {args.size}x{args.size} per study, on {os.cpu_count()} cores, "
          f"median of {args.rounds} rounds (one and two nodes taking turns)")
    print(f"  load average at the end: {os.getloadavg()[0]:.1f}")
    _report(one)
    _report(two)
    print(f"  ratio two nodes / one node: acknowledge {two.ack_rate / one.ack_rate:.2f}x, "
          f"end-to-end {two.stored_rate / one.stored_rate:.2f}x")
    parts = {k: v for k, v in two.cpu.items() if not k.startswith("machine")}
    heaviest = max(parts, key=lambda k: parts[k])
    share = parts[heaviest] / max(sum(parts.values()), 1e-9)
    print(f"  bottleneck: {heaviest} uses {100 * share:.0f}% of the CPU the parts used with two nodes")


if __name__ == "__main__":
    main()
