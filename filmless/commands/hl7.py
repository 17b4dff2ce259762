"""``filmless hl7 ...``: the HL7 v2 interface with the hospital information system (issue 15 §5)."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from ..settings import Settings


def register(sub: Any) -> None:
    p = sub.add_parser("hl7", help="HL7 v2 interface with the HIS: MLLP listener, message log, replay")
    hs = p.add_subparsers(dest="hl7_command", required=True)

    s = hs.add_parser("serve", help="run the MLLP listener in the foreground (FILMLESS_HL7_PORT)")
    s.set_defaults(func=cmd_serve)

    s = hs.add_parser("list", help="the newest messages of the log")
    s.add_argument("--status", default="", help="processed, error, rejected, duplicate, queued, sent, failed, refused")
    s.add_argument("--direction", default="", choices=["", "in", "out"])
    s.add_argument("--limit", type=int, default=20)
    s.set_defaults(func=cmd_list)

    s = hs.add_parser("replay", help="apply a received message again, or send a sent one again (audited)")
    s.add_argument("message_id", type=int)
    s.set_defaults(func=cmd_replay)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from emr import serve_hl7

    if not settings.emr.hl7.port:
        print("filmless hl7 serve: set FILMLESS_HL7_PORT (2575 is usual)", file=sys.stderr)
        return 2
    print(f"HL7 MLLP listener on {settings.emr.hl7.host}:{settings.emr.hl7.port} "
          f"allowed: {', '.join(settings.emr.hl7.allowed)}", flush=True)
    serve_hl7(settings.emr)
    return 0


def _session(settings: Settings) -> Any:
    from emr import open_session, upgrade_database

    upgrade_database(settings.emr)
    return open_session(settings.emr)


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from emr import list_hl7_messages
    from emr.core.clock import to_local
    from emr.hl7.messages import MessageFilter

    flt = MessageFilter.parse({"status": args.status, "direction": args.direction})
    with _session(settings) as session:
        for m in list_hl7_messages(session, flt, limit=max(1, min(args.limit, 1000))):
            print(f"{m.id:>7}  {to_local(m.at):%d/%m/%Y %H:%M:%S}  {m.direction:<3} {m.message_type or '-':<10} "
                  f"{m.status:<10} {m.ack_code or '--'}  {m.sending_facility or ''}  {m.control_id or ''}"
                  + (f"  {m.error[:80]}" if m.error else ""))
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from emr import Actor, EmrError, replay_hl7_message

    actor = Actor(None, f"cli:{getpass.getuser()}", "admin", None)
    with _session(settings) as session:
        try:
            result = replay_hl7_message(session, actor, args.message_id, settings.emr)
        except EmrError as exc:
            print(f"filmless hl7 replay: {exc.user_message()}", file=sys.stderr)
            return 1
    from emr.hl7.inbound import Outcome

    if isinstance(result, Outcome):
        print(f"message {args.message_id} applied again as #{result.message_id}: {result.ack_code}")
        return 0 if result.ack_code == "AA" else 1
    print(f"message {args.message_id} queued again as #{result.id}")
    return 0
