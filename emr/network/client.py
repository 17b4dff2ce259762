"""Authenticated HTTP calls to another facility's EMR (the inter-site API under /network/api/v1).

Every call carries the token that site issued to us (``Authorization: Bearer``,
RFC 6750 §2.1) and a timeout; a TLS URL is verified against the site's
configured certificate when one is set, else the system's CAs. Failures come
back as :class:`SiteCallFailed` with ``permanent`` set for answers that a retry
cannot change (4xx other than 408/409/429: a refused token, a rejected payload; 409 is a
concurrent delivery of the same message, retried).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from emr.models import NetworkSite

__all__ = ["SiteCallFailed", "post_json", "tls_verify"]

TIMEOUT = (5.0, 60.0)  # connect, read


class SiteCallFailed(Exception):
    def __init__(self, reason: str, *, permanent: bool = False, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.status = status


@contextmanager
def tls_verify(site: NetworkSite, url: str) -> Iterator[bool | str]:
    """``requests``' ``verify`` for ``url``: the site's configured certificate for HTTPS when set
    (written to a temporary file for the call), else the system's CAs."""
    if not (url.startswith("https://") and site.certificate_pem):
        yield True
        return
    with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as fh:
        fh.write(site.certificate_pem)
        ca_file = fh.name
    try:
        yield ca_file
    finally:
        Path(ca_file).unlink(missing_ok=True)


def post_json(site: NetworkSite, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST ``body`` to ``site``'s EMR at ``path``; the JSON answer, or :class:`SiteCallFailed`."""
    if not site.emr_url:
        raise SiteCallFailed(f"site {site.name!r} has no EMR address configured", permanent=True)
    if not site.outbound_token:
        raise SiteCallFailed(f"site {site.name!r} has no access token configured", permanent=True)
    url = f"{site.emr_url.rstrip('/')}{path}"
    headers = {"Authorization": f"Bearer {site.outbound_token}", "Accept": "application/json"}
    with tls_verify(site, url) as verify:
        try:
            resp = requests.post(url, json=body, headers=headers, timeout=TIMEOUT, verify=verify)
        except requests.RequestException as exc:
            raise SiteCallFailed(f"{site.name}: {type(exc).__name__}: {str(exc)[:200]}") from exc
    if resp.status_code >= 400:
        permanent = 400 <= resp.status_code < 500 and resp.status_code not in (408, 409, 429)
        raise SiteCallFailed(
            f"{site.name} answered HTTP {resp.status_code}: {resp.text[:200]}", permanent=permanent,
            status=resp.status_code,
        )
    try:
        data = resp.json()
    except ValueError as exc:
        raise SiteCallFailed(f"{site.name} answered something that is not JSON") from exc
    if not isinstance(data, dict):
        raise SiteCallFailed(f"{site.name} answered an unexpected JSON value")
    return data
