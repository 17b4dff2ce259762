"""Settings for the EMR web service, built by ``filmless.settings``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["EmrSettings"]


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
    # Durable outbox (emr.outbox, issue 15): attempts before a message is dead, the first retry
    # delay (doubling) and its cap, how often the worker looks for due messages, and how long a
    # worker may hold a message it is sending before another process may take it over.
    outbox_max_attempts: int = 8
    outbox_retry_seconds: int = 30
    outbox_retry_max_seconds: int = 3600
    outbox_poll_seconds: float = 5.0
    outbox_lease_seconds: int = 300
