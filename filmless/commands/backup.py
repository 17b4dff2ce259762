"""``filmless backup DEST`` and ``filmless restore SRC`` (see :mod:`filmless.backup`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..settings import Settings


def register(sub: Any) -> None:
    p = sub.add_parser("backup", help="write a consistent backup of everything (also while filmless runs)")
    p.add_argument("dest", type=Path, help="backup folder on another disk; later backups into it are incremental")
    p.set_defaults(func=cmd_backup)
    p = sub.add_parser("restore", help="bring a backup back into an empty data directory")
    p.add_argument("src", type=Path, help="a backup folder (its newest snapshot) or one snapshot folder")
    p.add_argument("--check", action="store_true", help="only verify the checksums, restore nothing")
    p.set_defaults(func=cmd_restore)


def _step(name: str) -> None:
    from emr.i18n import t

    print(t(f"backup.step.{name}"), flush=True)


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    from emr.i18n import t

    from ..backup import BackupError, backup

    try:
        result = backup(settings, args.dest, progress=_step)
    except (BackupError, OSError) as exc:
        print(t("backup.failed", reason=exc), file=sys.stderr)
        return 1
    print(t("backup.done", snapshot=result.snapshot, instances=result.instances, new=result.new_instances,
            mb=round(result.new_bytes / 1e6, 1), files=result.files))
    return 0


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    from emr.i18n import t

    from ..backup import BackupError, latest_snapshot, restore, verify

    try:
        if args.check:
            snapshot = args.src if (args.src / "manifest.json").exists() else latest_snapshot(args.src)
            manifest = verify(snapshot)
            print(t("backup.verified", snapshot=snapshot, instances=len(manifest["instances"]),
                    files=len(manifest["files"])))
            return 0
        result = restore(settings, args.src, progress=_step)
    except (BackupError, OSError) as exc:
        print(t("backup.restore_failed", reason=exc), file=sys.stderr)
        return 1
    for instance_id, reason in result.failed:
        print(t("backup.instance_failed", id=instance_id, reason=reason), file=sys.stderr)
    print(t("backup.restored", snapshot=result.snapshot, instances=result.instances, files=result.files,
            data_dir=settings.data_dir))
    return 1 if result.failed else 0
