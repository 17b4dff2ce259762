"""One exception tree for the gateway; DICOM status codes are chosen at the edge.

:mod:`pacs_gateway.handlers` is the only place that turns these into C-STORE
statuses, so every refusal has exactly one mapping.
"""

from __future__ import annotations

__all__ = [
    "GatewayError", "InvalidInstance", "OutOfResources", "NotUnderstood", "SopClassMismatch",
    "MppsError", "NoSuchMpps", "DuplicateMpps", "MppsMissingAttribute", "MppsInvalidValue", "MppsFinal",
    "CommitmentInvalid",
]


class GatewayError(Exception):
    """Root of everything the gateway raises on purpose."""


class InvalidInstance(GatewayError):
    """The received bytes are not an instance we can store; ``reason`` says why.

    Never acknowledged; the bytes go to quarantine with the reason.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotUnderstood(InvalidInstance):
    """Not DICOM, truncated, or missing/invalid identifying UIDs."""


class SopClassMismatch(InvalidInstance):
    """The data set's SOP Class UID contradicts the one negotiated/commanded."""


class OutOfResources(GatewayError):
    """The spool cannot take the instance safely (disk full or nearly so)."""


class MppsError(GatewayError):
    """A Modality Performed Procedure Step request the gateway refuses; ``reason`` says why.

    Each subclass maps to one N-CREATE/N-SET status in :mod:`pacs_gateway.handlers`.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NoSuchMpps(MppsError):
    """N-SET for an MPPS instance this gateway never created (0x0112)."""


class DuplicateMpps(MppsError):
    """N-CREATE for an MPPS instance that already exists (0x0111)."""


class MppsMissingAttribute(MppsError):
    """A required MPPS attribute is absent or empty (0x0120)."""


class MppsInvalidValue(MppsError):
    """An MPPS attribute has a value the standard does not allow here (0x0106)."""


class MppsFinal(MppsError):
    """N-SET on a step already COMPLETED or DISCONTINUED (0x0110, PS3.4 F.7.2.2.2)."""


class CommitmentInvalid(GatewayError):
    """A storage commitment N-ACTION the gateway cannot take; ``reason`` says why.

    ``missing`` selects the N-ACTION status: missing attribute (0x0120)
    rather than invalid value (0x0106).
    """

    def __init__(self, reason: str, *, missing: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.missing = missing
