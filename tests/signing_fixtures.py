"""Session-wide signing fixtures: the development PKI with its TSA/CRL server and a SoftHSM2 token.

Registered once from tests/conftest.py so that tests/signing and the viewer's
reading-to-slip test share ONE PKI and ONE token per session: SoftHSM reads
SOFTHSM2_CONF only when python-pkcs11 first loads it, so a second token in
another folder would be invisible to the already-loaded library. emr.signing
is imported lazily: sessions without signing tests do not pay for it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from emr import EmrSettings
    from emr.signing import DevPki, DevPkiServer

__all__ = ["TOKEN_LABEL", "TOKEN_PIN", "pki", "pki_server", "signing_emr_settings", "softhsm_token",
           "trust_dev_pki"]

TOKEN_LABEL = "filmless-test"
TOKEN_PIN = "246810"


def trust_dev_pki(pki: DevPki, data_dir: Path) -> None:
    """Make an EMR data directory trust the dev CA and check its CRL (where EmrSettings looks by default:
    ``pki/trust-anchors`` and ``pki/crls`` under ``data_dir``)."""
    from emr.signing import import_trust_anchor

    import_trust_anchor(pki.ca_cert_path.read_bytes(), data_dir / "pki" / "trust-anchors")
    (data_dir / "pki" / "crls").mkdir(parents=True)
    (data_dir / "pki" / "crls" / "dev.crl").symlink_to(pki.crl_path)


def signing_emr_settings(tmp: Path, pki: DevPki, pki_server: DevPkiServer) -> EmrSettings:
    """Settings of a migrated SQLite EMR in ``tmp`` that signs with the dev TSA and trusts the dev CA."""
    from emr import EmrSettings, upgrade_database

    data = tmp / "data"
    trust_dev_pki(pki, data)
    settings = EmrSettings(
        data_dir=data,
        database_url=f"sqlite:///{tmp / 'emr.sqlite3'}",
        secret_key_file=tmp / "secret_key",
        hospital_name="Bệnh viện Đa khoa filmless",
        tsa_url=pki_server.tsa_url,
    )
    upgrade_database(settings)
    return settings


@pytest.fixture(scope="session")
def pki_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevPkiServer]:
    from emr.signing import DevPkiServer

    server = DevPkiServer(tmp_path_factory.mktemp("pki"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pki(pki_server: DevPkiServer) -> DevPki:
    from emr.signing import init_dev_pki

    return init_dev_pki(pki_server.directory, crl_url=pki_server.crl_url)


@pytest.fixture(scope="session")
def softhsm_token(tmp_path_factory: pytest.TempPathFactory, pki: DevPki) -> Iterator[dict[str, str]]:
    """A SoftHSM2 token in a temp folder with a key pair + dev-CA certificate on it.

    SOFTHSM2_CONF must be set before python-pkcs11 first loads the library
    (SoftHSM reads it once); it is restored afterwards.
    """
    from emr.signing import SOFTHSM_LIBRARY, enroll_dev_token_key

    if not Path(SOFTHSM_LIBRARY).exists():
        pytest.fail("SoftHSM2 is not installed (Debian package softhsm2, see scripts/apt-packages.txt)")
    base = tmp_path_factory.mktemp("softhsm")
    (base / "tokens").mkdir()
    conf = base / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {base / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    try:
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", TOKEN_LABEL,
             "--pin", TOKEN_PIN, "--so-pin", "13579246"],
            check=True, capture_output=True,
        )
        enroll_dev_token_key(pki, TOKEN_LABEL, TOKEN_PIN, "bs.token", "BS. Phạm Minh Đức")
        yield {"token_label": TOKEN_LABEL, "pin": TOKEN_PIN, "key_label": "bs.token"}
    finally:
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous
