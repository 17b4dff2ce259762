"""filmless DICOM gateway: modalities → durable spool → Orthanc.

Public API: :class:`Gateway` (``start``/``stop``/``serve_forever``/``stats``),
its :class:`GatewaySettings`, :class:`GatewayStats`, the provider types
(:data:`WorklistProvider`, :data:`IdentityProvider`, :data:`MppsProvider`,
:data:`AuditProvider`), :func:`fold` (name matching), :func:`spool_status`
for health checks from another process, :class:`ReturnAddress` (storage
commitment return addresses), and the exception tree.
"""

from .commitment import ReturnAddress
from .exceptions import GatewayError, InvalidInstance, MppsError, NotUnderstood, OutOfResources, SopClassMismatch
from .mpps import MppsProvider
from .names import fold
from .normalise import IDENTITY_KEYS, IdentityProvider, normalise
from .query import AuditProvider
from .server import TRANSFER_SYNTAXES, Gateway, GatewayStats
from .settings import GatewaySettings
from .spool import SpoolStatus, spool_status
from .worklist import WorklistProvider

__all__ = [
    "AuditProvider",
    "IDENTITY_KEYS",
    "TRANSFER_SYNTAXES",
    "Gateway",
    "GatewayError",
    "GatewaySettings",
    "GatewayStats",
    "IdentityProvider",
    "InvalidInstance",
    "MppsError",
    "MppsProvider",
    "NotUnderstood",
    "OutOfResources",
    "ReturnAddress",
    "SopClassMismatch",
    "SpoolStatus",
    "WorklistProvider",
    "fold",
    "normalise",
    "spool_status",
]
