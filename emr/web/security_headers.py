"""Response headers every EMR answer carries: CSP, no caching of patient data, HSTS over https.

Pages are server-rendered with no inline script or style (``emr.js`` and
``emr.css`` are files), so the policy allows only this origin. The viewer
sets its own, stricter-tuned policy (its inline bootstrap script by hash,
WASM codecs); ``setdefault`` keeps it. Everything except static files is
``no-store``: chart pages, documents, the share landing page with a
patient's name, JSON answers — none may stay in a shared computer's cache.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import request

__all__ = ["CONTENT_SECURITY_POLICY", "security_headers"]

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'"
)
_HSTS = "max-age=31536000; includeSubDomains"
_CACHEABLE = ("/static/", "/viewer/")  # files without patient data; the viewer sets its own cache headers


def security_headers(*, https: bool) -> Callable[[Any], Any]:
    """An ``after_request`` hook; ``https``: the public URL is https (HSTS is then sent)."""

    def apply(response: Any) -> Any:
        headers = response.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        headers.setdefault("Referrer-Policy", "same-origin")
        headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        if not request.path.startswith(_CACHEABLE):
            headers["Cache-Control"] = "no-store"
        if https:
            headers.setdefault("Strict-Transport-Security", _HSTS)
        return response

    return apply
