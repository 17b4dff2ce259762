"""``filmless site add|list``: the other facilities of the provincial network (issue 15), from a shell.

The admin page /network/sites does the same; this is for scripted set-ups and
the README's two-site example. Tokens go through files (mode 0600), never the
command line or the terminal: ``--issue-token-to FILE`` writes the token we
issue to that site (hand the file over), ``--token-file FILE`` reads the one
it issued to us.

``--signing-ca FILE`` attaches the site's signing CA (the CA its clinicians' signing certificates
chain to): the first run prints its subject and SHA-256 fingerprint and stops; after reading the
fingerprint back to the other hospital by phone, run again with ``--signing-ca-fingerprint AA:BB:…``
and it is imported into the trust store (the same one ``filmless pki import-anchor`` fills).
``site trust-ca`` does the same for a site registered earlier.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..settings import Settings


def register(sub: Any) -> None:
    site = sub.add_parser("site", help="other facilities of the provincial network (add, list)")
    ssub = site.add_subparsers(dest="site_command", required=True)
    p = ssub.add_parser("add", help="register a facility: its gateway may send to us, we may send to it")
    p.add_argument("name")
    p.add_argument("--ae", required=True, help="AE title of its DICOM gateway")
    p.add_argument("--host", required=True, help="address of its gateway")
    p.add_argument("--port", type=int, help="DICOM port of its gateway (leave out for an archive reached only by "
                   "DICOMweb: studies then go by STOW-RS)")
    p.add_argument("--emr-url", help="its EMR (e.g. https://bv-tinh.example.vn)")
    p.add_argument("--dicomweb-url", help="its DICOMweb root")
    p.add_argument("--send-by", choices=("dicom", "stow"), help="C-STORE to its gateway or STOW-RS to its DICOMweb")
    p.add_argument("--dicomweb-user", help="user name its DICOMweb asks for (HTTP Basic)")
    p.add_argument("--dicomweb-password-file", type=Path, help="file holding that user's password")
    p.add_argument("--certificate", type=Path, help="PEM certificate/CA its DICOM TLS presents")
    p.add_argument("--token-file", type=Path, help="file holding the token that site issued to us")
    p.add_argument("--issue-token-to", type=Path, required=True,
                   help="file for the token we issue to that site (written 0600; if it exists, its token is used)")
    _signing_ca_args(p, required=False)
    p.set_defaults(func=cmd_site_add)
    p = ssub.add_parser("trust-ca", help="trust a registered facility's signing CA (its reports then verify here)")
    p.add_argument("site", help="its name or AE title")
    _signing_ca_args(p, required=True)
    p.add_argument("--withdraw-previous", metavar="REASON",
                   help="replacing its CA: also withdraw the one attached before from the trust store, for REASON "
                   "(without it the old CA stays trusted; `filmless pki withdraw-anchor` can withdraw it later)")
    p.set_defaults(func=cmd_site_trust_ca)
    p = ssub.add_parser("list", help="the registered facilities")
    p.set_defaults(func=cmd_site_list)


def _signing_ca_args(p: Any, *, required: bool) -> None:
    p.add_argument("--signing-ca", type=Path, required=required, metavar="CA_FILE",
                   help="the CA certificate (PEM, a chain allowed, or DER) that issues its clinicians' signing "
                   "certificates; trusted only with --signing-ca-fingerprint")
    p.add_argument("--signing-ca-fingerprint", action="append", default=[], metavar="SHA256",
                   help="its SHA-256 fingerprint (AA:BB:...) as confirmed by phone with that site; repeat for a chain")


def _signing_ca(args: argparse.Namespace) -> tuple[str | None, str | None, int | None]:
    """(PEM text, confirmed fingerprints, None) when it may go ahead, else an exit code after saying why:
    a refused certificate (1), or its fingerprint still to be confirmed (3)."""
    from emr.core.exceptions import ValidationFailed
    from emr.i18n import t
    from emr.network.sites import as_pem, fingerprints_confirmed, read_signing_ca

    if args.signing_ca is None:
        return None, None, None
    try:
        pem = as_pem(args.signing_ca.read_bytes())
        offered = read_signing_ca(pem)
    except OSError as exc:
        print(f"filmless site: {exc}", file=sys.stderr)
        return None, None, 2
    except ValidationFailed as exc:
        print(f"filmless site: {exc.user_message()}", file=sys.stderr)
        return None, None, 1
    confirmed = ",".join(args.signing_ca_fingerprint)
    if not fingerprints_confirmed(offered, confirmed):
        for c in offered:
            print(f"{t('network.signing_ca.subject')}: {c.subject}\n{t('network.signing_ca.fingerprint')}: "
                  f"{c.fingerprint}")
        print(f"filmless site: {t('network.error.signing_ca_unconfirmed')}", file=sys.stderr)
        return None, None, 3
    return pem, confirmed, None


def _read(path: Path | None) -> str | None:
    if path is None:
        return None
    return path.read_text(encoding="utf-8").strip()


def cmd_site_add(args: argparse.Namespace, settings: Settings) -> int:
    import secrets

    from emr.core.exceptions import EmrError
    from emr.network.sites import SiteIn, create_site, uses_stow
    from emr.signing.trust import trust_anchors_dir

    from .emr import _cli_actor, _session

    signing_ca, confirmed, code = _signing_ca(args)
    if code is not None:
        return code  # before the token file is written: nothing happened yet
    try:
        theirs = _read(args.token_file)
        cert = _read(args.certificate)
        ours = _read(args.issue_token_to) if args.issue_token_to.exists() else None
        dicomweb_password = _read(args.dicomweb_password_file)
    except OSError as exc:
        print(f"filmless site: {exc}", file=sys.stderr)
        return 2
    if ours is None:
        ours = secrets.token_urlsafe(32)
        fd = os.open(args.issue_token_to, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(ours + "\n")
    data = SiteIn(args.name, args.ae, args.host, "" if args.port is None else args.port, args.emr_url,
                  args.dicomweb_url, cert, theirs, send_by=args.send_by, dicomweb_username=args.dicomweb_user,
                  dicomweb_password=dicomweb_password, signing_ca_pem=signing_ca, signing_ca_confirm=confirmed)
    with _session(settings) as session:
        try:
            site, _ = create_site(session, _cli_actor(), data, inbound_token=ours,
                                  trust_anchors_dir=trust_anchors_dir(settings.emr))
        except EmrError as exc:
            print(f"filmless site: {exc.user_message()}", file=sys.stderr)
            return 1
    how = f"STOW-RS to {site.dicomweb_url}" if uses_stow(site) else f"C-STORE to {site.host}:{site.port}"
    print(f"site {site.name} ({site.ae_title}, {how}) registered; "
          f"the token it must present is in {args.issue_token_to}")
    return 0


def cmd_site_trust_ca(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy import or_, select

    from emr.core.exceptions import EmrError
    from emr.i18n import t
    from emr.models import NetworkSite
    from emr.network.sites import SiteIn, update_site
    from emr.signing.trust import trust_anchors_dir

    from .emr import _cli_actor, _session

    signing_ca, confirmed, code = _signing_ca(args)
    if code is not None:
        return code
    with _session(settings) as session:
        site = session.scalar(select(NetworkSite).where(or_(NetworkSite.name == args.site,
                                                            NetworkSite.ae_title == args.site)))
        if site is None:
            print(f"filmless site: no site named {args.site!r}", file=sys.stderr)
            return 1
        # The site's own values, unchanged (blank secrets keep the stored ones): only the CA is new.
        data = SiteIn(site.name, site.ae_title, site.host, site.port if site.port else "", site.emr_url,
                      site.dicomweb_url, site.certificate_pem, None, send_by=site.send_by,
                      dicomweb_username=site.dicomweb_username, signing_ca_pem=signing_ca,
                      signing_ca_confirm=confirmed, withdraw_previous=args.withdraw_previous is not None,
                      withdraw_previous_reason=args.withdraw_previous)
        previous = (site.signing_ca_sha256 or "").split()
        try:
            site, _ = update_site(session, _cli_actor(), site.id, data,
                                  trust_anchors_dir=trust_anchors_dir(settings.emr))
        except EmrError as exc:
            print(f"filmless site: {exc.user_message()}", file=sys.stderr)
            return 1
        print(t("network.anchors.owner", site=site.name) + f": {site.signing_ca_sha256}")
        from emr.signing.pki import list_trust_anchors

        still = {a.sha256 for a in list_trust_anchors(trust_anchors_dir(settings.emr))}
        for digest in previous:
            if digest in still and digest not in (site.signing_ca_sha256 or "").split():
                # The offer to withdraw the CA this one replaces (the web form's checkbox).
                print(f"{t('network.signing_ca.current')}: {digest} → filmless pki withdraw-anchor {digest} "
                      f"--reason ... (or --withdraw-previous REASON)")
    return 0


def cmd_site_list(args: argparse.Namespace, settings: Settings) -> int:
    from emr.network.sites import list_sites

    from .emr import _session

    with _session(settings) as session:
        for site in list_sites(session):
            state = "active" if site.active else "disabled"
            print(f"{site.name}\t{site.ae_title}@{site.host}:{site.port}\t{site.emr_url or '-'}\t{state}")
    return 0
