"""Every DIMSE status code the gateway answers with, in one table (PS3.7 Annex C, PS3.4).

Named after the standard's meaning so a handler reads ``Status.OUT_OF_RESOURCES``,
not ``0xA700``; Storage Commitment failure reasons (PS3.3 C.14.1.1) share the
values of the N-service statuses they mirror.
"""

from __future__ import annotations

from enum import IntEnum

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

__all__ = ["Status", "status_dataset"]


class Status(IntEnum):
    SUCCESS = 0x0000  # PS3.7 C.1.1
    # C-STORE (PS3.4 B.2.3)
    OUT_OF_RESOURCES = 0xA700  # Refused: Out of Resources (spool disk full or unwritable)
    SOP_CLASS_MISMATCH = 0xA900  # Error: Data Set does not match SOP Class
    CANNOT_UNDERSTAND = 0xC000  # Error: Cannot understand
    # C-FIND (PS3.4 C.4.1.1.4, K.4.1.1.4)
    UNABLE_TO_PROCESS = 0xC001  # Failure: Unable to process (worklist provider unavailable)
    PENDING = 0xFF00  # Pending: a match follows
    CANCEL = 0xFE00  # Cancel: matching terminated by C-CANCEL
    # N-CREATE / N-SET / N-ACTION (PS3.7 C.4, PS3.4 F.7.2, J.3)
    INVALID_ATTRIBUTE_VALUE = 0x0106
    PROCESSING_FAILURE = 0x0110  # also: step already COMPLETED/DISCONTINUED (F.7.2.2.2)
    DUPLICATE_SOP_INSTANCE = 0x0111
    NO_SUCH_OBJECT_INSTANCE = 0x0112
    NO_SUCH_SOP_INSTANCE = 0x0117  # invalid object instance (not the well-known commitment instance)
    CLASS_INSTANCE_CONFLICT = 0x0119
    MISSING_ATTRIBUTE = 0x0120
    NO_SUCH_ACTION_TYPE = 0x0123
    RESOURCE_LIMITATION = 0x0213  # the state could not be kept on disk


_STATUS_TAG = Tag(0x0000, 0x0900)


def status_dataset(code: int) -> Dataset:
    """A Dataset holding only (0000,0900) Status, as a raw element: what pynetdicom's
    ``send_c_store`` returns, without pydicom validating a value it reads once."""
    ds = Dataset()
    ds._dict[_STATUS_TAG] = RawDataElement(_STATUS_TAG, "US", 2, code.to_bytes(2, "little"), 0, True, True)
    # pynetdicom's C-MOVE/C-GET loop reads ``.Status`` once per instance; as an instance
    # attribute it skips pydicom's keyword look-up and raw-value conversion (the element
    # above says the same for anything that reads the data set).
    object.__setattr__(ds, "Status", code)
    return ds
