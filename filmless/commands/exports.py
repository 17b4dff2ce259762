"""Sub-commands of the exports: export xml130 | hsba | config."""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import date
from pathlib import Path
from typing import Any

from ..settings import Settings


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from exc


def register(sub: Any) -> None:
    exp = sub.add_parser("export", help="insurance XML (QĐ 130/4750), HoSoBenhAn record export, export settings")
    esub = exp.add_subparsers(dest="export_command", metavar="ACTION")

    p = esub.add_parser("xml130", help="signed GIAMDINHHS envelopes (XML1/3/4/5) for visits closed in a date range")
    p.add_argument("--from", dest="start", type=_date, required=True, help="first discharge date (YYYY-MM-DD, local)")
    p.add_argument("--to", dest="end", type=_date, required=True, help="last discharge date (inclusive)")
    p.add_argument("--out", type=Path, default=Path("xml130"), help="output folder (one <MA_LK>.xml per visit)")
    p.add_argument("--base64", action="store_true", help="also write <MA_LK>.b64, the form the portal accepts")
    p.set_defaults(func=cmd_xml130)

    p = esub.add_parser("hsba", help="one encounter as HoSoBenhAn (JSON or XML)")
    p.add_argument("encounter", help="encounter id or visit code (MA_LK)")
    p.add_argument("--format", choices=["json", "xml"], default="json")
    p.add_argument("--out", type=Path,
                   help="output file or existing folder (default: HoSoBenhAn_<MA_LK>.<format> here)")
    p.set_defaults(func=cmd_hsba)

    p = esub.add_parser("config", help="set MA_TTDV, machine codes (MA_MAY) and the facility signing key")
    p.add_argument("--head-code", help="MA_TTDV: health ID (social-insurance number, 10 characters) of the head")
    p.add_argument("--public-url", help="public URL of this installation, used in exported links (viewer, DICOMweb)")
    p.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="MODALITY_OR_AET=CODE",
        help="MA_MAY for a modality (CT, MR, ...) or a station AE title, e.g. CT=CL.1.79001.00012",
    )
    p.add_argument("--p12", type=Path, help="facility PKCS#12 file")
    p.add_argument("--password-file", type=Path, help="file holding the PKCS#12 password")
    p.add_argument("--token-lib", help="PKCS#11 library of the facility token")
    p.add_argument("--token-label")
    p.add_argument("--key-label")
    p.add_argument("--pin-file", type=Path)
    p.add_argument(
        "--dev-key",
        type=Path,
        metavar="PKI_DIR",
        help="issue a facility certificate from the development PKI in PKI_DIR and use it",
    )
    p.set_defaults(func=cmd_config)


def _actor() -> Any:
    from emr import Actor

    return Actor(None, f"cli:{getpass.getuser()}", "cli", None)


def _session(settings: Settings) -> Any:
    from emr import open_session, upgrade_database
    from emr.identity.adapter import configure, gateway_from_settings

    upgrade_database(settings.emr)
    # Issue 15 §3: exports from the command line check CCCDs against the population database too.
    s = settings.emr
    configure(gateway_from_settings(s.identity_url, s.identity_credential_file, s.identity_timeout))
    return open_session(settings.emr)


def _print_problems(visit: str, problems: list[Any]) -> None:
    print(f"  {visit}: {len(problems)} lỗi", file=sys.stderr)
    for p in problems:
        print(f"    - {p.message}", file=sys.stderr)


def cmd_xml130(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from emr.exports import (
        ExportError,
        encode_for_submission,
        encounters_between,
        export_xml130_range,
        load_config,
        open_facility_key,
        write_atomically,
    )

    if args.end < args.start:
        print("filmless export: --to is before --from", file=sys.stderr)
        return 2
    config = load_config(settings.emr)
    with _session(settings) as session:
        ids = encounters_between(session, args.start, args.end)
        try:
            with open_facility_key(config) as key:
                result = export_xml130_range(
                    session,
                    _actor(),
                    ids,
                    config,
                    key,
                    args.out,
                    progress=lambda it: tqdm(it, total=len(ids), unit="hồ sơ", disable=None, file=sys.stderr),
                )
        except ExportError as exc:
            from emr.i18n import t

            print(f"filmless export: {t(exc.key)} ({exc.message})", file=sys.stderr)
            return 1
    if args.base64:
        for path in result.written:
            write_atomically(path.with_suffix(".b64"), encode_for_submission(path.read_bytes()))
    print(f"{len(result.written)} hồ sơ đã ký → {args.out}; {len(result.failed)} hồ sơ chưa đạt kiểm tra")
    for visit, problems in result.failed.items():
        _print_problems(visit, problems)
    return 0 if not result.failed else 1


def cmd_hsba(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy import select

    from emr.exports import FacilityKeyError, export_hsba, load_config, open_facility_key, write_atomically
    from emr.models import Encounter
    from emr.signing.service import DbArtifacts

    config = load_config(settings.emr)
    # The same signed artifacts the web export uses: signed PDFs and the CMS
    # over each version, so the JSON verifies offline.
    artifacts = DbArtifacts()
    with _session(settings) as session:
        ident = args.encounter
        enc = session.scalar(select(Encounter).where(Encounter.visit_code == ident))
        if enc is None and ident.isdigit() and int(ident) < 2**31:
            enc = session.get(Encounter, int(ident))
        if enc is None:
            print(f"filmless export: no encounter {ident!r}", file=sys.stderr)
            return 1
        try:
            with open_facility_key(config) as key:
                exp = export_hsba(session, _actor(), enc.id, config, key, args.format, artifacts=artifacts)
        except FacilityKeyError as exc:
            if exc.key != "exports.error.no_key":
                print(f"filmless export: {exc.message}", file=sys.stderr)
                return 1
            print("filmless export: no facility key configured; the export is not signed", file=sys.stderr)
            exp = export_hsba(session, _actor(), enc.id, config, None, args.format, artifacts=artifacts)
    out = args.out or Path(exp.filename)
    if out.is_dir():
        out = out / exp.filename
    write_atomically(out, exp.data)
    print(out)
    return 0


def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from emr.exports import load_config, save_config

    updates: dict[str, Any] = {}
    if args.head_code is not None:
        if args.head_code and not (len(args.head_code) <= 10 and args.head_code.isalnum()):
            print("filmless export: --head-code is the head's health ID (up to 10 characters)", file=sys.stderr)
            return 2
        updates["head_code"] = args.head_code
    if args.public_url is not None:
        if not args.public_url.startswith(("http://", "https://")):
            print("filmless export: --public-url must start with http:// or https://", file=sys.stderr)
            return 2
        updates["public_url"] = args.public_url.rstrip("/")
    if args.device:
        codes = {}
        for item in args.device:
            name, sep, code = item.partition("=")
            if not sep or not name or not code:
                print(f"filmless export: --device wants NAME=CODE, got {item!r}", file=sys.stderr)
                return 2
            codes[name.strip()] = code.strip()
        updates["device_codes"] = codes
    if args.p12:
        updates["facility_p12"] = str(args.p12.resolve())
        if args.password_file:
            updates["facility_p12_password_file"] = str(args.password_file.resolve())
    if args.token_lib:
        if not (args.token_label and args.key_label and args.pin_file):
            print("filmless export: --token-lib needs --token-label, --key-label and --pin-file", file=sys.stderr)
            return 2
        updates["token"] = {
            "library": args.token_lib,
            "token_label": args.token_label,
            "key_label": args.key_label,
            "pin_file": str(args.pin_file.resolve()),
        }
    if args.dev_key:
        from emr.signing.pki import issue_user_certificate, load_dev_pki

        user = issue_user_certificate(load_dev_pki(args.dev_key), "facility", settings.emr.hospital_name)
        updates["facility_p12"] = str(user.p12_path.resolve())
        updates["facility_p12_password_file"] = str(user.password_path.resolve())
        updates["token"] = None
    if updates:
        print(save_config(settings.emr, updates))
    cfg = load_config(settings.emr)
    print(
        json.dumps(
            {
                "MA_CSKCB": cfg.facility_code,
                "MA_TTDV": cfg.head_code,
                "public_url": cfg.public_url,
                "MA_MAY": dict(cfg.device_codes),
                "key": "pkcs11" if cfg.token else (str(cfg.facility_p12) if cfg.facility_p12 else None),
            },
            ensure_ascii=False,
            indent=2,
        )
    )
    return 0
