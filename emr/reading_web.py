"""Wiring the viewer (issue 6) into the EMR: the built viewer, the DICOMweb proxy and its access rules.

The viewer package knows nothing about users or share links; the EMR hands
the proxy three callables. A logged-in user may open a study when the role
may view images and the study is linked to a patient in the EMR; a share
token opens exactly the study of its link while the link is live.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, g, request
from flask_wtf.csrf import CSRFProtect

from viewer import AccessDenied, dicomweb_blueprint, viewer_blueprint

from . import db
from .auth import current_actor, deny
from .exceptions import EmrError
from .permissions import allowed
from .services import reading, sharing
from .settings import EmrSettings

__all__ = ["register_reading"]

ARRIVING_SECONDS = 90.0  # Orthanc's StableAge (60 s) plus the linker's polling


def _share_link(token: str, study_uid: str) -> Any:
    from .views.share import link_id_from_token

    link_id = link_id_from_token(token)
    if link_id is None:
        raise AccessDenied("forbidden")
    try:
        link = sharing.live_link(db.session(), link_id)
    except sharing.ShareDenied as exc:
        raise AccessDenied("expired" if exc.reason == "expired" else "forbidden") from exc
    except EmrError as exc:
        raise AccessDenied("forbidden") from exc
    if link.study_instance_uid != study_uid:
        raise AccessDenied("forbidden")
    return link


def authorize_study(study_uid: str, token: str | None) -> bool:
    if token:
        _share_link(token, study_uid)
        return True
    user = g.get("user")
    if user is None:
        raise AccessDenied("login")
    if not allowed(user.role, "image.view"):
        deny("image.view")
        raise AccessDenied("forbidden")
    if reading.find_linked_study(db.session(), study_uid) is None:
        raise AccessDenied("forbidden")
    return True


def audit_study(study_uid: str, token: str | None) -> None:
    s = db.session()
    study = reading.find_linked_study(s, study_uid)
    if study is None:  # authorised a moment ago: unlinked meanwhile
        raise AccessDenied("forbidden")
    if token:
        link = _share_link(token, study_uid)
        reading.record_study_view(
            s, sharing.share_actor(link, request.remote_addr), study, via="share", share_link_id=link.id
        )
    else:
        reading.record_study_view(s, current_actor(), study, via="viewer")


def principal(token: str | None) -> str:
    if token:
        from .views.share import link_id_from_token

        return f"share:{link_id_from_token(token)}"
    user = g.get("user")
    return f"user:{user.id}" if user is not None else f"addr:{request.remote_addr}"


def register_reading(app: Flask, csrf: CSRFProtect, settings: EmrSettings, store: Any = None) -> None:
    """Mount /viewer, /reading, /s and (with a store) the /dicomweb proxy."""
    from .views import reading as reading_views
    from .views import share as share_views

    app.register_blueprint(viewer_blueprint())
    app.register_blueprint(reading_views.bp)
    app.register_blueprint(share_views.bp)
    csrf.exempt(reading_views.put_measurements)
    if store is not None:
        app.register_blueprint(
            dicomweb_blueprint(
                store,
                authorize_study,
                audit_study,
                principal=principal,
                arriving=lambda uid: reading.study_arriving(
                    db.session(), uid, ARRIVING_SECONDS, is_stable=store.study_is_stable
                ),
            )
        )
