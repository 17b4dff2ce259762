"""STOW-RS to another facility's DICOMweb archive (PS3.18 §10.5 Store Transaction).

For a site whose archive takes studies only over DICOMweb (no DICOM port), or
that chose it: the instances go as one ``multipart/related; type="application/dicom"``
POST to ``{dicomweb_url}/studies`` per batch, with the site's DICOMweb
credentials (HTTP Basic when a user name is configured, else the bearer token
the site issued us). The answer is read as PS3.18 defines it: 200 = every
instance stored; 202 = some failed (the FailedSOPSequence (0008,1198) lists
them with their FailureReason (0008,1197)); 409 = none stored.

What the outbox should do with a failure: connection errors, timeouts and 5xx
(and 408/429) are retried with back-off; any other 4xx (401/403: wrong
credentials, 404: wrong URL, 409/415: the archive refuses these instances) cannot
be fixed by sending again, so the message goes to the dead letters at once with
the reason, for an operator to fix the site and resend.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Callable, Iterable
from typing import Any

import requests

from emr.models import NetworkSite

from .client import TIMEOUT, SiteCallFailed, tls_verify

__all__ = ["BATCH_BYTES", "stow_instances"]

BATCH_BYTES = 32 * 1024 * 1024  # one request carries at most this much (a big CT goes in several)
_FAILED_SOP = "00081198"
_FAILURE_REASON = "00081197"
_REFERENCED_SOP_INSTANCE = "00081155"
_RETRIED = (408, 429)


def _auth(site: NetworkSite) -> tuple[dict[str, str], tuple[str, str] | None]:
    if site.dicomweb_username:
        return {}, (site.dicomweb_username, site.dicomweb_password or "")
    if site.outbound_token:
        return {"Authorization": f"Bearer {site.outbound_token}"}, None
    return {}, None


def _body(parts: list[bytes], boundary: str) -> bytes:
    out = io.BytesIO()
    for part in parts:
        out.write(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode("ascii"))
        out.write(part)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode("ascii"))
    return out.getvalue()


def _failed(answer: Any) -> list[tuple[str, str]]:
    """(SOP Instance UID, "0xNNNN") of each instance the archive says it did not store."""
    if not isinstance(answer, dict):
        return []
    items = (answer.get(_FAILED_SOP) or {}).get("Value") or []
    out = []
    for item in items:
        if not isinstance(item, dict):
            continue
        uid = ((item.get(_REFERENCED_SOP_INSTANCE) or {}).get("Value") or ["?"])[0]
        reason = ((item.get(_FAILURE_REASON) or {}).get("Value") or [0])[0]
        out.append((str(uid), f"0x{int(reason):04X}" if str(reason).isdigit() else str(reason)))
    return out


def _post(site: NetworkSite, parts: list[bytes], verify: bool | str) -> list[tuple[str, str]]:
    boundary = f"filmless-{secrets.token_hex(12)}"
    headers, auth = _auth(site)
    headers |= {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
    }
    url = f"{(site.dicomweb_url or '').rstrip('/')}/studies"
    try:
        resp = requests.post(url, data=_body(parts, boundary), headers=headers, auth=auth, timeout=TIMEOUT,
                             verify=verify)
    except requests.RequestException as exc:
        raise SiteCallFailed(f"{site.name} (STOW-RS): {type(exc).__name__}: {str(exc)[:200]}") from exc
    try:
        answer = resp.json() if resp.content else None
    except ValueError:
        answer = None
    if resp.status_code in (200, 202):
        return _failed(answer)
    if resp.status_code == 409:  # none stored; the answer says why, per instance
        failed = _failed(answer)
        detail = f", e.g. {failed[0][0]} ({failed[0][1]})" if failed else ""
        raise SiteCallFailed(f"{site.name} refused the instances by STOW-RS (HTTP 409{detail})",
                             permanent=True, status=409)
    permanent = 400 <= resp.status_code < 500 and resp.status_code not in _RETRIED
    what = {401: "credentials refused", 403: "not allowed", 404: "no DICOMweb service at this URL",
            413: "request too large", 415: "media type refused"}.get(resp.status_code, "error")
    raise SiteCallFailed(
        f"{site.name} answered STOW-RS with HTTP {resp.status_code} ({what}): {resp.text[:200]}",
        permanent=permanent, status=resp.status_code,
    )


def stow_instances(site: NetworkSite, instances: Iterable[Callable[[], bytes]]) -> tuple[int, list[tuple[str, str]]]:
    """Store ``instances`` at ``site`` by STOW-RS; (instances sent, [(uid, reason)] refused).

    Raises :class:`SiteCallFailed` (``permanent`` for 4xx) when a request fails as a whole.
    Safe to repeat: an archive keeps a re-sent SOP instance once.
    """
    if not site.dicomweb_url:
        raise SiteCallFailed(f"site {site.name!r} has no DICOMweb address configured", permanent=True)
    sent = 0
    refused: list[tuple[str, str]] = []
    with tls_verify(site, site.dicomweb_url) as verify:
        batch: list[bytes] = []
        size = 0
        for load in instances:
            data = load()
            if batch and size + len(data) > BATCH_BYTES:
                refused += _post(site, batch, verify)
                sent += len(batch)
                batch, size = [], 0
            batch.append(data)
            size += len(data)
        if batch:
            refused += _post(site, batch, verify)
            sent += len(batch)
    return sent - len(refused), refused
