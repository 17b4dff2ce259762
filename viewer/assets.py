"""Serving the built viewer (``viewer/dist``) from Flask under ``/viewer/``.

Why a blueprint here and not in the EMR: the cache and security headers
depend on how Vite lays out the build (hashed, immutable ``assets/``; an
``index.html`` and ``early.js`` that must be revalidated), which is the
viewer's business.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from flask import Blueprint, Response, abort, send_from_directory

from .exceptions import ViewerNotBuilt

__all__ = ["content_security_policy", "dist_path", "viewer_blueprint"]

_DIST = Path(__file__).resolve().parent / "dist"

_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


def content_security_policy(index_html: str) -> str:
    """The viewer page's CSP: its own inline script (by hash), no eval.

    WASM codecs need 'wasm-unsafe-eval'; thumbnails are blob: URLs; the
    decoder web worker is a same-origin module.
    """
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(code.encode("utf-8")).digest()).decode("ascii") + "'"
        for code in _INLINE_SCRIPT.findall(index_html)
    )
    return (
        f"default-src 'self'; script-src 'self' 'wasm-unsafe-eval' {hashes}; worker-src 'self' blob:; "
        "img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'self'"
    )


def dist_path(check: bool = False) -> Path:
    """Folder of the built viewer (``index.html`` and ``assets/``).

    With ``check=True`` raise :class:`ViewerNotBuilt` when it is not built.
    """
    if check and not (_DIST / "index.html").is_file():
        raise ViewerNotBuilt(
            f"{_DIST} has no index.html: run scripts/bootstrap.sh (npm ci && npm run build in viewer/)"
        )
    return _DIST


def viewer_blueprint(name: str = "viewer", url_prefix: str = "/viewer", dist: Path | None = None) -> Blueprint:
    """A blueprint serving the built viewer; ``/viewer/?study=<uid>`` opens a study.

    The built files reference ``/viewer/`` absolutely (Vite ``base``), so
    mount it at ``/viewer`` unless the build is changed too.
    """
    folder = dist or dist_path()
    bp = Blueprint(name, __name__, url_prefix=url_prefix)

    def _send(path: str, max_age: int) -> Response:
        if not (folder / "index.html").is_file():
            abort(503, description="the viewer is not built: run scripts/bootstrap.sh")
        response = send_from_directory(folder, path, max_age=max_age)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    csp: dict[float, str] = {}

    def _policy() -> str:
        index_html = folder / "index.html"
        mtime = index_html.stat().st_mtime
        if mtime not in csp:
            csp.clear()
            csp[mtime] = content_security_policy(index_html.read_text("utf-8"))
        return csp[mtime]

    @bp.get("/")
    def index() -> Response:
        response = _send("index.html", 0)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["Content-Security-Policy"] = _policy()
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @bp.get("/assets/<path:filename>")
    def assets(filename: str) -> Response:
        # Vite puts a content hash in every asset name: cache them for good.
        response = _send(f"assets/{filename}", 365 * 24 * 3600)
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return response

    @bp.get("/<path:filename>")
    def other(filename: str) -> Response:
        response = _send(filename, 0)
        response.headers["Cache-Control"] = "no-cache"
        return response

    return bp
