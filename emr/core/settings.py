"""Settings for the EMR web service, built by ``filmless.settings``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["EmrSettings", "Hl7Settings"]


@dataclass(frozen=True)
class Hl7Settings:
    """The HL7 v2 interface with the hospital information system (emr.hl7, issue 15 §5)."""

    # MLLP listener: off while port is 0; loopback unless told otherwise.
    host: str = "127.0.0.1"
    port: int = 0
    # Who may send: FACILITY@IP/CIDR entries (MSH-4 namespace ID, * = any facility).
    allowed: tuple[str, ...] = ("*@127.0.0.0/8", "*@::1")
    max_bytes: int = 1024 * 1024  # one message, framing excluded
    read_timeout: float = 60.0  # seconds a connection may take to deliver one whole message
    connections_per_ip: int = 4
    max_connections: int = 64
    # Codec for messages whose MSH-18 is empty (HL7 says ASCII; Vietnamese HIS send UTF-8 or cp1258).
    default_charset: str = "utf-8"
    # Where ORU^R01 go when a report is signed: host:port of the HIS's MLLP receiver ("" = not sent).
    receiver: str = ""
    send_timeout: float = 30.0
    application: str = "FILMLESS"  # MSH-3 of what filmless sends; MSH-4 is the facility code
    # Days the exact bytes of a message (and its ACK) are kept; the log row stays (emr.hl7.messages.purge_raw).
    keep_raw_days: int = 90


@dataclass(frozen=True)
class EmrSettings:
    data_dir: Path = Path("var")
    database_url: str = "sqlite:///var/emr.sqlite3"
    host: str = "127.0.0.1"
    port: int = 8080
    # Where the generated Flask secret key is kept (0600).
    secret_key_file: Path = Path("var/secret_key")
    public_url: str = "http://127.0.0.1:8080"
    hospital_name: str = "Bệnh viện filmless"
    facility_code: str = "00000"
    # IANA time zone of the facility: what people and modalities see and type (emr.core.clock).
    timezone: str = "Asia/Ho_Chi_Minh"
    # AE titles of the modalities the DICOM gateway admits by name (FILMLESS_GATEWAY_ALLOWED with no "*"
    # entry): an order's station must be one of them or left empty. Empty: any AE title may connect, so
    # any valid AE title is accepted (emr.imaging.orders.create_order).
    modality_stations: tuple[str, ...] = ()
    # Login throttling (emr.access.login_guard): failures from one source on one account before
    # that source backs off (2 s, doubling), the longest back-off, and password attempts per
    # minute per source IP (checked before any hashing).
    lockout_failures: int = 5
    lockout_minutes: int = 15
    login_rate_per_minute: int = 30
    # Serving (emr.http_server): open connections per client IP; the reverse proxy's address
    # whose X-Forwarded-For / -Proto are believed ("" = none, "*" = any peer: only when the
    # EMR port is reachable from the proxy alone, as in docker-compose.yml).
    connections_per_ip: int = 32
    trusted_proxy: str = ""
    # Break the glass (issue 10): how long an emergency access to a patient outside one's care lasts.
    break_glass_hours: int = 4
    # Signatures (issue 5): RFC 3161 TSA, PKCS#11 module of the tokens, the
    # SoftHSM2 configuration of the demo token, trusted CA certificates
    # (None: <data_dir>/pki/trust-anchors). CRLs are read from
    # <data_dir>/pki/crls/*.crl and the development CA's <data_dir>/pki/dev/ca.crl.
    tsa_url: str | None = None
    pkcs11_library: str = "/usr/lib/softhsm/libsofthsm2.so"
    softhsm2_conf: Path | None = None
    trust_anchors_dir: Path | None = None
    # Identity by CCCD (issue 15 §3): the province's population-database gateway (None: checks
    # off), a file holding its bearer credential (0600), the per-call timeout in seconds (short:
    # registration and export never wait long), and how old a match may be before an export asks again.
    identity_url: str | None = None
    identity_credential_file: Path | None = None
    identity_timeout: float = 3.0
    identity_recheck_days: int = 30
    # Durable outbox (emr.outbox, issue 15): attempts before a message is dead, the first retry
    # delay (doubling) and its cap, how often the worker looks for due messages, and how long a
    # worker may hold a message it is sending before another process may take it over.
    outbox_max_attempts: int = 8
    outbox_retry_seconds: int = 30
    outbox_retry_max_seconds: int = 3600
    outbox_poll_seconds: float = 5.0
    outbox_lease_seconds: int = 300
    # Days the payload of a sent message is kept (for the operator page) before it is emptied.
    outbox_keep_sent_days: int = 30
    # Push to the electronic health record (emr.ehr, issue 15): the endpoint a FHIR document
    # Bundle is POSTed to when a visit closes or a report is signed (None: off), a file holding
    # its bearer token, a client certificate and key for mutual TLS, the CA bundle its server
    # certificate is checked against (None: the system's), and the request timeout.
    ehr_url: str | None = None
    ehr_token_file: Path | None = None
    ehr_client_cert: Path | None = None
    ehr_client_key: Path | None = None
    ehr_ca: Path | None = None
    ehr_timeout: int = 30
    hl7: Hl7Settings = field(default_factory=Hl7Settings)
    # Prometheus /metrics (emr.ops.metrics): scrapers send the bearer token kept (0600) in this
    # file, generated on first start (None: <data_dir>/metrics-token).
    metrics_token_file: Path | None = None
