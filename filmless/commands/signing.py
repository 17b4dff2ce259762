"""Sub-commands for signatures: pki init / import-anchor / list / withdraw-anchor, verify.

Files live under ``<FILMLESS_DATA_DIR>/pki``: ``dev/`` holds the development
CA (``filmless pki init``), ``trust-anchors/`` the CA certificates signatures
are checked against (the development CA after ``pki init``; a licensed CA's
chain after ``pki import-anchor``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ..settings import Settings


def register(sub: Any) -> None:
    pki = sub.add_parser("pki", help="certificates: development CA, trust anchors")
    pki_sub = pki.add_subparsers(dest="pki_command", metavar="PKI_COMMAND")
    pki.set_defaults(func=lambda args, settings: (pki.print_help(), 2)[1])

    p = pki_sub.add_parser("init", help="make a DEVELOPMENT CA, TSA and demo user certificates (NOT for clinical use)")
    p.add_argument("--force", action="store_true", help="replace an existing development CA")
    p.add_argument("--crl-url", help="CRL distribution point written into the certificates")
    p.set_defaults(func=cmd_pki_init)

    p = pki_sub.add_parser("import-anchor", help="trust a CA certificate (PEM bundle or DER file)")
    p.add_argument("file", type=Path, metavar="CERT")
    p.set_defaults(func=cmd_pki_import)

    p = pki_sub.add_parser("list", help="list the trust anchors (and those withdrawn)")
    p.set_defaults(func=cmd_pki_list)

    p = pki_sub.add_parser(
        "withdraw-anchor", aliases=["remove-anchor"],
        help="stop trusting a CA at once (compromised, retired); kept under trust-anchors/withdrawn/, audited",
    )
    p.add_argument("sha256", metavar="FINGERPRINT", help="its SHA-256 as `pki list` prints it (hex or AA:BB:…)")
    p.add_argument("--reason", required=True, help="why (kept with the withdrawn certificate and in the audit log)")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_pki_withdraw)

    p = pki_sub.add_parser("tsa", help="run the DEVELOPMENT time-stamping service (and CRL) on localhost")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one, printed)")
    p.set_defaults(func=cmd_pki_tsa)

    p = sub.add_parser("retention", help="retention of records (Circular 33/2025)")
    ret_sub = p.add_subparsers(dest="retention_command", metavar="RETENTION_COMMAND")
    p.set_defaults(func=lambda args, settings: (p.print_help(), 2)[1])
    r = ret_sub.add_parser("report", help="list records past their retention period (nothing is deleted)")
    r.add_argument("--date", help="as of this date (YYYY-MM-DD; default today)")
    r.add_argument("--json", action="store_true", help="print JSON")
    r.set_defaults(func=cmd_retention_report)

    p = sub.add_parser("verify", help="verify the digital signatures of a PDF; exit 0 only if valid")
    p.add_argument("file", type=Path, metavar="FILE.pdf")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--crl",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="extra CRL (DER or PEM) to check revocation against; repeatable",
    )
    p.add_argument("--fetch", action="store_true", help="also fetch CRL/OCSP from the URLs in the certificates")
    p.set_defaults(func=cmd_verify)


def _pki_dir(settings: Settings) -> Path:
    return settings.data_dir / "pki"


def _anchors_dir(settings: Settings) -> Path:
    """The trust store the EMR verifies against (FILMLESS_TRUST_ANCHORS, default <data>/pki/trust-anchors)."""
    from emr.signing.trust import trust_anchors_dir

    return trust_anchors_dir(settings.emr)


def _anchor_owners(settings: Settings) -> dict[str, list[str]]:
    """Trust anchor SHA-256 → the network sites whose signing CA it is; {} when the database is not reachable."""
    from emr import open_session
    from emr.network.sites import anchor_owners

    url = settings.emr.database_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return {}  # no database yet (connecting would create an empty file)
    try:
        with open_session(settings.emr) as session:
            return anchor_owners(session)
    except Exception:  # noqa: BLE001 - the list of files is still worth printing without the names
        return {}


def _fail(exc: Exception) -> int:
    from emr.signing import SigningError

    if isinstance(exc, SigningError):
        print(f"filmless: {exc.user_message()} ({exc.detail})", file=sys.stderr)
    else:
        print(f"filmless: {exc}", file=sys.stderr)
    return 1


def cmd_pki_init(args: argparse.Namespace, settings: Settings) -> int:
    from emr.signing import SigningError, import_trust_anchor, init_dev_pki

    try:
        pki = init_dev_pki(_pki_dir(settings) / "dev", crl_url=args.crl_url, overwrite=args.force)
        import_trust_anchor(pki.ca_cert_path.read_bytes(), _anchors_dir(settings))
    except SigningError as exc:
        return _fail(exc)
    print(f"Development CA (NOT FOR CLINICAL USE): {pki.ca_cert_path}")
    print(f"  CRL: {pki.crl_path}   TSA certificate: {pki.tsa_cert_path}")
    print(f"  trusted for verification: {_anchors_dir(settings)}")
    for user in pki.users.values():
        print(f"  {user.user_id:<10} {user.name:<24} {user.p12_path}  (password in {user.password_path})")
    return 0


def cmd_pki_import(args: argparse.Namespace, settings: Settings) -> int:
    from emr.signing import SigningError, import_trust_anchor

    try:
        anchors = import_trust_anchor(args.file.read_bytes(), _anchors_dir(settings))
    except (OSError, SigningError) as exc:
        return _fail(exc)
    for anchor in anchors:
        print(f"trusted: {anchor.subject}  sha256 {anchor.sha256}")
    return 0


def cmd_pki_list(args: argparse.Namespace, settings: Settings) -> int:
    from emr.signing import list_trust_anchors

    anchors = list_trust_anchors(_anchors_dir(settings))
    if not anchors:
        print("no trust anchors (filmless pki import-anchor CERT, or filmless pki init for development)")
        _print_withdrawn(settings)
        return 0
    from emr.i18n import t

    owners = _anchor_owners(settings)
    for anchor in anchors:
        flags = [t("network.anchors.owner", site=name) for name in owners.get(anchor.sha256, [])]
        if anchor.is_development:
            flags.append("DEVELOPMENT")
        if anchor.expired:
            flags.append("EXPIRED")
        print(
            f"{anchor.subject}\n  valid {anchor.not_before:%Y-%m-%d} → {anchor.not_after:%Y-%m-%d}"
            f"  sha256 {anchor.sha256}  {' '.join(flags)}".rstrip()
        )
    _print_withdrawn(settings)
    return 0


def _print_withdrawn(settings: Settings) -> None:
    from emr.core.clock import facility_zone
    from emr.i18n import t
    from emr.signing import list_withdrawn_anchors

    withdrawn = list_withdrawn_anchors(_anchors_dir(settings))
    if withdrawn:
        print(f"\n{t('network.withdrawn.title')}:")
    for w in withdrawn:
        print(f"{w.subject}\n  sha256 {w.sha256}  {w.withdrawn_at.astimezone(facility_zone()):%d/%m/%Y %H:%M} "
              f"{w.withdrawn_by}: {w.reason}")


def cmd_pki_withdraw(args: argparse.Namespace, settings: Settings) -> int:
    """Withdraw a trust anchor: the same rule as the web page (emr.network.sites.withdraw_anchor), audited
    as the CLI user; asks first unless --yes (without a terminal to ask on, refuses)."""
    from emr.core.exceptions import EmrError
    from emr.i18n import t
    from emr.network.sites import withdraw_anchor
    from emr.signing import list_trust_anchors

    from .emr import _cli_actor, _session

    digest = args.sha256.strip().replace(":", "").lower()
    anchor = next((a for a in list_trust_anchors(_anchors_dir(settings)) if a.sha256 == digest), None)
    if anchor is None:
        print(f"filmless pki: {t('signing.error.anchor_unknown')} ({args.sha256})", file=sys.stderr)
        return 1
    owners = _anchor_owners(settings).get(anchor.sha256, [])
    print(f"{anchor.subject}\n  sha256 {anchor.sha256}  "
          + " ".join(t("network.anchors.owner", site=name) for name in owners))
    if not args.yes:
        if not sys.stdin.isatty():
            print(f"filmless pki: {t('network.error.withdraw_unconfirmed')} (--yes)", file=sys.stderr)
            return 3
        if input(f"{t('network.withdraw.confirm')} [y/N] ").strip().lower() not in ("y", "yes", "c", "có"):
            return 3
    with _session(settings) as session:
        try:
            withdraw_anchor(session, _cli_actor(), anchor.sha256, args.reason,
                            trust_anchors_dir=_anchors_dir(settings), confirmed=True)
        except EmrError as exc:
            print(f"filmless pki: {exc.user_message()}", file=sys.stderr)
            return 1
    print(t("network.withdraw.done"))
    return 0


def _load_crl(path: Path) -> Any:
    from cryptography import x509

    data = path.read_bytes()
    return x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data)


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from emr.core.clock import facility_zone
    from emr.i18n import t
    from emr.signing import load_trust_anchors, verify_pdf

    try:
        data = args.file.read_bytes()
        crls = [_load_crl(p) for p in args.crl]
    except (OSError, ValueError) as exc:
        print(f"filmless verify: {exc}", file=sys.stderr)
        return 2
    anchors = load_trust_anchors(_anchors_dir(settings))
    if not anchors:
        # Without a trusted CA no signature can be checked: say so in one line, not a traceback each.
        print(t("signing.verify.no_anchors_cli", dir=_anchors_dir(settings)), file=sys.stderr)
        return 2
    if not getattr(args, "verbose", False):
        # pyHanko logs every path it cannot build with a full traceback; the report below says why.
        logging.getLogger("pyhanko").setLevel(logging.CRITICAL)
        logging.getLogger("pyhanko_certvalidator").setLevel(logging.CRITICAL)
    report = verify_pdf(data, anchors, crls=crls, allow_fetching=args.fetch)
    if args.json:
        print(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
        return 0 if report.valid else 1
    verdict = t("signing.verify.valid") if report.valid else t("signing.verify.invalid")
    print(f"{args.file}: {verdict.upper()}  (sha256 {report.sha256})")
    for key in report.problems:
        print(f"  - {t(key)}")
    for sig in report.signatures:
        state = t("signing.verify.valid") if sig.valid else t("signing.verify.invalid")
        when = sig.timestamp_time or sig.signing_time
        when_text = f"; {when.astimezone(facility_zone()):%d/%m/%Y %H:%M:%S %z}" if when else ""
        print(
            f"  [{sig.field_name}] {sig.signer_name or '?'}: {state}"
            f"; {t('signing.verify.chain.' + sig.chain_status)}{when_text}"
        )
        for key in sig.problems:
            print(f"      - {t(key)}")
    return 0 if report.valid else 1


def cmd_pki_tsa(args: argparse.Namespace, settings: Settings) -> int:
    from emr.signing import DevPkiServer, SigningError, load_dev_pki

    try:
        pki = load_dev_pki(_pki_dir(settings) / "dev")
    except SigningError as exc:
        return _fail(exc)
    server = DevPkiServer(pki.directory, port=args.port)
    print(f"development TSA (NOT FOR CLINICAL USE): {server.tsa_url}", flush=True)
    import signal

    def _interrupt(*_: object) -> None:
        raise KeyboardInterrupt  # `filmless up` stops its children with SIGTERM

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def demo_tsa(settings: Settings, demo: bool) -> tuple[Any, dict[str, str]] | None:
    """For `filmless up`: a dev TSA child and the EMR child's extra environment, when the
    development PKI exists (made here first with ``demo``) and no FILMLESS_TSA_URL is set."""
    import os
    import socket

    from ..supervisor import Child

    if settings.emr.tsa_url:
        return None
    if demo:
        from emr.demo.signing import run_token_step

        run_token_step(settings.emr)  # PKI + demo token, in a child process
    if not (_pki_dir(settings) / "dev" / "ca.pem").is_file():
        return None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ)  # the children inherit the environment, plus:
    env["FILMLESS_TSA_URL"] = f"http://127.0.0.1:{port}/tsa"
    conf = settings.data_dir / "softhsm" / "softhsm2.conf"
    if settings.emr.softhsm2_conf is None and conf.is_file():
        env["FILMLESS_SOFTHSM2_CONF"] = str(conf)
    return Child("tsa", ["pki", "tsa", "--port", str(port)]), env


def cmd_retention_report(args: argparse.Namespace, settings: Settings) -> int:
    import datetime as dt

    from emr.core.clock import local_today
    from emr.db import make_engine, make_session_factory
    from emr.signing.service import past_retention

    try:
        today = dt.date.fromisoformat(args.date) if args.date else local_today()
    except ValueError:
        print(f"filmless retention: bad date {args.date!r} (YYYY-MM-DD)", file=sys.stderr)
        return 2
    engine = make_engine(settings.emr.database_url)
    try:
        with make_session_factory(engine)() as session:
            rows = past_retention(session, today)
    finally:
        engine.dispose()
    if args.json:
        print(
            json.dumps(
                [
                    {**vars(r), "closed_at": r.closed_at.isoformat(), "keep_until": r.keep_until.isoformat()}
                    for r in rows
                ],
                ensure_ascii=False,
                indent=2,
            )
        )
        return 0
    if not rows:
        print(f"no records past retention on {today:%d/%m/%Y}")
        return 0
    print(f"{len(rows)} record(s) past retention on {today:%d/%m/%Y} (nothing is deleted):")
    for r in rows:
        print(
            f"  document {r.document_id:<8} patient {r.patient_id:<8} {r.form_type:<20} {r.record_type:<18}"
            f" closed {r.closed_at:%d/%m/%Y}  kept until {r.keep_until:%d/%m/%Y}"
        )
    return 0
