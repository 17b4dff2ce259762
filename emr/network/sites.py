"""The registry of other facilities: configured by an admin, audited, and the gateway's extra peers.

Inter-site HTTP calls carry ``Authorization: Bearer <token>``: each side
issues a token to the other when the pair is set up (shown once), and keeps
only its SHA-256 (RFC 6750 bearer usage; compared in constant time). An
unknown or disabled site's token is refused like no token at all.

A site's signing CA (the CA its clinicians' signing certificates chain to) can be attached when the
site is registered or edited: the admin sees its subject and SHA-256 fingerprint, confirms the
fingerprint with the other hospital by phone, and only then is it imported into OUR trust store
(:func:`emr.signing.pki.import_trust_anchor`, the one store every verification reads), so the reports
that site signs and sends back verify as trusted. The site row keeps the fingerprint(s), so the
trust-anchor list can say whose CA an anchor is.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access import audit
from emr.access.audit import Actor
from emr.access.permissions import allowed
from emr.core.exceptions import ConflictError, NotFoundError, PermissionDenied, ValidationFailed
from emr.core.settings import EmrSettings
from emr.db import make_engine, make_session_factory
from emr.models import NetworkSite, utcnow
from emr.models.lookup import get_or_404

__all__ = [
    "SiteIn",
    "SigningCa",
    "read_signing_ca",
    "fingerprints_confirmed",
    "as_pem",
    "site_signing_ca",
    "anchor_owners",
    "withdraw_anchor",
    "withdraw_reason",
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
    # The site's signing CA (PEM, a chain allowed); None/blank: keep the one attached. Trusted only when
    # ``signing_ca_confirm`` names its fingerprint(s), read back by phone to the other hospital.
    signing_ca_pem: str | None = None
    signing_ca_confirm: str | None = None
    # Replacing a site's CA: also withdraw the one attached before (with this reason), not just detach it.
    withdraw_previous: bool = False
    withdraw_previous_reason: str | None = None


SIGNING_CA_MAX = 64 * 1024  # a CA chain in PEM is a few KB; anything larger is not one


@dataclass(frozen=True)
class SigningCa:
    """One CA certificate offered (or attached) as a site's signing CA, as the admin checks it."""

    subject: str
    sha256: str  # hex
    not_after: datetime
    in_store: bool = True  # attached earlier and still in the trust store

    @property
    def fingerprint(self) -> str:
        from emr.signing.pki import fingerprint

        return fingerprint(self.sha256)


_CA_ERRORS = {
    "signing.error.bad_certificate": "network.error.signing_ca_unreadable",
    "signing.error.anchor_not_ca": "network.error.signing_ca_not_ca",
    "signing.error.anchor_expired": "network.error.signing_ca_expired",
    "signing.error.anchor_private_key": "network.error.signing_ca_private_key",
}


def as_pem(data: bytes) -> str:
    """An uploaded CA file as PEM text (a DER certificate is wrapped), to show back and to store."""
    if b"-----BEGIN" in data or not data:
        return data.decode("utf-8", "replace")
    import base64
    import textwrap

    body = "\n".join(textwrap.wrap(base64.b64encode(data).decode(), 64))
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"


def read_signing_ca(pem: str | bytes) -> list[SigningCa]:
    """The CA certificate(s) in ``pem`` if they may become trust anchors, for the admin to confirm.

    Raises ValidationFailed on field ``signing_ca`` (garbage, a leaf certificate, an expired CA, a
    private key), with the same rule as the import itself (:func:`emr.signing.pki.check_trust_anchor`).
    """
    from emr.signing.exceptions import PkiError
    from emr.signing.pki import cert_sha256, check_trust_anchor

    data = pem.encode("utf-8", "replace") if isinstance(pem, str) else pem
    if len(data) > SIGNING_CA_MAX:
        raise ValidationFailed({"signing_ca": "network.error.signing_ca_unreadable"})
    try:
        certs = check_trust_anchor(data)
    except PkiError as exc:
        key = _CA_ERRORS.get(exc.key, "network.error.signing_ca_unreadable")
        raise ValidationFailed({"signing_ca": key}, params={"signing_ca": dict(exc.params)}) from None
    return [
        SigningCa(subject=c.subject.rfc4514_string(),
                  sha256=cert_sha256(c),
                  not_after=c.not_valid_after_utc.replace(tzinfo=None))
        for c in certs
    ]


def _fingerprints(text: str | None) -> set[str]:
    """Fingerprints as typed or posted back: ``AA:BB:…`` or hex, several separated by commas/spaces."""
    out = set()
    for part in re.split(r"[,;\s]+", text or ""):
        digest = part.replace(":", "").lower()
        if re.fullmatch(r"[0-9a-f]{64}", digest):
            out.add(digest)
    return out


def fingerprints_confirmed(offered: list[SigningCa], confirm: str | None) -> bool:
    """Did the admin confirm exactly these certificates' fingerprints (all of a chain, nothing else)?"""
    return bool(offered) and _fingerprints(confirm) == {c.sha256 for c in offered}


def _check_signing_ca(data: SiteIn) -> tuple[bytes, list[SigningCa]] | None:
    """The CA to attach (its bytes and what it is), None when the field is blank; refused unless its
    fingerprints were confirmed, which is the admin's statement that the other hospital read them out."""
    text = (data.signing_ca_pem or "").strip()
    if not text:
        return None
    offered = read_signing_ca(text)
    if not fingerprints_confirmed(offered, data.signing_ca_confirm):
        raise ValidationFailed({"signing_ca": "network.error.signing_ca_unconfirmed"})
    return text.encode("utf-8"), offered


def _attach_signing_ca(session: Session, actor: Actor, site: NetworkSite, ca: tuple[bytes, list[SigningCa]],
                       anchors_dir: Path | str | None, withdraw: str | None = None) -> None:
    """Import the confirmed CA through the one trust store and remember whose it is (audited); with a
    ``withdraw`` reason, the CA it replaces is withdrawn from the store (unless it is the same one)."""
    from emr.signing.exceptions import PkiError
    from emr.signing.pki import import_trust_anchor

    if anchors_dir is None:
        raise ValueError("a signing CA needs the trust store's directory")
    try:
        anchors = import_trust_anchor(ca[0], anchors_dir)
    except PkiError as exc:  # checked a moment ago; only a CA that expired in between gets here
        key = _CA_ERRORS.get(exc.key, "network.error.signing_ca_unreadable")
        raise ValidationFailed({"signing_ca": key}, params={"signing_ca": dict(exc.params)}) from None
    previous = site.signing_ca_sha256
    site.signing_ca_sha256 = " ".join(a.sha256 for a in anchors)
    audit.record(session, actor, "network.site.signing_ca", object_type="network_site", object_id=site.id,
                 details={"name": site.name, "subjects": [a.subject for a in anchors],
                          "sha256": [a.sha256 for a in anchors], "replaced": previous,
                          "fingerprint_confirmed": True})
    if withdraw is not None:
        from emr.signing.pki import list_trust_anchors

        held = {a.sha256 for a in list_trust_anchors(anchors_dir)}
        kept = {a.sha256 for a in anchors}
        for digest in (previous or "").split():
            if digest not in kept and digest in held:
                _withdraw(session, actor, anchors_dir, digest, withdraw)


def withdraw_reason(text: str | None) -> str:
    """A withdrawal's reason, required (ValidationFailed on field ``withdraw_reason``): what an auditor reads."""
    reason = " ".join((text or "").split())
    if not 5 <= len(reason) <= 500:
        raise ValidationFailed({"withdraw_reason": "network.error.withdraw_reason"})
    return reason


def _withdraw(session: Session, actor: Actor, anchors_dir: Path | str, digest: str, reason: str) -> None:
    """Take ``digest`` out of the trust store (kept in its withdrawn/ folder), detach it from every site
    that had it as its signing CA, and audit it, in the caller's transaction."""
    from emr.signing.exceptions import PkiError
    from emr.signing.pki import withdraw_trust_anchor

    owners = [x for x in list_sites(session) if digest in (x.signing_ca_sha256 or "").split()]
    try:
        gone = withdraw_trust_anchor(anchors_dir, digest, reason=reason, by=actor.username or "",
                                     owners=[x.name for x in owners])
    except PkiError:  # not in the store (withdrawn a moment ago in another tab) or not a fingerprint
        raise NotFoundError("trust anchor", digest) from None
    for site in owners:
        site.signing_ca_sha256 = " ".join(d for d in (site.signing_ca_sha256 or "").split() if d != digest) or None
    audit.record(session, actor, "signing.trust_anchor.withdraw", object_type="trust_anchor", object_id=digest,
                 details={"subject": gone.subject, "sha256": digest, "reason": reason,
                          "owners": list(gone.owners), "sites": [x.id for x in owners],
                          "not_after": gone.not_after.isoformat(), "record": gone.path.name})


def withdraw_anchor(session: Session, actor: Actor, sha256: str, reason: str | None, *,
                    trust_anchors_dir: Path | str, confirmed: bool) -> None:
    """An admin stops trusting a CA at once (compromised, retired): see :func:`emr.signing.pki.withdraw_trust_anchor`.
    Needs the admin's confirmation and a reason; every verification from now on reads the store without it."""
    if not allowed(actor.role, "network.manage"):
        raise PermissionDenied("network.manage")
    errors: dict[str, str] = {}
    cleaned = ""
    try:
        cleaned = withdraw_reason(reason)
    except ValidationFailed as exc:
        errors.update(exc.fields)
    if not confirmed:
        errors["withdraw_confirm"] = "network.error.withdraw_unconfirmed"
    if errors:
        raise ValidationFailed(errors)
    _withdraw(session, actor, trust_anchors_dir, sha256, cleaned)
    session.commit()


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


def _clean_all(data: SiteIn, actor: Actor) -> tuple[dict[str, Any], tuple[bytes, list[SigningCa]] | None]:
    """Every field checked at once, so the form shows all its problems together. Trusting a CA is
    the admins' alone: the routes check it, and so does this rule, before anything is read or kept."""
    if (data.signing_ca_pem or "").strip() and not allowed(actor.role, "network.manage"):
        raise PermissionDenied("network.manage")
    errors: dict[str, str] = {}
    params: dict[str, dict[str, object]] = {}
    values: dict[str, Any] = {}
    ca = None
    try:
        values = _clean(data)
    except ValidationFailed as exc:
        errors.update(exc.fields)
        params.update(exc.field_params)
    try:
        ca = _check_signing_ca(data)
    except ValidationFailed as exc:
        errors.update(exc.fields)
        params.update(exc.field_params)
    if data.withdraw_previous and (data.signing_ca_pem or "").strip():
        try:
            withdraw_reason(data.withdraw_previous_reason)
        except ValidationFailed as exc:
            errors.update(exc.fields)
    if errors:
        raise ValidationFailed(errors, params=params)
    return values, ca


def create_site(
    session: Session, actor: Actor, data: SiteIn, *, inbound_token: str | None = None,
    trust_anchors_dir: Path | str | None = None,
) -> tuple[NetworkSite, str | None]:
    """Register a facility. Without ``inbound_token`` one is generated and returned (shown once).
    A confirmed signing CA in ``data`` goes into the trust store at ``trust_anchors_dir``."""
    values, ca = _clean_all(data, actor)
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
    if ca is not None:
        _attach_signing_ca(session, actor, site, ca, trust_anchors_dir)
    session.commit()
    return site, issued


def update_site(
    session: Session, actor: Actor, site_id: int, data: SiteIn, *, active: bool | None = None,
    new_token: bool = False, trust_anchors_dir: Path | str | None = None,
) -> tuple[NetworkSite, str | None]:
    site = get_or_404(session, NetworkSite, site_id, "network site")
    values, ca = _clean_all(data, actor)
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
    if ca is not None and (site.signing_ca_sha256 or "").split() != [c.sha256 for c in ca[1]]:
        changed.append("signing_ca")
    site.updated_at = utcnow()
    audit.record(session, actor, "network.site.update", object_type="network_site", object_id=site.id,
                 details={"changed": changed, "active": site.active})
    if ca is not None:
        withdraw = withdraw_reason(data.withdraw_previous_reason) if data.withdraw_previous else None
        _attach_signing_ca(session, actor, site, ca, trust_anchors_dir, withdraw)
    session.commit()
    return site, issued


def list_sites(session: Session, *, active_only: bool = False) -> list[NetworkSite]:
    q = select(NetworkSite).order_by(NetworkSite.name)
    if active_only:
        q = q.where(NetworkSite.active.is_(True))
    return list(session.scalars(q))


def get_site(session: Session, site_id: int) -> NetworkSite:
    return get_or_404(session, NetworkSite, site_id, "network site")


def site_signing_ca(site: NetworkSite, trust_anchors_dir: Path | str) -> list[SigningCa]:
    """The CA attached to ``site``, as the trust store holds it (``in_store`` False: removed by hand)."""
    from emr.signing.pki import list_trust_anchors

    wanted = (site.signing_ca_sha256 or "").split()
    if not wanted:
        return []
    held = {a.sha256: a for a in list_trust_anchors(trust_anchors_dir)}
    out = []
    for digest in wanted:
        a = held.get(digest)
        out.append(SigningCa(a.subject, digest, a.not_after.replace(tzinfo=None)) if a is not None
                   else SigningCa("", digest, datetime.min, in_store=False))
    return out


def anchor_owners(session: Session) -> dict[str, list[str]]:
    """Trust anchor SHA-256 → the names of the sites whose signing CA it is (several sites may share
    a licensed CA)."""
    owners: dict[str, list[str]] = {}
    for site in list_sites(session):
        for digest in (site.signing_ca_sha256 or "").split():
            owners.setdefault(digest, []).append(site.name)
    return owners


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
