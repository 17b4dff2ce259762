"""Fixtures with real parts: an Orthanc process on free ports.

``orthanc`` is one Orthanc per test session (fast); ``fresh_orthanc`` is a
factory for tests that need their own (stop/start, fault injection).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from storage import OrthancProcess, OrthancStore, StorageSettings
from tests.browser import browser  # noqa: F401 - chromium per test module, for every browser test
from tests.helpers import free_port
from tests.signing_fixtures import pki, pki_server, softhsm_token  # noqa: F401 - session fixtures, created once


def make_orthanc_settings(data_dir: Path, **overrides: object) -> StorageSettings:
    return replace(
        StorageSettings(),
        data_dir=data_dir,
        http_port=free_port(),
        dicom_port=free_port(),
        **overrides,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="session")
def orthanc_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancProcess]:
    settings = make_orthanc_settings(tmp_path_factory.mktemp("orthanc"))
    proc = OrthancProcess(settings)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def orthanc(orthanc_process: OrthancProcess) -> OrthancStore:
    """The session-wide managed Orthanc, through the storage facade."""
    return orthanc_process.store()


@pytest.fixture
def fresh_orthanc(tmp_path: Path) -> Iterator[Callable[..., OrthancProcess]]:
    """Factory: ``fresh_orthanc(gateway_port=..., **settings)`` → a started Orthanc of its own."""
    started: list[OrthancProcess] = []

    def make(gateway_aet: str = "FILMLESS", gateway_port: int = 11112, **overrides: object) -> OrthancProcess:
        settings = make_orthanc_settings(tmp_path / f"orthanc{len(started)}", **overrides)
        proc = OrthancProcess(settings, gateway_aet=gateway_aet, gateway_port=gateway_port)
        proc.start()
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.stop()
