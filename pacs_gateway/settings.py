"""Settings for the DICOM gateway, built by ``filmless.settings``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["GatewaySettings"]


@dataclass(frozen=True)
class GatewaySettings:
    """How the gateway listens, where it spools, and whom it accepts.

    ``allowed_peers`` entries are ``AET`` or ``AET@address`` where address
    is an IP or CIDR network and ``*`` matches any AE title. The default only
    accepts peers on this machine; a hospital adds its modalities, e.g.
    ``CT01@10.1.2.3,MR_SIEMENS@10.1.2.0/24``.
    """

    ae_title: str = "FILMLESS"
    host: str = "127.0.0.1"
    port: int = 11112
    spool_dir: Path = Path("var/spool")
    allowed_peers: tuple[str, ...] = ("*@127.0.0.0/8", "*@::1")
    forwarders: int = 4
    # Uploads allowed at once while modalities are sending (receiving first:
    # the acknowledge rate is what a modality waits on; on a machine the
    # gateway shares with Orthanc, forwarding afterwards costs no more CPU).
    forwarders_while_receiving: int = 0
    # Starvation guard: an acknowledged instance waits at most this many
    # seconds for the sending associations to finish, then it is forwarded
    # anyway (a modality that never stops sending still reaches Orthanc).
    forward_hold_limit: float = 5.0
    # An association that has sent nothing for this many seconds no longer
    # counts as sending: one kept open after a series (for storage
    # commitment, or the next patient) does not hold its images back.
    forward_idle_after: float = 0.5
    # Refuse new instances (out of resources) when the spool's file system
    # has less than this many bytes free after the instance is written.
    min_free_bytes: int = 512 * 1024 * 1024
    max_associations: int = 32
    # Connection guard (pacs_gateway.admission): a connection must deliver
    # its A-ASSOCIATE-RQ within ``request_timeout`` seconds; one address may
    # hold at most ``max_connections_per_ip`` connections at once, and at most
    # ``max_pending_connections`` may wait for their request altogether.
    request_timeout: float = 5.0
    max_connections_per_ip: int = 16
    max_pending_connections: int = 256
    # Largest P-DATA-TF PDU a peer may send us (announced in the association
    # acceptance); longer PDUs abort the association (pacs_gateway.pdu_limits).
    max_pdu_size: int = 4 * 1024 * 1024
    # Take C-STOREs in the socket thread without pynetdicom's per-PDU machinery
    # (pacs_gateway.fast_store); off: every message goes through pynetdicom.
    fast_store: bool = True
    retry_initial: float = 0.5
    retry_max: float = 30.0
    network_timeout: float = 60.0
    # How long an instance may wait for a failing EMR identity lookup before
    # it is forwarded with the identity the modality sent (and a warning).
    identity_timeout: float = 120.0
    # Storage SOP classes accepted besides the standard and the well-known
    # private ones (pacs_gateway.private_classes), e.g. a vendor's raw data.
    extra_sop_classes: tuple[str, ...] = ()
    # Where modalities listen for storage commitment reports when their
    # requesting association has closed: ``AET@host:port`` entries.
    commitment_peers: tuple[str, ...] = ()
    # Seconds an instance in a commitment request may take to reach Orthanc
    # before it is reported as failed (the modality then keeps its copy).
    commitment_wait: float = 3600.0
    # Query/Retrieve C-MOVE destinations (workstations, other PACS):
    # ``AET@host:port`` entries; a move to any other AE title is refused.
    destinations: tuple[str, ...] = ()
    # C-MOVE sub-operations sent by Orthanc's own C-STORE SCU (pacs_gateway.storage_push),
    # what it cannot send going out from the gateway; off: every instance from the gateway.
    move_by_storage: bool = True
    # C-MOVEs whose instances are all at most this many MiB are sent by the
    # gateway from memory, a few instances read ahead (pacs_gateway.direct_move);
    # larger ones as move_by_storage says. 0: never.
    move_direct_max_mb: int = 16
    # Instance Availability Notification subscribers (RIS, workstations):
    # ``AET@host:port`` entries told when a study is complete in Orthanc.
    ian_subscribers: tuple[str, ...] = ()
    # Prometheus /metrics listener (pacs_gateway.metrics): port 0 = off. Scrapers
    # must send the bearer token kept (0600) in ``metrics_token_file``.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    metrics_token_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # CA bundle used to verify modality client certificates; when set with
    # TLS, a client without a valid certificate is refused.
    tls_ca: Path | None = None
