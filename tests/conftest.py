"""Fixtures with real parts: an Orthanc process on free ports; the test markers.

``orthanc`` is one Orthanc per test session (fast); ``fresh_orthanc`` is a
factory for tests that need their own (stop/start, fault injection).

Markers (``make test-quick`` runs ``-m "not browser and not slow"``) are
derived here, so a new test gets them from what it uses: ``browser`` for
every test using the chromium fixture, ``pg`` for every test run against
PostgreSQL (a ``postgresql`` parameter or the ``pg_database`` fixture), and
``slow`` for the modules below that start several real processes (plus
tests marked ``@pytest.mark.slow`` themselves).
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

SLOW_MODULES = {
    "tests/filmless/test_up.py",  # filmless up: Orthanc, gateway, EMR, TSA
    "tests/integration/test_order_to_chart.py",
    "tests/pacs_gateway/test_faults.py",  # Orthanc stopped, gateway SIGKILLed
    "tests/signing/test_workflow_demo.py",  # filmless demo in a subprocess
    "tests/viewer/test_reading_to_slip.py",  # EMR server, Orthanc, TSA, chromium
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(__file__).parents[1]
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "browser" in names:
            item.add_marker(pytest.mark.browser)
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "pg_database" in names or "postgresql" in params.values():
            item.add_marker(pytest.mark.pg)
        if item.path.relative_to(root).as_posix() in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


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
