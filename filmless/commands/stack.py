"""Sub-commands that run and inspect the stack: up, storage, gateway, check, import."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..settings import Settings

log = logging.getLogger("filmless.up")


def register(sub: Any) -> None:
    p = sub.add_parser("up", help="run everything (Orthanc, gateway, EMR) in the foreground; Ctrl-C stops all")
    p.add_argument("--demo", action="store_true", help="seed demo accounts and patients first (printed)")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("storage", help="run the managed Orthanc in the foreground")
    p.set_defaults(func=cmd_storage)

    p = sub.add_parser("gateway", help="run the DICOM gateway in the foreground")
    p.set_defaults(func=cmd_gateway)

    p = sub.add_parser("check", help="health of each part; exit code 1 if any is unhealthy")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("import", help="bulk import folders or files of DICOM into storage")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--retries", type=int, default=5, metavar="N",
                   help="retries per file while Orthanc does not answer, with back-off (default 5)")
    p.set_defaults(func=cmd_import)


def cmd_storage(args: argparse.Namespace, settings: Settings) -> int:
    from storage import LauncherError, OrthancProcess

    if not settings.storage.managed:
        print(f"FILMLESS_ORTHANC_URL is set ({settings.storage.url}): the external Orthanc is used, "
              "nothing to run here.", file=sys.stderr)
        return 2
    proc = OrthancProcess(settings.storage, settings.gateway.ae_title, settings.gateway.port)
    try:
        proc.start()
    except LauncherError as exc:
        print(f"filmless storage: {exc}", file=sys.stderr)
        return 1
    dicom = f"DICOM {settings.storage.dicom_port}" if settings.storage.dicom_server else "DICOM server off"
    print(f"Orthanc {settings.storage.url} ({dicom}), pid {proc.pid}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        if not proc.running():
            print(f"filmless storage: Orthanc exited; see {proc.log_path}", file=sys.stderr)
            return 1
    proc.stop()
    return 0


def _emr_providers(settings: Settings) -> tuple[Any, Any, Any]:
    """Worklist, identity and MPPS callables on the EMR database (the gateway gets them passed in)."""
    import emr

    return emr.worklist_provider(settings.emr), emr.identity_provider(settings.emr), emr.mpps_provider(settings.emr)


def _emr_audit(settings: Settings) -> Any:
    """The EMR's audit log for the gateway's query/retrieve, if the EMR is installed."""
    try:
        import emr
    except ImportError:
        return None
    return emr.dicom_audit_provider(settings.emr)


def _network_peers(settings: Settings) -> Any:
    """The other facilities registered in the EMR (issue 15), admitted besides FILMLESS_GATEWAY_ALLOWED."""
    import emr

    return emr.network_peer_provider(settings.emr)


def cmd_gateway(args: argparse.Namespace, settings: Settings) -> int:
    from pacs_gateway import Gateway
    from storage import open_store

    worklist, identity, mpps = _emr_providers(settings)
    gateway = Gateway(settings.gateway, open_store(settings.storage), worklist=worklist, identity=identity, mpps=mpps,
                      audit=_emr_audit(settings), extra_peers=_network_peers(settings))
    print(f"DICOM gateway {settings.gateway.ae_title} listening on {settings.gateway.host}:{settings.gateway.port}",
          flush=True)
    metrics = None
    g = settings.gateway
    if g.metrics_port and g.metrics_token_file is not None:
        from emr.app import load_or_create_secret
        from pacs_gateway.metrics import MetricsServer

        try:
            metrics = MetricsServer(gateway, g.metrics_host, g.metrics_port,
                                    load_or_create_secret(g.metrics_token_file))
        except OSError as exc:  # port taken: DICOM matters more than metrics, keep going
            log.error("gateway metrics not served on %s:%d: %s (set FILMLESS_GATEWAY_METRICS_PORT)",
                      g.metrics_host, g.metrics_port, exc)
        else:
            metrics.start()
    # Everything imported and built so far (pydicom's dictionaries, pynetdicom,
    # SQLAlchemy: a few hundred thousand objects) lives as long as the process.
    # Frozen, the collector stops walking it on each full collection, which took
    # about 5% of the gateway's CPU while receiving; a higher first threshold
    # makes the per-instance garbage cost fewer young collections.
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    try:
        gateway.serve_forever()
    finally:
        if metrics is not None:
            metrics.stop()
    return 0


def _banner(settings: Settings, accounts: list[tuple[str, str, str]]) -> str:
    from storage import load_or_create_credentials

    s, g, e = settings.storage, settings.gateway, settings.emr
    lines = [
        "",
        "filmless is running. Ctrl-C stops everything.",
        f"  EMR (web)        {e.public_url}   listening on {e.host}:{e.port}",
        f"  DICOM gateway    AE title {g.ae_title}, port {g.port} on {g.host}"
        f"   allowed: {', '.join(g.allowed_peers)}",
    ]
    if e.hl7.port:
        lines.append(f"  HL7 v2 (MLLP)    port {e.hl7.port} on {e.hl7.host}   allowed: {', '.join(e.hl7.allowed)}")
    if s.managed:
        creds = load_or_create_credentials(s.data_dir)
        lines += [
            f"  Orthanc          {s.url} (localhost only), "
            + (f"DICOM {s.dicom_port}" if s.dicom_server else "DICOM server off (REST only)"),
            f"  Orthanc login    user {creds.username}; the password is in {s.data_dir / 'credentials.json'} "
            "(mode 0600, never printed)",
        ]
    else:
        lines.append(f"  Orthanc          external: {s.url}")
    lines.append(f"  Data directory   {settings.data_dir}")
    if accounts:
        lines.append("  Demo accounts (change them before real use):")
        lines += [f"    {role:<14} {user:<14} {password}" for user, password, role in accounts]
        from emr.demo.signing import demo_token_lines

        lines += demo_token_lines(settings.emr)
    return "\n".join(lines) + "\n"


def _migrate_emr(settings: Settings) -> None:
    try:
        import emr
    except ImportError:  # a gateway-only installation
        return
    emr.upgrade_database(settings.emr)


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from storage import open_store

    from ..settings import save_running_settings
    from ..supervisor import Child, Supervisor

    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not args.demo and refuse_demo_leftovers(settings):
        return 2
    saved = save_running_settings(settings)
    log.info("settings of this installation saved to %s (other filmless commands read them)", saved)
    # The EMR's schema first: the gateway reads the network sites from it as soon as it starts,
    # and on a first start the EMR process would still be creating the tables.
    _migrate_emr(settings)
    children = []
    if settings.storage.managed:
        children.append(Child("storage", ["storage"]))
    children.append(Child("gateway", ["gateway"]))
    from .signing import demo_tsa

    tsa = demo_tsa(settings, args.demo)  # dev TSA child when the development PKI exists and no TSA is set
    if tsa is not None:
        children.append(tsa[0])
    if settings.emr.hl7.port:  # HL7 v2 with the HIS: its own process, a broken HIS cannot slow the EMR
        children.append(Child("hl7", ["hl7", "serve"]))
    serve = ["emr", "serve", "--demo"] if args.demo else ["emr", "serve"]
    children.append(Child("emr", serve, env=tsa[1] if tsa else None))
    supervisor = Supervisor(children)

    store = open_store(settings.storage)
    accounts: list[tuple[str, str, str]] = []

    def after_start() -> None:
        deadline = time.monotonic() + settings.storage.startup_timeout
        while time.monotonic() < deadline and not store.ping():
            time.sleep(0.2)
        if args.demo:
            from emr.demo.seed import seed

            accounts.extend(seed(settings.emr, store))  # the schema is there: _migrate_emr ran first
        # "filmless is running" means it: the EMR and the gateway accept connections.
        waiting = {"emr": (settings.emr.host, settings.emr.port),
                   "gateway": (settings.gateway.host, settings.gateway.port)}
        deadline = time.monotonic() + settings.storage.startup_timeout + 120
        while waiting and time.monotonic() < deadline and not supervisor.stopping:
            waiting = {name: at for name, at in waiting.items() if not _accepts(*at)}
            if waiting:
                time.sleep(0.2)
        for name, (host, port) in waiting.items():
            log.warning("%s does not accept connections on %s:%s yet", name, host, port)
        print(_banner(settings, accounts), flush=True)

    threading.Thread(target=after_start, name="banner", daemon=True).start()
    return supervisor.run()


def _accepts(host: str, port: int) -> bool:
    """A TCP connection to the part succeeds (a wildcard bind is tried on loopback)."""
    import socket

    target = "127.0.0.1" if host in ("", "0.0.0.0") else "::1" if host == "::" else host
    try:
        with socket.create_connection((target, port), timeout=1):
            return True
    except OSError:
        return False


def refuse_demo_leftovers(settings: Settings) -> bool:
    """True (after saying why and what to do) when the data directory still holds a live demo."""
    from emr.demo.guard import demo_leftovers
    from emr.i18n import t

    found = demo_leftovers(settings.emr)
    if not found:
        return False
    lines = [t("demo.guard.refused", dir=settings.data_dir)]
    if found.accounts:
        lines.append(t("demo.guard.accounts", accounts=", ".join(found.accounts)))
    if found.dev_anchors or found.dev_pki:
        lines.append(t("demo.guard.dev_pki"))
    lines.append(t("demo.guard.fix"))
    print("\n".join(lines), file=sys.stderr, flush=True)
    return True


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    from ..health import run_checks

    ok = True
    for name, healthy, detail in run_checks(settings):
        mark = "ok  " if healthy else "FAIL"
        print(f"[{mark}] {name:<10} {detail}")
        ok = ok and healthy
    return 0 if ok else 1


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from storage import open_store

    from ..bulk_import import import_paths

    missing = [p for p in args.paths if not p.exists()]
    if missing:
        print("filmless import: not found: " + ", ".join(map(str, missing)), file=sys.stderr)
        return 2
    summary = import_paths(args.paths, open_store(settings.storage), progress=not args.no_progress,
                           retries=max(0, args.retries))
    print(summary.render())
    return 0 if summary.ok else 1
