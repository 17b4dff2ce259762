"""Where the facility's trust store and revocation lists are, and reading them.

One home for the rule, shared by document signatures (:mod:`emr.signing.service`)
and the audit chain's timestamp anchors (:mod:`emr.access.audit`): trusted CA
certificates in ``FILMLESS_TRUST_ANCHORS`` (default ``<data>/pki/trust-anchors``),
CRLs in ``<data>/pki/crls/*.crl`` plus the development CA's ``<data>/pki/dev/ca.crl``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509

from emr.core.settings import EmrSettings

__all__ = ["crl_paths", "load_crls", "trust_anchors_dir"]

log = logging.getLogger(__name__)


def trust_anchors_dir(settings: EmrSettings) -> Path:
    return settings.trust_anchors_dir or settings.data_dir / "pki" / "trust-anchors"


def crl_paths(settings: EmrSettings) -> tuple[Path, ...]:
    pki = settings.data_dir / "pki"
    crls = sorted((pki / "crls").glob("*.crl")) if (pki / "crls").is_dir() else []
    if (pki / "dev" / "ca.crl").is_file():
        crls.append(pki / "dev" / "ca.crl")
    return tuple(crls)


def load_crls(paths: Sequence[Path]) -> list[x509.CertificateRevocationList]:
    """The readable CRLs among ``paths`` (PEM or DER); unreadable ones are logged and skipped."""
    out = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        try:
            out.append(x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data))
        except ValueError:
            log.warning("unreadable CRL %s ignored", path)
    return out
