"""Vendor-private storage SOP classes the gateway accepts besides the standard ones.

Modalities send private objects alongside their images (raw data, protocols,
reconstruction volumes). A storage SCP that refuses them at association
makes some modalities fail the whole transfer job, images included, and the
objects are needed to reprocess a study on the vendor's workstation. Orthanc
stores them like any instance. A hospital adds its own with
``FILMLESS_GATEWAY_EXTRA_SOP_CLASSES``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import register_uid

__all__ = ["PRIVATE_STORAGE_CLASSES", "register_storage_classes"]

PRIVATE_STORAGE_CLASSES: dict[str, str] = {
    "1.3.12.2.1107.5.9.1": "Siemens CSA Non-Image Storage",
    "1.3.12.2.1107.5.99.3.10": "Siemens CT MR Volume Storage",
    "1.3.12.2.1107.5.99.3.11": "Siemens AX Frame Sets Storage",
    "1.2.840.113619.4.2": "GE Private CT Image Info Object",
    "1.2.840.113619.4.3": "GE Private MR Image Info Object",
    "1.2.840.113619.4.26": "GE Private 3D Model Storage",
    "1.2.840.113619.4.27": "GE Private PET Raw Data Storage",
    "1.2.840.113619.4.30": "GE Private eNTEGRA Protocol or NM Genie Storage",
    "1.3.46.670589.11.0.0.12.1": "Philips Private MR Spectrum Storage",
    "1.3.46.670589.11.0.0.12.2": "Philips Private MR Series Data Storage",
    "1.3.46.670589.11.0.0.12.4": "Philips Private MR Examcard Storage",
    "1.2.392.200036.9116.7.8.1.1.1": "Toshiba Private Data Storage",
    "1.2.392.200036.9125.1.1.2": "Fuji Private CR Image Storage",
}

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def register_storage_classes(uids: Iterable[str]) -> list[str]:
    """Make pynetdicom treat each UID as a storage SOP class; returns them.

    Registration is process-wide and idempotent.
    """
    done = []
    for uid in uids:
        if not _UID.fullmatch(uid) or len(uid) > 64:
            raise ValueError(f"{uid!r} is not a UID")
        keyword = "FilmlessStorage_" + uid.replace(".", "_")
        try:
            register_uid(uid, keyword, StorageServiceClass)
        except ValueError:
            pass  # already registered (a second gateway in this process)
        done.append(uid)
    return done
