"""The managed Orthanc: generated config, secrets, start/stop, PostgreSQL index."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from storage import LauncherError, OrthancProcess, StorageSettings, build_config, load_or_create_credentials
from tests.conftest import make_orthanc_settings
from tests.dicom_factory import ct_instance
from tests.pg import pg_available, query, throwaway_database


def test_config_has_the_safe_defaults(tmp_path: Path) -> None:
    settings = replace(StorageSettings(), data_dir=tmp_path)
    config = build_config(settings, load_or_create_credentials(tmp_path), "GW", 11112)
    assert config["DefaultEncoding"] == "Utf8"
    assert config["RemoteAccessAllowed"] is False
    assert config["AuthenticationEnabled"] is True
    assert config["TcpNoDelay"] is True
    assert config["DicomAlwaysAllowStore"] is False and config["DicomCheckModalityHost"] is True
    assert config["DicomModalities"] == {"filmless-gateway": ["GW", "127.0.0.1", 11112]}
    assert any(p.endswith("libOrthancDicomWeb.so") for p in config["Plugins"])
    assert any(p.endswith("libOrthancGdcm.so") for p in config["Plugins"])
    assert "PostgreSQL" not in config
    assert config["IndexDirectory"].startswith(str(tmp_path))


def test_overrides_file_and_pg_dsn(tmp_path: Path) -> None:
    (tmp_path / "orthanc-overrides.json").write_text(json.dumps({"StableAge": 3, "DicomWeb": {"Ssl": True}}))
    settings = replace(StorageSettings(), data_dir=tmp_path, pg_dsn="postgresql://orthanc:s%40cret@db:5433/pacs")
    config = build_config(settings, load_or_create_credentials(tmp_path))
    assert config["StableAge"] == 3
    assert config["DicomWeb"] == {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": True}
    pg = config["PostgreSQL"]
    assert (pg["Host"], pg["Port"], pg["Database"], pg["Username"], pg["Password"]) == (
        "db", 5433, "pacs", "orthanc", "s@cret")
    assert pg["EnableIndex"] is True and pg["EnableStorage"] is False
    assert any(p.endswith("libOrthancPostgreSQLIndex.so") for p in config["Plugins"])
    with pytest.raises(LauncherError):
        build_config(replace(settings, pg_dsn="mysql://x"), load_or_create_credentials(tmp_path))


def test_credentials_are_generated_once_and_private(tmp_path: Path) -> None:
    first = load_or_create_credentials(tmp_path)
    second = load_or_create_credentials(tmp_path)
    assert first == second
    assert len(first.password) >= 24
    assert stat.S_IMODE((tmp_path / "credentials.json").stat().st_mode) == 0o600
    assert load_or_create_credentials(tmp_path / "other").password != first.password


def test_started_orthanc_requires_auth_and_loads_plugins(orthanc_process: OrthancProcess) -> None:
    url = orthanc_process.settings.url
    assert requests.get(f"{url}/system", timeout=10).status_code == 401
    creds = orthanc_process.credentials
    info = orthanc_process.store().system()
    assert {"dicom-web", "gdcm"} <= set(info.plugins)
    assert info.version.startswith("1.")
    dicomweb = requests.get(f"{url}/dicom-web/studies", auth=(creds.username, creds.password), timeout=10)
    assert dicomweb.status_code == 200
    assert stat.S_IMODE(orthanc_process.config_path.stat().st_mode) == 0o600


def test_orthanc_dicom_port_refuses_peers_other_than_the_gateway(orthanc_process: OrthancProcess) -> None:
    """Modalities must go through the gateway, not straight into Orthanc."""
    port = str(orthanc_process.settings.dicom_port)
    stranger = subprocess.run(["echoscu", "-aet", "STRANGER", "-aec", "ORTHANC", "127.0.0.1", port],
                              capture_output=True, text=True, timeout=30)
    assert stranger.returncode != 0
    gateway = subprocess.run(["echoscu", "-aet", orthanc_process.gateway_aet, "-aec", "ORTHANC", "127.0.0.1", port],
                             capture_output=True, text=True, timeout=30)
    assert gateway.returncode == 0, gateway.stderr


def test_busy_port_gives_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        settings = replace(make_orthanc_settings(tmp_path), http_port=busy)
        with pytest.raises(LauncherError, match=f"port {busy}.*FILMLESS_ORTHANC_HTTP_PORT"):
            OrthancProcess(settings).start()


def test_missing_binary_gives_a_clear_error(tmp_path: Path) -> None:
    settings = replace(make_orthanc_settings(tmp_path), binary=tmp_path / "no-orthanc")
    with pytest.raises(LauncherError, match="not installed"):
        OrthancProcess(settings).start()


def test_stop_then_start_keeps_the_data(fresh_orthanc) -> None:
    proc = fresh_orthanc()
    result = proc.store().upload(ct_instance(patient_id="PERSIST"))
    proc.stop()
    assert not proc.running()
    proc.start()
    assert proc.store().get_study(result.study_id).patient_id == "PERSIST"


@pytest.mark.pg
@pytest.mark.skipif(not pg_available(), reason="PostgreSQL is not running on 127.0.0.1:5432")
def test_postgresql_index_shared_by_two_orthancs(tmp_path: Path) -> None:
    """Scale-out: two Orthanc servers on one PostgreSQL index and one storage folder."""
    with throwaway_database("filmless_orthanc") as db:
        dsn = f"postgresql://postgres@127.0.0.1:5432/{db}"
        shared_storage = {"StorageDirectory": str(tmp_path / "shared-storage")}
        a = OrthancProcess(replace(make_orthanc_settings(tmp_path / "a"), pg_dsn=dsn, config_overrides=shared_storage))
        b = OrthancProcess(replace(make_orthanc_settings(tmp_path / "b"), pg_dsn=dsn, config_overrides=shared_storage))
        try:
            a.start()
            b.start()
            result = a.store().upload(ct_instance(patient_id="PG-SHARED", patient_name="Lê^Thị Thu"))
            seen_by_b = b.store().get_study(result.study_id)
            assert seen_by_b.patient_name == "Lê^Thị Thu"
            tables = query(db, "select count(*) from information_schema.tables where table_schema='public'")
            assert int(tables) > 5
        finally:
            a.stop()
            b.stop()
