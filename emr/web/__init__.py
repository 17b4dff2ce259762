"""Server-rendered Vietnamese web UI, one blueprint per domain (registered by :mod:`emr.app`)."""

from __future__ import annotations

from flask import g

from emr.access.permissions import allowed

__all__ = ["can"]


def can(action: str) -> bool:
    """For templates: show a button only to roles that may use it (the route checks again)."""
    user = g.get("user")
    return user is not None and allowed(user.role, action)
