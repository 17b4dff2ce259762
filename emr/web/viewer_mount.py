"""Wiring the viewer (issue 6) into the EMR: the built viewer, the DICOMweb proxy and its access rules.

The viewer package knows nothing about users or share links; the EMR hands
the proxy three callables from :mod:`emr.access.studies`.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask_wtf.csrf import CSRFProtect

from emr import db
from emr.access.studies import audit_study, authorize_study, principal
from emr.core.settings import EmrSettings
from emr.reading import service as reading
from viewer import dicomweb_blueprint, viewer_blueprint

__all__ = ["register_reading"]

ARRIVING_SECONDS = 90.0  # Orthanc's StableAge (60 s) plus the linker's polling


def register_reading(app: Flask, csrf: CSRFProtect, settings: EmrSettings, store: Any = None) -> None:
    """Mount /viewer, /reading, /s and (with a store) the /dicomweb proxy."""
    from emr.web import reading as reading_views
    from emr.web import share as share_views

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
