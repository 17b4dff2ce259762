"""filmless viewer: the browser DICOM viewer and its DICOMweb proxy.

Public API:

* :func:`dist_path` — folder of the built viewer (``viewer/dist``);
* :func:`viewer_blueprint` — serves it under ``/viewer/``
  (``/viewer/?study=<StudyInstanceUID>[&token=<share token>]``);
* :func:`dicomweb_blueprint` — ``/dicomweb/...`` → Orthanc's DICOMweb with
  access checks and audit supplied by the caller as callables;
* :class:`AccessDenied` — what an access check raises to say why (login,
  forbidden, expired); :data:`SHARE_TOKEN_HEADER` — how the viewer sends a
  share token.

This package never imports ``emr`` or ``filmless``.
"""

from .assets import content_security_policy, dist_path, viewer_blueprint
from .exceptions import AccessDenied, ViewerError, ViewerNotBuilt
from .proxy import SHARE_TOKEN_HEADER, dicomweb_blueprint

__all__ = [
    "SHARE_TOKEN_HEADER",
    "AccessDenied",
    "ViewerError",
    "ViewerNotBuilt",
    "content_security_policy",
    "dicomweb_blueprint",
    "dist_path",
    "viewer_blueprint",
]
