"""Who may open which study in the viewer, and the audit row for each opening.

A logged-in user may open a study when the role may view images and the
study is linked to a patient in the EMR; a share token opens exactly the
study of its link while the link is live.
"""

from __future__ import annotations

from typing import Any

from flask import g, request

from emr import db
from emr.access.auth import current_actor, deny
from emr.access.permissions import allowed
from emr.core.exceptions import EmrError
from emr.reading import service as reading
from emr.sharing import service as sharing
from emr.sharing.tokens import link_id_from_token
from viewer import AccessDenied

__all__ = ["audit_study", "authorize_study", "principal"]


def _share_link(token: str, study_uid: str) -> Any:
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
        return f"share:{link_id_from_token(token)}"
    user = g.get("user")
    return f"user:{user.id}" if user is not None else f"addr:{request.remote_addr}"
