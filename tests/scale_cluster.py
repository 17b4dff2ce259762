"""Several filmless nodes on one machine, as a province runs them on several (issue 16).

Used by the scale-out test and ``benchmarks/scale.py``. Every node is a real
``python -m filmless`` process started the way an operator starts it on its
own server, with its own ``FILMLESS_*`` variables and ports:

* Orthanc nodes: ``filmless storage``, each with its own data directory, all
  on one PostgreSQL index (``FILMLESS_ORTHANC_PG_DSN``, ``Lock: false``) and
  one storage folder (``StorageDirectory`` in ``orthanc-overrides.json``: the
  NFS/SAN volume of a real site), with the same REST login (the credentials
  file copied to every node, as an admin copies it).
* Gateways: ``filmless gateway``, each with its own spool, talking to the
  Orthanc nodes as ``FILMLESS_ORTHANC_URL=<own>,<other>`` (the first
  preferred, the next while it is down).
* EMR processes: ``filmless emr serve`` on one PostgreSQL database, each with
  its own port (behind nginx in production).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import requests

from storage import OrthancStore, load_or_create_credentials
from tests.helpers import free_port, wait_for
from tests.pg import PG_HOST, PG_PORT

__all__ = ["Cluster", "Node", "send_study"]

ROOT = Path(__file__).parents[1]


@dataclass
class Node:
    """One ``python -m filmless ...`` process and how to start it again."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def start(self) -> Node:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "filmless", *self.argv], cwd=ROOT, env=self.env, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        finally:
            out.close()
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the node and everything it started (a crash or a pulled power cord)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(30)

    def terminate(self) -> None:
        """Ask the node to stop (SIGTERM) without waiting."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not stop in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()
        except ProcessLookupError:
            pass
        # Orthanc runs in the node's process group: make sure no child outlives it.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text("utf-8", "replace")[-chars:]
        except OSError:
            return ""


class Cluster:
    """Orthanc nodes, gateways and EMR processes started on demand; ``close()`` stops them all."""

    def __init__(self, root: Path, orthanc_db: str, emr_db: str | None = None) -> None:
        self.root = root
        self.storage_dir = root / "shared-storage"
        self.storage_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.orthanc_dsn = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{orthanc_db}"
        self.emr_url = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{emr_db}" if emr_db else None
        self.credentials = load_or_create_credentials(root / "orthanc-login")
        self.orthancs: list[Node] = []
        self.gateways: list[Node] = []
        self.emrs: list[Node] = []

    # -- environment ----------------------------------------------------------------
    def _base_env(self, data_dir: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FILMLESS_")}
        env.update({"FILMLESS_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1", "TCP_NODELAY": "1"})
        if self.emr_url:
            env["FILMLESS_DATABASE_URL"] = self.emr_url
        return env

    def _orthanc_client_env(self, env: dict[str, str], first: int) -> None:
        """Point a gateway or EMR at every Orthanc node, its own (``first``) preferred."""
        order = [first] + [i for i in range(len(self.orthancs)) if i != first]
        env["FILMLESS_ORTHANC_URL"] = ",".join(f"http://127.0.0.1:{self.orthancs[i].port}" for i in order)
        env["FILMLESS_ORTHANC_USER"] = self.credentials.username
        env["FILMLESS_ORTHANC_PASSWORD"] = self.credentials.password

    # -- nodes ---------------------------------------------------------------------
    def add_orthanc(self) -> Node:
        """Start an Orthanc node on the shared index and storage; returns when its REST API answers."""
        index = len(self.orthancs)
        data_dir = self.root / f"orthanc{index}"
        orthanc_dir = data_dir / "orthanc"
        orthanc_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        login = orthanc_dir / "credentials.json"
        fd = os.open(login, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"username": self.credentials.username, "password": self.credentials.password}, f)
        (orthanc_dir / "orthanc-overrides.json").write_text(json.dumps({"StorageDirectory": str(self.storage_dir)}))
        env = self._base_env(data_dir)
        env.pop("FILMLESS_DATABASE_URL", None)
        port = free_port()
        env.update({"FILMLESS_ORTHANC_HTTP_PORT": str(port), "FILMLESS_ORTHANC_DICOM_PORT": str(free_port()),
                    "FILMLESS_ORTHANC_PG_DSN": self.orthanc_dsn})
        node = Node(f"orthanc{index}", ["storage"], env, data_dir / "node.log", port)
        self.orthancs.append(node)
        self.start_orthanc(node)
        return node

    def store(self, index: int) -> OrthancStore:
        return OrthancStore(f"http://127.0.0.1:{self.orthancs[index].port}", self.credentials.username,
                            self.credentials.password)

    def start_orthanc(self, node: Node) -> None:
        node.start()
        store = self.store(self.orthancs.index(node))
        wait_for(lambda: store.ping() or _died(node), timeout=90, what=f"{node.name} to answer")
        if not node.running:
            raise RuntimeError(f"{node.name} did not start:\n{node.tail()}")

    def kill_orthanc(self, node: Node) -> None:
        """Kill the Orthanc server itself (SIGKILL), as a crash would; its ``filmless storage`` exits."""
        pid = orthanc_pid(node)
        if pid is not None:
            _kill(pid)
        if node.proc is not None:
            node.proc.wait(30)

    def add_gateway(self, prefer: int, forwarders: int = 4) -> Node:
        index = len(self.gateways)
        data_dir = self.root / f"gateway{index}"
        env = self._base_env(data_dir)
        self._orthanc_client_env(env, prefer)
        port = free_port()
        env.update({"FILMLESS_GATEWAY_PORT": str(port), "FILMLESS_GATEWAY_MIN_FREE_MB": "16",
                    "FILMLESS_GATEWAY_FORWARDERS": str(forwarders)})
        node = Node(f"gateway{index}", ["gateway"], env, data_dir / "node.log", port)
        self.gateways.append(node)
        self.start_gateway(node)
        return node

    def start_gateway(self, node: Node) -> None:
        node.start()
        wait_for(lambda: echo(node.port) or _died(node), timeout=60, what=f"{node.name} to answer C-ECHO")
        if not node.running:
            raise RuntimeError(f"{node.name} did not start:\n{node.tail()}")

    def add_emr(self, prefer: int) -> Node:
        index = len(self.emrs)
        env = self._base_env(self.root / "emr")  # one data directory: the same session key on every process
        self._orthanc_client_env(env, prefer)
        port = free_port()
        env["FILMLESS_EMR_PORT"] = str(port)
        node = Node(f"emr{index}", ["emr", "serve"], env, self.root / f"emr{index}.log", port)
        self.emrs.append(node)
        node.start()
        url = f"http://127.0.0.1:{port}/healthz"
        wait_for(lambda: _http_ok(url) or _died(node), timeout=90, what=f"{node.name} to answer")
        if not node.running:
            raise RuntimeError(f"{node.name} did not start:\n{node.tail()}")
        return node

    def migrate_emr(self) -> None:
        """Bring the EMR schema up once, before several processes start serving it."""
        env = self._base_env(self.root / "emr")
        run = subprocess.run([sys.executable, "-m", "filmless", "emr", "migrate"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
        if run.returncode != 0:
            raise RuntimeError(f"emr migrate failed: {run.stderr}")

    def close(self) -> None:
        nodes = [*self.emrs, *self.gateways, *self.orthancs]
        for node in nodes:  # all at once: each may take seconds to finish what it is doing
            node.terminate()
        for node in nodes:
            node.stop()
        for node in self.orthancs:  # Orthanc runs in a session of its own
            pid = orthanc_pid(node)
            if pid is not None:
                _kill(pid)


def orthanc_pid(node: Node) -> int | None:
    """The pid of the Orthanc server a ``filmless storage`` node started last (it prints it)."""
    found = re.findall(r"^Orthanc http://\S+ \(.*\), pid (\d+)$", node.tail(100_000), re.MULTILINE)
    return int(found[-1]) if found else None


def _kill(pid: int) -> None:
    try:
        if "Orthanc" in Path(f"/proc/{pid}/cmdline").read_text("utf-8", "replace"):
            os.kill(pid, signal.SIGKILL)
    except (OSError, ProcessLookupError):
        pass


def _died(node: Node) -> bool:
    return not node.running


def _http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def echo(port: int) -> bool:
    return subprocess.run(["echoscu", "-aet", "ECHO", "-aec", "FILMLESS", "127.0.0.1", str(port)],
                          capture_output=True, timeout=30).returncode == 0


def send_study(files: list[Path], port: int, aet: str) -> subprocess.CompletedProcess[str]:
    """One modality sending one study on one association (DCMTK storescu, Nagle off)."""
    return subprocess.run(["storescu", "-aet", aet, "-aec", "FILMLESS", "127.0.0.1", str(port),
                           *map(str, files)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TCP_NODELAY": "1"})
