"""``filmless site add|list``: the other facilities of the provincial network (issue 15), from a shell.

The admin page /network/sites does the same; this is for scripted set-ups and
the README's two-site example. Tokens go through files (mode 0600), never the
command line or the terminal: ``--issue-token-to FILE`` writes the token we
issue to that site (hand the file over), ``--token-file FILE`` reads the one
it issued to us.
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
    p.set_defaults(func=cmd_site_add)
    p = ssub.add_parser("list", help="the registered facilities")
    p.set_defaults(func=cmd_site_list)


def _read(path: Path | None) -> str | None:
    if path is None:
        return None
    return path.read_text(encoding="utf-8").strip()


def cmd_site_add(args: argparse.Namespace, settings: Settings) -> int:
    import secrets

    from emr.core.exceptions import EmrError
    from emr.network.sites import SiteIn, create_site, uses_stow

    from .emr import _cli_actor, _session

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
                  dicomweb_password=dicomweb_password)
    with _session(settings) as session:
        try:
            site, _ = create_site(session, _cli_actor(), data, inbound_token=ours)
        except EmrError as exc:
            print(f"filmless site: {exc}", file=sys.stderr)
            return 1
    how = f"STOW-RS to {site.dicomweb_url}" if uses_stow(site) else f"C-STORE to {site.host}:{site.port}"
    print(f"site {site.name} ({site.ae_title}, {how}) registered; "
          f"the token it must present is in {args.issue_token_to}")
    return 0


def cmd_site_list(args: argparse.Namespace, settings: Settings) -> int:
    from emr.network.sites import list_sites

    from .emr import _session

    with _session(settings) as session:
        for site in list_sites(session):
            state = "active" if site.active else "disabled"
            print(f"{site.name}\t{site.ae_title}@{site.host}:{site.port}\t{site.emr_url or '-'}\t{state}")
    return 0
