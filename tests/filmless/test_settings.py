"""Environment → settings: defaults, overrides and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from filmless.settings import VARIABLES, SettingsError, load


def test_defaults_are_local_and_under_var() -> None:
    s = load({})
    assert s.data_dir == Path("var").absolute()
    assert (s.gateway.ae_title, s.gateway.port, s.gateway.host) == ("FILMLESS", 11112, "127.0.0.1")
    assert (s.storage.http_port, s.storage.dicom_port, s.storage.http_host) == (8042, 4242, "127.0.0.1")
    assert s.storage.managed
    assert (s.emr.host, s.emr.port) == ("127.0.0.1", 8080)
    assert s.emr.database_url == f"sqlite:///{Path('var').absolute() / 'emr.sqlite3'}"
    assert s.gateway.spool_dir == s.data_dir / "spool"
    assert all("127.0.0.0/8" in p or "::1" in p for p in s.gateway.allowed_peers)


def test_every_variable_overrides(tmp_path: Path) -> None:
    s = load({
        "FILMLESS_DATA_DIR": str(tmp_path),
        "FILMLESS_GATEWAY_AET": "PACS01",
        "FILMLESS_GATEWAY_PORT": "104",
        "FILMLESS_GATEWAY_ALLOWED": "CT01@10.0.0.5, MR*@10.0.1.0/24,US01",
        "FILMLESS_GATEWAY_IDENTITY_TIMEOUT": "30",
        "FILMLESS_GATEWAY_MOVE_BY_STORAGE": "0",
        "FILMLESS_GATEWAY_FORWARDERS_WHILE_RECEIVING": "2",
        "FILMLESS_ORTHANC_HTTP_PORT": "9042",
        "FILMLESS_ORTHANC_PG_DSN": "postgresql://o@db/orthanc",
        "FILMLESS_EMR_PORT": "9080",
        "FILMLESS_DATABASE_URL": "postgresql+psycopg://u@db/emr",
    })
    assert s.gateway.ae_title == "PACS01" and s.gateway.port == 104
    assert s.gateway.allowed_peers == ("CT01@10.0.0.5", "MR*@10.0.1.0/24", "US01")
    assert s.gateway.identity_timeout == 30.0
    assert not s.gateway.move_by_storage and load({}).gateway.move_by_storage
    assert s.gateway.forwarders_while_receiving == 2 and load({}).gateway.forwarders_while_receiving == 0
    assert s.storage.http_port == 9042 and s.storage.pg_dsn == "postgresql://o@db/orthanc"
    assert s.storage.data_dir == tmp_path / "orthanc"
    assert s.emr.port == 9080 and s.emr.public_url == "http://127.0.0.1:9080"
    assert s.emr.database_url == "postgresql+psycopg://u@db/emr"


def test_external_orthanc_is_not_managed() -> None:
    s = load({"FILMLESS_ORTHANC_URL": "https://pacs.example.vn/orthanc/", "FILMLESS_ORTHANC_USER": "u"})
    assert not s.storage.managed
    assert s.storage.url == "https://pacs.example.vn/orthanc"


def test_several_orthanc_urls_are_one_store_with_failover() -> None:
    from storage import FailoverStore, open_store

    s = load({"FILMLESS_ORTHANC_URL": "http://10.0.0.11:8042, http://10.0.0.12:8042/", "FILMLESS_ORTHANC_USER": "u",
              "FILMLESS_ORTHANC_PASSWORD": "p"})
    assert s.storage.url == "http://10.0.0.11:8042" and s.storage.failover_urls == ("http://10.0.0.12:8042/",)
    store = open_store(s.storage)
    assert isinstance(store, FailoverStore)
    assert [x.url for x in store.stores] == ["http://10.0.0.11:8042", "http://10.0.0.12:8042"]
    with pytest.raises(SettingsError, match="10.0.0.12"):
        load({"FILMLESS_ORTHANC_URL": "http://10.0.0.11:8042,10.0.0.12:8042"})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FILMLESS_GATEWAY_PORT": "eleven"}, "FILMLESS_GATEWAY_PORT='eleven' is not a whole number"),
        ({"FILMLESS_GATEWAY_PORT": "70000"}, "outside 1..65535"),
        ({"FILMLESS_GATEWAY_AET": "A" * 17}, "not a valid AE title"),
        ({"FILMLESS_GATEWAY_ALLOWED": "CT01@not-an-ip"}, "not an IP address"),
        ({"FILMLESS_ORTHANC_URL": "pacs:8042"}, "must start with http"),
        ({"FILMLESS_GATEWAY_TLS_CERT": "/no/such/cert.pem"}, "no such file"),
        ({"FILMLESS_GATEWAY_MOVE_BY_STORAGE": "maybe"}, "FILMLESS_GATEWAY_MOVE_BY_STORAGE='maybe' is not 1 or 0"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("*", r"\*").replace("(", r"\(").replace(")", r"\)")):
        load(env)


def test_variable_table_documents_every_variable_load_reads() -> None:
    source = Path(__file__).parents[2].joinpath("filmless", "settings.py").read_text()
    import re

    used = set(re.findall(r'"(FILMLESS_[A-Z_]+)"', source.split("def load", 1)[1]))
    assert used <= set(VARIABLES), used - set(VARIABLES)


def test_readme_table_matches_the_code() -> None:
    root = Path(__file__).parents[2]
    import subprocess
    import sys

    table = subprocess.run([sys.executable, str(root / "scripts" / "settings_table.py")], capture_output=True,
                           text=True, check=True).stdout.strip()
    assert table in (root / "README.md").read_text("utf-8"), "run scripts/settings_table.py --write"
