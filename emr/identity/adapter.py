"""The HTTP adapter to the national population database (contract: docs/identity-adapter.md).

One module makes every call to the province's gateway, with one short
timeout and one mapping of answers to results or errors, so the rest of the
EMR sees three outcomes only: a :class:`NationalRecord`, ``None`` (no citizen
with this CCCD), or :class:`GatewayError` (``transient`` → try again later).

The endpoint, the credential and the timeout come from the site's settings
(``FILMLESS_IDENTITY_*``) and nothing a user sends can change them; the
answer is accepted only when it echoes the CCCD that was asked for.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import urllib3

from emr.core.identifiers import cccd_problem
from emr.core.identity_match import NationalRecord, parse_birth

__all__ = ["GatewayError", "PopulationGateway", "configure", "configured", "gateway_from_settings", "valid_cccd"]

_MAX_BODY = 64 * 1024  # a record is a few hundred bytes; anything larger is not an answer


class GatewayError(Exception):
    """The gateway gave no usable answer; ``transient``: worth trying again later (down, slow, 5xx, 429)."""

    def __init__(self, reason: str, *, transient: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


@dataclass(frozen=True)
class PopulationGateway:
    """A configured endpoint: URL, bearer credential (read from a 0600 file), timeout in seconds."""

    url: str
    credential: str | None
    timeout: float

    def lookup(self, cccd: str) -> NationalRecord | None:
        """The national record for ``cccd``; None when the database has no such citizen."""
        headers = {"Accept": "application/json", "X-Request-Id": uuid.uuid4().hex}
        if self.credential:
            headers["Authorization"] = f"Bearer {self.credential}"
        try:
            with requests.post(
                self.url, json={"cccd": cccd}, headers=headers, timeout=self.timeout, allow_redirects=False, stream=True
            ) as resp:
                status = resp.status_code
                body = resp.raw.read(_MAX_BODY + 1, decode_content=True)
        except requests.Timeout:
            raise GatewayError("timeout", transient=True) from None
        except urllib3.exceptions.ReadTimeoutError:
            raise GatewayError("timeout", transient=True) from None
        except (requests.ConnectionError, urllib3.exceptions.HTTPError, OSError):
            raise GatewayError("unreachable", transient=True) from None
        if status == 404:
            return None
        if status == 429 or status >= 500:
            raise GatewayError(f"http {status}", transient=True)
        if status in (401, 403):
            # A wrong or expired credential is fixed by the site: keep the check and try again later.
            raise GatewayError(f"credential refused (http {status})", transient=True)
        if status != 200:
            raise GatewayError(f"http {status}", transient=False)
        if len(body) > _MAX_BODY:
            raise GatewayError("answer too large", transient=False)
        return _parse(cccd, body)


def _parse(cccd: str, body: bytes) -> NationalRecord | None:
    import json

    try:
        data: Any = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise GatewayError("answer is not JSON", transient=False) from None
    if not isinstance(data, dict):
        raise GatewayError("answer is not a JSON object", transient=False)
    if data.get("cccd") != cccd:
        raise GatewayError("answer is about another CCCD", transient=False)
    if data.get("found") is False:
        return None
    name, born, sex = data.get("full_name"), data.get("birth_date"), data.get("sex")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise GatewayError("full_name missing or invalid", transient=False)
    if sex not in ("M", "F") or not isinstance(born, str):
        raise GatewayError("sex or birth_date missing or invalid", transient=False)
    try:
        birth_date, birth_year = parse_birth(born)
    except ValueError:
        raise GatewayError("birth_date is not YYYY-MM-DD or YYYY", transient=False) from None
    full_name = " ".join(name.split())
    return NationalRecord(cccd=cccd, full_name=full_name, birth_date=birth_date, birth_year=birth_year, sex=sex)


def gateway_from_settings(url: str | None, credential_file: Path | None, timeout: float) -> PopulationGateway | None:
    """The site's gateway, or None when no endpoint is configured (identity checks are off)."""
    if not url:
        return None
    credential = None
    if credential_file is not None:
        if not credential_file.is_file():
            raise ValueError(f"identity credential file {credential_file} does not exist")
        if credential_file.stat().st_mode & 0o077:
            raise ValueError(f"identity credential file {credential_file} must be readable by its owner only (0600)")
        credential = credential_file.read_text("utf-8").strip()
    return PopulationGateway(url=url, credential=credential or None, timeout=timeout)


# The gateway of this process, set once by ``emr.app.create_app`` from the settings; the
# registration hook and the queued-check handler read it (None: checks are off).
_configured: list[PopulationGateway | None] = [None]


def configure(gateway: PopulationGateway | None) -> None:
    _configured[0] = gateway


def configured() -> PopulationGateway | None:
    return _configured[0]


def valid_cccd(cccd: str | None) -> bool:
    """Only well-formed CCCDs are sent: a typo never reaches the national database."""
    return bool(cccd) and cccd_problem(cccd or "", None, None) is None
