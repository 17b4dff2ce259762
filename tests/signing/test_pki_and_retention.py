"""Development PKI, trust store, retention dates."""

from __future__ import annotations

import datetime as dt
import stat

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from emr.signing import (
    DEV_CA_NAME,
    PkiError,
    import_trust_anchor,
    init_dev_pki,
    list_trust_anchors,
    load_trust_anchors,
    retention_class,
    retention_until,
)


def test_dev_pki_files_and_labels(pki) -> None:
    ca = pki.ca_certificate()
    assert DEV_CA_NAME in ca.subject.rfc4514_string() and "NOT FOR CLINICAL USE" in DEV_CA_NAME
    tsa = pki.tsa_certificate()
    eku = tsa.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical and list(eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    secrets = [pki.directory / "ca.key", pki.tsa_key_path]
    for user in pki.users.values():
        secrets += [user.p12_path, user.password_path]
    for path in secrets:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert pki.crl().issuer == ca.subject
    with pytest.raises(PkiError):
        init_dev_pki(pki.directory)  # never silently replaces a CA


def test_trust_store_import_and_list(pki, tmp_path) -> None:
    store = tmp_path / "anchors"
    assert list_trust_anchors(store) == []
    (anchor,) = import_trust_anchor(pki.ca_cert_path.read_bytes(), store)
    assert anchor.is_development and not anchor.expired
    import_trust_anchor(pki.ca_cert_path.read_bytes(), store)  # idempotent
    assert [a.sha256 for a in list_trust_anchors(store)] == [anchor.sha256]
    assert load_trust_anchors(store) == [pki.ca_certificate()]
    with pytest.raises(PkiError) as exc:
        import_trust_anchor(pki.users["bs.an"].cert_path.read_bytes(), store)  # not a CA
    assert exc.value.key == "signing.error.anchor_not_ca"
    with pytest.raises(PkiError):
        import_trust_anchor(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n", store)


@pytest.mark.parametrize(
    ("record_type", "closed", "until"),
    [
        ("ordinary", dt.date(2025, 3, 10), dt.date(2035, 12, 31)),
        ("outpatient", dt.date(2025, 12, 31), dt.date(2035, 12, 31)),
        ("psychiatric", dt.date(2024, 1, 1), dt.date(2044, 12, 31)),
        ("occupational_accident", dt.date(2024, 6, 1), dt.date(2044, 12, 31)),
        ("traffic-accident", dt.date(2024, 6, 1), dt.date(2044, 12, 31)),
        ("death", dt.date(2023, 7, 9), dt.date(2053, 12, 31)),
        ("medical_incident", dt.date(2023, 7, 9), None),
    ],
)
def test_retention(record_type: str, closed: dt.date, until: dt.date | None) -> None:
    assert retention_until(record_type, closed) == until
    assert retention_class(record_type) == (None if until is None else until.year - closed.year)
