"""Sub-commands of the EMR: emr ..., audit verify|anchor, demo."""

from __future__ import annotations

import argparse
import getpass
import secrets
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

from ..settings import Settings

# emr.catalogues.KINDS, spelled out so `filmless --help` does not import the EMR.
CATALOGUE_KINDS = (
    "icd10", "dvkt", "facility", "department", "admin_unit", "admin_unit_map", "ethnicity", "occupation", "religion",
)
_PACKAGED = ("admin_unit", "admin_unit_map", "ethnicity", "religion")  # kinds with a list shipped with filmless


def register(sub: Any) -> None:
    emr = sub.add_parser("emr", help="EMR administration (users, tokens, catalogues, database, server)")
    esub = emr.add_subparsers(dest="emr_command", metavar="ACTION")

    p = esub.add_parser("serve", help="run the EMR web service (waitress) with the study linker")
    p.add_argument("--demo", action="store_true",
                   help="allow a data directory that still holds the demo (published passwords, development CA)")
    p.set_defaults(func=cmd_serve)
    p = esub.add_parser("migrate", help="upgrade the EMR database to the newest schema")
    p.set_defaults(func=cmd_migrate)

    p = esub.add_parser("create-admin", help="create an administrator account")
    p.add_argument("username")
    p.add_argument("--full-name", default="Quản trị hệ thống")
    p.add_argument("--password", help="default: ask, or generate and print one with --generate")
    p.add_argument("--generate", action="store_true", help="generate a random password and print it")
    p.set_defaults(func=cmd_create_user, role="admin")

    p = esub.add_parser("create-user", help="create an account with a role")
    p.add_argument("username")
    p.add_argument("role", choices=["admin", "physician", "radiologist", "technician", "nurse", "records_clerk"])
    p.add_argument("--full-name", required=True)
    p.add_argument("--cert", help="practising-certificate number (CCHN), used in insurance exports")
    p.add_argument("--password")
    p.add_argument("--generate", action="store_true")
    p.set_defaults(func=cmd_create_user)

    p = esub.add_parser("create-token", help="create an API token for a user (printed once)")
    p.add_argument("username")
    p.add_argument("--name", default="api")
    p.add_argument("--days", type=int, default=90, help="days until the token expires (1-366, default 90)")
    p.set_defaults(func=cmd_create_token)

    p = esub.add_parser(
        "load-icd10",
        help="older: the diagnosis code table from a CSV/TSV file (code,title), unversioned; "
        "prefer load-catalogue icd10",
    )
    p.add_argument("file", type=Path)
    p.set_defaults(func=cmd_load_icd10)

    p = esub.add_parser(
        "load-prices",
        help="load service prices from a CSV/TSV file "
        "(code,name,unit,price_hospital,price_insurance,valid_from); all lines or none",
    )
    p.add_argument("file", type=Path)
    p.set_defaults(func=cmd_load_prices)

    p = esub.add_parser(
        "load-catalogue",
        help="load a Ministry catalogue (CSV/XLSX as published) as a new version; all lines or none",
    )
    p.add_argument("kind", choices=[*CATALOGUE_KINDS, "prices"],
                   help="prices = the hospital's own price list (same as load-prices)")
    p.add_argument("file", type=Path, nargs="?", help="the file (omit with --package)")
    p.add_argument("--valid-from", help="first day the version is in force (yyyy-mm-dd or dd/mm/yyyy; default today)")
    p.add_argument("--package", action="store_true",
                   help="admin_unit: the units of the vietnam-provinces package; "
                        "admin_unit_map: the old-to-new commune mapping shipped with filmless; "
                        "ethnicity, religion: the Statistics Office's lists shipped with filmless")
    p.set_defaults(func=cmd_load_catalogue)

    p = esub.add_parser("add-department", help="add a department (code = MA_KHOA)")
    p.add_argument("code")
    p.add_argument("name")
    p.set_defaults(func=cmd_add_department)

    audit = sub.add_parser("audit", help="audit log tools")
    asub = audit.add_subparsers(dest="audit_command", metavar="ACTION")
    p = asub.add_parser(
        "verify",
        help="check the audit hash chain and its timestamp anchors; exit 1 if any row was edited, inserted or deleted",
    )
    p.add_argument("--anchors", type=Path, help="also check this copy of audit-anchors.jsonl (e.g. kept off-site)")
    p.set_defaults(func=cmd_audit_verify)
    p = asub.add_parser("anchor", help="timestamp the audit chain's head now at the TSA (FILMLESS_TSA_URL)")
    p.set_defaults(func=cmd_audit_anchor)

    p = sub.add_parser("demo", help="seed demo accounts, Vietnamese demo patients, orders and a sent study")
    p.add_argument("--no-study", action="store_true", help="do not upload the demo CT study to Orthanc")
    p.add_argument("--disable", action="store_true",
                   help="end the demo in this data directory: demo accounts locked with unknown passwords, "
                        "development CA no longer trusted, its TSA no longer started")
    p.set_defaults(func=cmd_demo)


def _session(settings: Settings) -> Any:
    from emr import open_session, upgrade_database

    upgrade_database(settings.emr)
    return open_session(settings.emr)


def _cli_actor() -> Any:
    from emr import Actor

    return Actor(None, f"cli:{getpass.getuser()}", "admin", None)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from emr import serve
    from filmless.wiring import network_extension, ops_extension, viewer_extension
    from storage import open_store

    from .stack import refuse_demo_leftovers

    if not args.demo and refuse_demo_leftovers(settings):
        return 2
    store = open_store(settings.storage)
    gw = settings.gateway  # issue 15: C-STORE to other facilities as our gateway (its AE title, its certificate)
    network = network_extension(store, gw.ae_title, gw.tls_cert, gw.tls_key)
    serve(settings.emr, store, extensions=[viewer_extension(store), ops_extension(settings), network])
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from emr import upgrade_database

    upgrade_database(settings.emr)
    print("EMR database is at the newest schema.")
    return 0


def cmd_create_user(args: argparse.Namespace, settings: Settings) -> int:
    from emr import EmrError
    from emr.access.users import create_user
    from emr.i18n import t

    password = args.password
    if args.generate or (password is None and not sys.stdin.isatty()):
        password = secrets.token_urlsafe(12)
        print(f"password: {password}")
    elif password is None:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print(t("users.cli.passwords_differ"), file=sys.stderr)
            return 2
    with _session(settings) as session:
        try:
            user = create_user(
                session,
                _cli_actor(),
                args.username,
                password,
                args.role,
                args.full_name,
                practising_cert_no=getattr(args, "cert", None),
            )
        except EmrError as exc:
            print(f"filmless emr: {exc.user_message()}", file=sys.stderr)
            return 1
    print(f"created {user.role} {user.username}")
    return 0


def cmd_create_token(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy import select

    from emr.access.users import create_token
    from emr.core.exceptions import EmrError
    from emr.i18n import t
    from emr.models import User

    with _session(settings) as session:
        user = session.scalar(select(User).where(User.username == args.username))
        if user is None:
            print(t("users.cli.no_user", username=args.username), file=sys.stderr)
            return 1
        try:
            print(create_token(session, _cli_actor(), user.id, args.name, days=args.days))
        except EmrError as exc:
            print(f"filmless emr: {exc.user_message()}", file=sys.stderr)
            return 1
    return 0


def cmd_load_icd10(args: argparse.Namespace, settings: Settings) -> int:
    from emr.i18n import t
    from emr.patients.encounters import load_icd10

    if not args.file.is_file():
        print(t("prices.cli.no_file", file=args.file), file=sys.stderr)
        return 2
    with _session(settings) as session:
        print(f"loaded {load_icd10(session, _cli_actor(), args.file)} ICD-10 codes")
    return 0


def cmd_load_prices(args: argparse.Namespace, settings: Settings) -> int:
    from emr.billing.prices import load_prices
    from emr.core.exceptions import FileRejected
    from emr.i18n import t

    if not args.file.is_file():
        print(t("prices.cli.no_file", file=args.file), file=sys.stderr)
        return 2
    with _session(settings) as session:
        try:
            result = load_prices(session, _cli_actor(), args.file)
        except FileRejected as exc:
            print(t("prices.cli.rejected", file=args.file.name, count=len(exc.problems)), file=sys.stderr)
            for message in exc.messages():
                print(f"  {message}", file=sys.stderr)
            return 1
    print(t("prices.cli.loaded", added=result.added, unchanged=result.unchanged))
    return 0


def _day(text: str) -> date | None:
    for fmt in ("%Y-%m-%d", "%d/%m/%Y"):
        try:
            return datetime.strptime(text.strip(), fmt).date()
        except ValueError:
            continue
    return None


def cmd_load_catalogue(args: argparse.Namespace, settings: Settings) -> int:
    from emr.core.clock import local_today
    from emr.core.exceptions import FileRejected
    from emr.i18n import t

    if args.kind == "prices":
        return cmd_load_prices(args, settings)
    valid_from = _day(args.valid_from) if args.valid_from else local_today()
    if valid_from is None:
        print(t("catalogues.cli.bad_date", value=args.valid_from), file=sys.stderr)
        return 2
    if args.package != (args.file is None) or (args.package and args.kind not in _PACKAGED):
        print(t("catalogues.cli.file_or_package"), file=sys.stderr)
        return 2
    if args.file is not None and not args.file.is_file():
        print(t("prices.cli.no_file", file=args.file), file=sys.stderr)
        return 2
    from emr.catalogues import (
        admin_unit_map_from_package,
        admin_units_from_package,
        demographics_from_package,
        load_catalogue,
        store_version,
    )

    with _session(settings) as session:
        try:
            if args.package:
                if args.kind in ("ethnicity", "religion"):
                    lines, source, digest = demographics_from_package(args.kind)
                else:
                    packaged = admin_units_from_package if args.kind == "admin_unit" else admin_unit_map_from_package
                    lines, source, digest = packaged()
                result = store_version(
                    session, _cli_actor(), args.kind, lines, valid_from=valid_from, source=source, sha256=digest
                )
            else:
                result = load_catalogue(session, _cli_actor(), args.kind, args.file, valid_from=valid_from)
        except FileRejected as exc:
            print(t("prices.cli.rejected", file=exc.filename, count=len(exc.problems)), file=sys.stderr)
            for message in exc.messages():
                print(f"  {message}", file=sys.stderr)
            return 1
    print(t("catalogues.cli.loaded", kind=t(f"catalogues.kind.{result.kind}"), entries=result.entries,
            date=f"{result.valid_from:%d/%m/%Y}"))
    if result.closed_version_id is not None:
        print(t("catalogues.cli.closed", version=result.closed_version_id))
    return 0


def cmd_add_department(args: argparse.Namespace, settings: Settings) -> int:
    from emr import EmrError
    from emr.patients.encounters import ensure_department

    with _session(settings) as session:
        try:
            ensure_department(session, args.code, args.name)
        except EmrError as exc:
            print(f"filmless emr: {exc.user_message()}", file=sys.stderr)
            return 1
        session.commit()
    print(f"department {args.code} {args.name}")
    return 0


def cmd_audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    from emr import verify_audit_chain
    from emr.access.audit import anchor_trust
    from emr.i18n import t

    if args.anchors is not None and not args.anchors.is_file():
        print(t("audit.anchor.file_missing", file=args.anchors), file=sys.stderr)
        return 2
    with _session(settings) as session:
        result = verify_audit_chain(session, trust=anchor_trust(settings.emr), anchors_path=args.anchors)
    anchors = f"{result.anchors} anchor(s)" + (f", newest {result.newest_anchor}" if result.newest_anchor else "")
    if result.ok:
        print(f"audit log intact: {result.rows} rows, head {result.head_hash}; {anchors}")
        return 0
    print(f"audit log TAMPERED: {len(result.problems)} problem(s) in {result.rows} rows")
    for problem in result.problems[:200]:
        print(f"  {problem}")
    return 1


def cmd_audit_anchor(args: argparse.Namespace, settings: Settings) -> int:
    from emr.access.audit import AnchorError, anchors_file, create_anchor
    from emr.i18n import t

    with _session(settings) as session:
        try:
            anchor = create_anchor(session, _cli_actor(), settings.emr.tsa_url, anchors_file(settings.emr))
        except AnchorError as exc:
            print(t(exc.key, **exc.params), file=sys.stderr)
            return 1
    if anchor is None:
        print(t("audit.anchor.empty"))
        return 0
    from emr.access.audit_query import local_time

    print(t("audit.anchor.created_local", id=anchor.id, row=anchor.last_id, time=local_time(anchor.created_at),
            url=anchor.tsa_url))  # fmt: skip
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from emr.demo.seed import seed
    from storage import open_store

    if args.disable:
        from emr.demo.guard import disable_demo
        from emr.i18n import t

        done = disable_demo(settings.emr, _cli_actor())
        print("\n".join([t("demo.guard.disabled", dir=settings.data_dir), *(f"  {line}" for line in done)]))
        return 0

    store = None if args.no_study else open_store(settings.storage)
    accounts = seed(settings.emr, store)
    print("Demo accounts (for trying filmless only; change or remove them before real use):")
    for username, password, role in accounts:
        print(f"  {username:<12} {password:<16} {role}")
    from emr.demo.signing import demo_token_lines

    print("\n".join(demo_token_lines(settings.emr)))
    return 0
