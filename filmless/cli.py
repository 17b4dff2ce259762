"""The ``filmless`` command.

Each area registers its sub-commands from its own module under
``filmless/commands/`` (``register(subparsers)``); a sub-command's handler is
``func(args, settings) -> int``. Settings are read once here, so a bad
``FILMLESS_*`` value stops every command with one clear line.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from collections.abc import Sequence
from datetime import datetime

from . import __version__
from .commands import backup, emr, exports, hl7, network, signing, stack
from .settings import Settings, SettingsError, load

# Modules that add sub-commands (each imports its package only when a command runs).
COMMAND_MODULES = (
    stack,  # up, storage, gateway, check, import
    emr,  # emr ..., demo, audit ...
    signing,  # pki ..., verify, retention ...
    exports,  # export ...
    backup,  # backup, restore
    hl7,  # hl7 serve, list, replay
    network,  # site add, site list
)


# pyHanko imports cryptography's DSA key type (deprecated in cryptography 51)
# only to recognise such keys; the warning is noise on every command's screen.
warnings.filterwarnings("ignore", message="DSA is deprecated", module="pyhanko")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="filmless",
        description="filmless: PACS and electronic medical records. Settings come from FILMLESS_* variables.",
    )
    parser.add_argument("--version", action="version", version=f"filmless {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def _facility_time(settings: Settings) -> None:
    """Everything the command prints, its log lines included, in the facility's time zone
    (FILMLESS_TIMEZONE), not the server's clock zone."""
    from emr.core.clock import facility_zone, use_timezone

    use_timezone(settings.emr.timezone)

    def local(seconds: float | None) -> time.struct_time:
        return datetime.fromtimestamp(seconds if seconds is not None else time.time(), facility_zone()).timetuple()

    logging.Formatter.converter = staticmethod(local)  # type: ignore[assignment]


def main(argv: Sequence[str] | None = None) -> int:
    # pyHanko imports cryptography's deprecated DSA names: not something a user can act on.
    warnings.filterwarnings("ignore", message="DSA is deprecated")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # pynetdicom logs every association at INFO and urllib3 every retry;
        # filmless writes its own one-line summaries instead.
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        logging.getLogger("urllib3").setLevel(logging.ERROR)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        logging.getLogger("fontTools").setLevel(logging.WARNING)  # a line per glyph table for every signed PDF
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        settings = load()
    except SettingsError as exc:
        print(f"filmless: configuration error: {exc}", file=sys.stderr)
        return 2
    _facility_time(settings)
    try:
        return int(args.func(args, settings) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
