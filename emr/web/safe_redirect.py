"""Where a redirect after login (or signing) may go: a path on this site, judged as a browser reads it.

Browsers drop tabs and line breaks inside URLs and treat ``\\`` like ``/``, so
``/\\t/evil.example`` and ``/\\evil.example`` become ``//evil.example`` — a
link to another site. The target is therefore refused when it holds any
control character, white space or backslash, and what is left must parse as
a path with neither scheme nor host.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

__all__ = ["local_path"]


def local_path(target: str | None) -> str | None:
    """``target`` when it is a same-origin relative path (``/patients?q=x``), else None."""
    if not target or len(target) > 2000:
        return None
    decoded = unquote(target)  # a second layer of escapes must not hide a scheme or a host either
    for text in (target, decoded):
        if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F or ch == "\\" for ch in text):
            return None
        if not text.startswith("/") or text.startswith("//"):
            return None
        parts = urlsplit(text)
        if parts.scheme or parts.netloc:
            return None
    return target
