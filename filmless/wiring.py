"""How the packages are put together: the viewer mounted on the EMR app with the EMR's access rules.

The EMR never imports the viewer and the viewer never imports the EMR; this
module is the only place that knows both. The EMR hands its per-study access
callables (``emr.access.studies.StudyAccess``) to each extension it is given;
here they are adapted to the viewer's contract (raising the viewer's
:class:`viewer.AccessDenied` instead of the EMR's refusal).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask

__all__ = ["ops_extension", "viewer_extension"]

R = TypeVar("R")


def _translated(check: Callable[..., R]) -> Callable[..., R]:
    from emr import StudyAccessDenied
    from viewer import AccessDenied

    def call(*args: Any) -> R:
        try:
            return check(*args)
        except StudyAccessDenied as exc:
            raise AccessDenied(exc.reason) from exc

    return call


def viewer_extension(store: Any) -> Callable[[Flask, Any], None]:
    """An ``emr.create_app`` extension mounting /viewer and, with a store, the /dicomweb proxy."""

    def mount(app: Flask, access: Any) -> None:
        from viewer import dicomweb_blueprint, viewer_blueprint

        app.register_blueprint(viewer_blueprint())
        if store is not None:
            app.register_blueprint(
                dicomweb_blueprint(
                    store,
                    _translated(access.authorize),
                    _translated(access.audit),
                    principal=access.principal,
                    arriving=access.arriving,
                    reports_allowed=access.reports_allowed,
                    audit_report=_translated(access.audit_report),
                )
            )

    return mount


def ops_extension(settings: Any) -> Callable[[Flask, Any], None]:
    """An ``emr.create_app`` extension giving the operations page what the EMR cannot see itself:
    the free space of the archive's disk and the gateway's spool queues (read from its folders,
    so it works from the EMR's process while the gateway runs in its own)."""

    def free_bytes() -> int | None:
        import shutil

        folder = settings.storage.data_dir
        return shutil.disk_usage(folder).free if settings.storage.managed and folder.is_dir() else None

    def gateway_status() -> dict[str, Any]:
        from dataclasses import asdict

        from pacs_gateway import spool_status

        return asdict(spool_status(settings.gateway))

    def mount(app: Flask, access: Any) -> None:
        app.extensions["emr.ops_sources"] = {"free_bytes": free_bytes, "gateway_status": gateway_status}

    return mount

