"""filmless DICOM gateway: modalities → durable spool → Orthanc.

Public API: :class:`Gateway` (``start``/``stop``/``serve_forever``/``stats``),
its :class:`GatewaySettings`, :class:`GatewayStats`, the provider types
(:data:`WorklistProvider`, :data:`IdentityProvider`, :data:`MppsProvider`,
:data:`AuditProvider`), :func:`fold` (name matching), :func:`spool_status`
for health checks from another process, :class:`ReturnAddress` (storage
commitment return addresses), the exception tree, and :func:`send_instances`
(C-STORE to another facility, issue 15) with :data:`ExtraPeers` (sites admitted from the EMR).
"""

from .commitment import ReturnAddress
from .exceptions import GatewayError, InvalidInstance, MppsError, NotUnderstood, OutOfResources, SopClassMismatch
from .mpps import MppsProvider
from .names import fold
from .normalise import IDENTITY_KEYS, IdentityProvider, normalise
from .peers import ExtraPeers
from .query import AuditProvider
from .send import SendFailed, SendResult, send_instances
from .server import TRANSFER_SYNTAXES, Gateway, GatewayStats
from .settings import GatewaySettings
from .spool import SpoolStatus, spool_status
from .worklist import WorklistProvider

__all__ = [
    "AuditProvider",
    "IDENTITY_KEYS",
    "TRANSFER_SYNTAXES",
    "Gateway",
    "ExtraPeers",
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
    "SendFailed",
    "SendResult",
    "SopClassMismatch",
    "SpoolStatus",
    "WorklistProvider",
    "fold",
    "normalise",
    "send_instances",
    "spool_status",
]
