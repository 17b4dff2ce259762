"""The short-lived signed token a share-link visitor's viewer carries: it names the link, nothing else.

The DICOMweb proxy re-checks the link itself (expiry, revocation) on every
request; the token only proves the PIN was entered in this browser.
"""

from __future__ import annotations

from flask import current_app
from itsdangerous import BadSignature, URLSafeTimedSerializer

from emr.models import ShareLink

__all__ = ["VIEWER_TOKEN_MAX_AGE", "link_id_from_token", "viewer_token"]

VIEWER_TOKEN_SALT = "filmless.share-viewer"
VIEWER_TOKEN_MAX_AGE = 8 * 3600


def viewer_token(link: ShareLink) -> str:
    return URLSafeTimedSerializer(current_app.secret_key, salt=VIEWER_TOKEN_SALT).dumps({"l": link.id})  # type: ignore[arg-type]


def link_id_from_token(token: str) -> int | None:
    """The link a viewer token names, or None when forged or older than its lifetime."""
    try:
        data = URLSafeTimedSerializer(current_app.secret_key, salt=VIEWER_TOKEN_SALT).loads(  # type: ignore[arg-type]
            token, max_age=VIEWER_TOKEN_MAX_AGE
        )
    except BadSignature:
        return None
    link_id = data.get("l") if isinstance(data, dict) else None
    return link_id if isinstance(link_id, int) else None
