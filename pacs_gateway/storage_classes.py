"""Standard storage SOP classes accepted besides pynetdicom's list: retired and newer ones.

Why: pynetdicom's ``AllStoragePresentationContexts`` omits the retired
storage classes that old machines still send (Ultrasound Image Storage
(Retired) ``1.2.840.10008.5.1.4.1.1.6``, Ultrasound Multi-frame (Retired)
``...1.1.3``, Nuclear Medicine (Retired) ``...1.1.5``, the trial SR and VL
classes, ...) and a few recent non-patient ones. Orthanc stores all of them,
so refusing them at association only makes the modality's job fail
(issue 12, §2). The list is taken from pydicom's UID dictionary rather than
typed here, so it follows the standard as pydicom is updated.
"""

from __future__ import annotations

from pydicom._uid_dict import UID_dictionary
from pynetdicom import AllStoragePresentationContexts
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

__all__ = ["extra_standard_storage_classes", "unrouted"]

# "Storage" in the name but not a storage SOP class of the network service.
_NOT_STORAGE = ("Commitment", "Media Storage Directory")


def extra_standard_storage_classes() -> list[str]:
    """Storage SOP class UIDs in the DICOM standard that ``AllStoragePresentationContexts`` lacks."""
    known = {str(cx.abstract_syntax) for cx in AllStoragePresentationContexts}
    found = []
    for uid, entry in UID_dictionary.items():
        name, kind = entry[0], entry[1]
        if kind != "SOP Class" or "Storage" not in name or any(word in name for word in _NOT_STORAGE):
            continue
        if uid not in known:
            found.append(uid)
    return sorted(found)


def unrouted(uids: list[str]) -> list[str]:
    """Those of ``uids`` pynetdicom would not hand to a storage service class (they need registering)."""
    return [uid for uid in uids if not issubclass(uid_to_service_class(uid), StorageServiceClass)]
