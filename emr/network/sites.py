"""The registry of other facilities: configured by an admin, audited, and the gateway's extra peers.

Inter-site HTTP calls carry ``Authorization: Bearer <token>``: each side
issues a token to the other when the pair is set up (shown once), and keeps
only its SHA-256 (RFC 6750 bearer usage; compared in constant time). An
unknown or disabled site's token is refused like no token at all.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access import audit
from emr.access.audit import Actor
from emr.core.exceptions import ConflictError, ValidationFailed
from emr.core.settings import EmrSettings
from emr.db import make_engine, make_session_factory
from emr.models import NetworkSite, utcnow
from emr.models.lookup import get_or_404

__all__ = [
    "SiteIn",
    "create_site",
    "update_site",
    "list_sites",
    "get_site",
    "site_for_token",
    "issue_inbound_token",
    "peer_entries",
    "network_peer_provider",
    "token_hash",
    "uses_stow",
]

_AE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 6.2 AE: 16 chars, no backslash or control chars
_HOST = re.compile(r"^[A-Za-z0-9.\-:]{1,255}$")


@dataclass
class SiteIn:
    name: str
    ae_title: str
    host: str
    port: int | str
    emr_url: str | None = None
    dicomweb_url: str | None = None
    certificate_pem: str | None = None
    outbound_token: str | None = None  # the token the other site issued to us (kept when None)
    send_by: str | None = None  # "dicom" | "stow"; blank: stow when there is no DICOM port
    dicomweb_username: str | None = None
    dicomweb_password: str | None = None  # kept when None, like outbound_token


SEND_BY = ("dicom", "stow")


def uses_stow(site: NetworkSite) -> bool:
    """Does ``site`` take studies by STOW-RS (its choice, or it has no DICOM port)?"""
    return bool(site.dicomweb_url) and (site.send_by == "stow" or not site.port)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _clean(data: SiteIn) -> dict[str, Any]:
    errors: dict[str, str] = {}
    name = (data.name or "").strip()
    if not 2 <= len(name) <= 200:
        errors["name"] = "network.error.name"
    ae = (data.ae_title or "").strip()
    if not _AE.match(ae) or ae != (data.ae_title or "").strip(" "):
        errors["ae_title"] = "network.error.ae_title"
    host = (data.host or "").strip()
    if not _HOST.match(host):
        errors["host"] = "network.error.host"
    urls: dict[str, str | None] = {}
    for field in ("emr_url", "dicomweb_url"):
        value = (getattr(data, field) or "").strip().rstrip("/")
        if value and (not re.match(r"^https?://[^\s/]+(/\S*)?$", value) or len(value) > 500):
            errors[field] = "network.error.url"
        urls[field] = value or None
    port_text = str(data.port if data.port is not None else "").strip()
    try:
        # No DICOM port at all: an archive reached only by DICOMweb (port 0 = none).
        port = 0 if not port_text and urls["dicomweb_url"] else int(port_text)
        if not (1 <= port <= 65535 or port == 0 and urls["dicomweb_url"]):
            raise ValueError
    except ValueError:
        errors["port"] = "network.error.port"
        port = 0
    send_by = (data.send_by or "").strip() or ("stow" if port == 0 else "dicom")
    if send_by not in SEND_BY or send_by == "dicom" and port == 0:
        errors["send_by"] = "network.error.send_by"
    elif send_by == "stow" and not urls["dicomweb_url"]:
        errors["dicomweb_url"] = "network.error.stow_url"
    username = (data.dicomweb_username or "").strip() or None
    if username is not None and (len(username) > 64 or ":" in username or not username.isprintable()):
        errors["dicomweb_username"] = "network.error.dicomweb_username"
    password = data.dicomweb_password or None
    if password is not None and (len(password) > 200 or not password.isprintable()):
        errors["dicomweb_password"] = "network.error.dicomweb_password"
    pem = (data.certificate_pem or "").strip() or None
    if pem is not None:
        import ssl

        try:
            ssl.create_default_context(cadata=pem)
        except (ssl.SSLError, ValueError):
            errors["certificate_pem"] = "network.error.certificate"
    token = (data.outbound_token or "").strip() or None
    if token is not None and not 20 <= len(token) <= 200:
        errors["outbound_token"] = "network.error.token"
    if errors:
        raise ValidationFailed(errors)
    return {"name": name, "ae_title": ae, "host": host, "port": port, "certificate_pem": pem,
            "outbound_token": token, "send_by": send_by, "dicomweb_username": username,
            "dicomweb_password": password, **urls}


def _unique(session: Session, values: dict[str, Any], exclude: int | None = None) -> None:
    for field in ("name", "ae_title"):
        q = select(NetworkSite.id).where(getattr(NetworkSite, field) == values[field])
        if exclude is not None:
            q = q.where(NetworkSite.id != exclude)
        if session.scalar(q) is not None:
            raise ConflictError(f"a site with this {field} exists", field=field, key=f"network.error.{field}_taken")


def issue_inbound_token(session: Session, site: NetworkSite) -> str:
    """A new token for ``site`` to present to us; only its hash is kept. Returned once, to hand over."""
    token = secrets.token_urlsafe(32)
    site.inbound_token_sha256 = token_hash(token)
    return token


def create_site(
    session: Session, actor: Actor, data: SiteIn, *, inbound_token: str | None = None
) -> tuple[NetworkSite, str | None]:
    """Register a facility. Without ``inbound_token`` one is generated and returned (shown once)."""
    values = _clean(data)
    _unique(session, values)
    site = NetworkSite(**values, created_by=actor.user_id)
    issued = None
    if inbound_token:
        if not 20 <= len(inbound_token.strip()) <= 200:
            raise ValidationFailed({"inbound_token": "network.error.token"})
        site.inbound_token_sha256 = token_hash(inbound_token.strip())
    else:
        issued = issue_inbound_token(session, site)
    session.add(site)
    session.flush()
    audit.record(session, actor, "network.site.create", object_type="network_site", object_id=site.id,
                 details={"name": site.name, "ae_title": site.ae_title, "host": site.host, "port": site.port})
    session.commit()
    return site, issued


def update_site(
    session: Session, actor: Actor, site_id: int, data: SiteIn, *, active: bool | None = None,
    new_token: bool = False,
) -> tuple[NetworkSite, str | None]:
    site = get_or_404(session, NetworkSite, site_id, "network site")
    values = _clean(data)
    _unique(session, values, exclude=site.id)
    for secret in ("outbound_token", "dicomweb_password"):
        if values[secret] is None:
            values.pop(secret)  # blank field: keep the stored one (it is never shown back)
    changed = sorted(k for k, v in values.items() if getattr(site, k) != v)
    for key, value in values.items():
        setattr(site, key, value)
    if active is not None and active != site.active:
        site.active = active
        changed.append("active")
    issued = issue_inbound_token(session, site) if new_token else None
    if issued:
        changed.append("inbound_token")
    site.updated_at = utcnow()
    audit.record(session, actor, "network.site.update", object_type="network_site", object_id=site.id,
                 details={"changed": changed, "active": site.active})
    session.commit()
    return site, issued


def list_sites(session: Session, *, active_only: bool = False) -> list[NetworkSite]:
    q = select(NetworkSite).order_by(NetworkSite.name)
    if active_only:
        q = q.where(NetworkSite.active.is_(True))
    return list(session.scalars(q))


def get_site(session: Session, site_id: int) -> NetworkSite:
    return get_or_404(session, NetworkSite, site_id, "network site")


def site_for_token(session: Session, token: str | None) -> NetworkSite | None:
    """The active site that holds this bearer token, or None."""
    if not token or len(token) > 200:
        return None
    digest = token_hash(token)
    site = session.scalar(select(NetworkSite).where(NetworkSite.inbound_token_sha256 == digest))
    if site is None or not site.active or not hmac.compare_digest(site.inbound_token_sha256 or "", digest):
        return None
    return site


def peer_entries(session: Session) -> list[str]:
    """``AET@address`` allow-list entries for the gateway: active sites; a host name is resolved now."""
    import socket

    out: list[str] = []
    for site in list_sites(session, active_only=True):
        try:
            addresses = {str(ipaddress.ip_address(site.host))}
        except ValueError:
            try:
                addresses = {str(info[4][0]) for info in socket.getaddrinfo(site.host, None)}
            except OSError:
                continue  # not resolvable now: not admitted until it is
        out += [f"{site.ae_title}@{a}" for a in sorted(addresses)]
    return out


def network_peer_provider(settings: EmrSettings) -> Callable[[], list[str]]:
    """For ``pacs_gateway.Gateway(extra_peers=...)``: the network sites allowed to associate."""
    factory = make_session_factory(make_engine(settings.database_url))

    def entries() -> list[str]:
        with factory() as session:
            return peer_entries(session)

    return entries
