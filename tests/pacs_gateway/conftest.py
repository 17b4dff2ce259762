"""Gateway fixtures: a started Gateway on a free port, the corpus, DCMTK helpers."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import build_role, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet  # type: ignore[attr-defined]

from pacs_gateway import Gateway, GatewaySettings
from tests.corpus import build_corpus
from tests.helpers import free_port

# pydicom warns (and pytest turns warnings into errors, in every thread) about
# the deliberately odd values in its own test files; the gateway must cope
# with them exactly as in production, where they are only logged.
PYDICOM_WARNINGS = [
    pytest.mark.filterwarnings("ignore::UserWarning:pydicom.*"),
    pytest.mark.filterwarnings("ignore:Invalid value for VR:UserWarning"),
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            for mark in PYDICOM_WARNINGS:
                item.add_marker(mark)


def gateway_settings(**overrides: Any) -> GatewaySettings:
    base = GatewaySettings(
        host="127.0.0.1",
        port=free_port(),
        min_free_bytes=0,
        retry_initial=0.1,
        retry_max=1.0,
        network_timeout=15.0,
        forwarders=2,
    )
    return replace(base, **overrides)


@pytest.fixture
def make_gateway(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    """Factory: ``make_gateway(store, **settings_overrides)`` → started Gateway."""
    started: list[Gateway] = []

    def make(store: Any, *, worklist: Any = None, identity: Any = None, **overrides: Any) -> Gateway:
        overrides.setdefault("spool_dir", tmp_path / f"spool{len(started)}")
        gw = Gateway(gateway_settings(**overrides), store, worklist=worklist, identity=identity)
        gw.start()
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("corpus")
    return root, build_corpus(root)


def dcmtk(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK tool with Nagle disabled (as a tuned modality would)."""
    env = {**os.environ, "TCP_NODELAY": "1"}
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=env)


# Transfer syntax of a file → the storescu option a modality configured to
# send that compression would use (DCMTK proposes uncompressed otherwise).
_PROPOSE = {
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.1": "-xe",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
}


def storescu_as_modalities(port: int, files: list[Path], *extra: str) -> list[subprocess.CompletedProcess[str]]:
    """Send ``files`` with storescu, one association per transfer syntax, proposing that syntax."""
    groups: dict[str, list[str]] = {}
    for path in files:
        ts = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        groups.setdefault(_PROPOSE.get(ts, "-xe"), []).append(str(path))
    return [
        dcmtk("storescu", "-aec", "FILMLESS", "-R", *extra, option, "127.0.0.1", str(port), *paths)
        for option, paths in sorted(groups.items())
    ]


def echo(port: int, aet: str = "ECHOSCU") -> bool:
    return dcmtk("echoscu", "-aet", aet, "-aec", "FILMLESS", "127.0.0.1", str(port), timeout=30).returncode == 0


def c_get_study(ae: Any, port: int, study_uid: str, on_store: Any, sop_class: str) -> list[Any]:
    """C-GET one study from the gateway at ``port`` with ``ae`` (which must request the Study Root
    GET context and ``sop_class``), storing through ``on_store``; the (status, identifier) answers."""
    assoc = ae.associate("127.0.0.1", port, ae_title="FILMLESS", ext_neg=[build_role(sop_class, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    try:
        return list(assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet))
    finally:
        assoc.release()
